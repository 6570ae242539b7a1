"""What the command line, CAMCAST_* and the config file share: the error, value parsers, and how an
error names the setting to fix (`--fps`, `cams.toml: fps`, `cams.toml: [cameras.front] fps`)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A setting is invalid; the message says which and why."""


CAMERA_NAME = re.compile(r"[a-z0-9_-]{1,32}")
CAMERA_NAME_RULE = "camera names are 1-32 of a-z 0-9 _ -"


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 640x480") from None


def parse_bytes(text: str) -> int:
    """A byte count with an optional K/M/G/T suffix (powers of 1024): 500M, 2G, 1073741824."""
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size, e.g. 500M or 2G")
    return int(float(m.group(1)) * units[m.group(2)])


def parse_rect(text: str) -> tuple[float, float, float, float]:
    """`x,y,w,h`: a rectangle in fractions of the picture (ranges are checked with the camera)."""
    try:
        x, y, w, h = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not x,y,w,h (fractions of the picture), "
                                         "e.g. 0,0,0.25,0.1") from None
    return x, y, w, h


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean")


def option_key(action: argparse.Action) -> str:
    """The setting's name in the config file: the long option without dashes, `-` → `_`."""
    return action.option_strings[0].lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Names:
    """How an error names a setting: `--fps` when it came from the command line (or CAMCAST_*),
    `cams.toml: fps` from the file's top level, `cams.toml: [cameras.front] fps` from a camera table."""

    file: str = ""
    camera: str | None = None
    from_file: Collection[str] = ()  # top-level keys whose value is the file's

    def _in_file(self, key: str) -> bool:
        return self.camera is not None or key in self.from_file

    def key(self, key: str) -> str:
        """The bare name, for a second setting in the same message (`it needs --recorder mp4`)."""
        return key if self._in_file(key) else "--" + key.replace("_", "-")

    def __call__(self, key: str) -> str:
        if not self._in_file(key):
            return self.key(key)
        where = f"{self.file}: " if self.file else ""
        table = f"[cameras.{self.camera}] " if self.camera is not None else ""
        return f"{where}{table}{key}"


@dataclass(frozen=True)
class Origins:
    """Where a configuration's settings came from, so that an error points at the place to fix."""

    file: str = ""                                  # the --config file, as given
    file_keys: frozenset[str] = frozenset()          # global keys whose value is the file's top level
    tables: frozenset[str] = frozenset()             # cameras with a [cameras.NAME] table
    sources: Mapping[str, str] = field(default_factory=dict)  # camera → how its source was given

    def options(self) -> Names:
        return Names(self.file, None, self.file_keys)

    def camera(self, name: str) -> Names:
        return Names(self.file if name in self.tables else "", name)

    def source(self, name: str, source: str) -> str:
        return self.sources.get(name) or f"{self.camera(name)('source')} {source}"
