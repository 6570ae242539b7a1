"""Which cameras a configuration has: the file's [cameras.NAME] tables, then --camera NAME=SOURCE,
the --source shorthand, or the one camera `default`; each with its own recordings folder."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from camcast.cameraconfig import CameraConfig
from camcast.configfile import ConfigFile
from camcast.configvalues import CAMERA_NAME, CAMERA_NAME_RULE, ConfigError

DEFAULT_NAME = "default"


@dataclass(frozen=True)
class Shorthand:
    """A global source that was given explicitly (`--source`, CAMCAST_SOURCE or `source` at the top of
    the file): with other cameras it is `--camera default=SOURCE`, placed first."""

    source: str
    label: str  # how errors name it, e.g. "--source /dev/video0"
    from_file: bool  # then a [cameras.default] table is more specific and wins


@dataclass(frozen=True)
class Cameras:
    cameras: tuple[CameraConfig, ...]
    tables: frozenset[str]  # cameras with a table in the file
    sources: dict[str, str]  # camera → how its source was given, for errors that name it


def assemble_cameras(template: CameraConfig, file: ConfigFile | None, flags: Sequence[str],
                     shorthand: Shorthand | None) -> Cameras:
    """`template` holds the global per-camera values (its recordings: the global folder); `flags` are
    the --camera NAME=SOURCE values (or CAMCAST_CAMERA's)."""
    own: dict[str, dict[str, Any]] = {}  # camera → its own values, by parser dest, in order
    sources: dict[str, str] = {}
    tables = frozenset(camera.name for camera in file.cameras) if file else frozenset()
    for camera in file.cameras if file else ():
        own[camera.name] = dict(camera.values)
    given: set[str] = set()
    for flag in flags:
        name, equals, source = flag.partition("=")
        if not equals or not name or not source:
            raise ConfigError(f"--camera {flag}: expected NAME=SOURCE, e.g. front=/dev/video0")
        if not CAMERA_NAME.fullmatch(name):
            raise ConfigError(f"--camera {flag}: {CAMERA_NAME_RULE}")
        if name in given:
            raise ConfigError(f"--camera {name}: given twice")
        given.add(name)
        # The command line wins over the file: a camera of the file keeps its table, with this source.
        own.setdefault(name, {})["source"] = source
        sources[name] = f"--camera {name}={source}"
    if shorthand is not None and own:
        if DEFAULT_NAME in given:
            raise ConfigError(f"--camera {DEFAULT_NAME}: given twice ({shorthand.label} is camera "
                              f"{DEFAULT_NAME} when there are other cameras)")
        if not (shorthand.from_file and DEFAULT_NAME in tables):
            first = {**own.pop(DEFAULT_NAME, {}), "source": shorthand.source}
            own = {DEFAULT_NAME: first, **own}
            sources[DEFAULT_NAME] = shorthand.label
    if not own:
        own[DEFAULT_NAME] = {}
        if shorthand is not None:
            sources[DEFAULT_NAME] = shorthand.label
    cameras = tuple(_camera(template, name, values, len(own)) for name, values in own.items())
    return Cameras(cameras, tables, sources)


def _camera(template: CameraConfig, name: str, values: dict[str, Any], count: int) -> CameraConfig:
    values = dict(values)
    if "size" in values:
        values["width"], values["height"] = values.pop("size")
    if "recordings" not in values:
        # One camera keeps the folder as it is; with more, each gets its own so files never collide.
        values["recordings"] = template.recordings if count == 1 else template.recordings / name
    return dataclasses.replace(template, name=name, **values)

