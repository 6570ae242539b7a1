"""The --config file: TOML with global options at the top and one [cameras.NAME] table per camera.

A key is a long option without its dashes, `-` written `_` (`jpeg_quality = 60`, `ice_server = [...]`).
Values are checked for their type here and converted as the command line would convert them; the
ranges are checked with the rest of the configuration. Every error names the file, camera and key.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import json
import re
import tomllib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from camcast.configvalues import (
    CAMERA_NAME,
    CAMERA_NAME_RULE,
    ConfigError,
    option_key,
    parse_bool,
    parse_bytes,
    parse_rect,
    parse_size,
)


@dataclass(frozen=True)
class FileCamera:
    name: str
    values: dict[str, Any]  # by parser dest, e.g. {"source": "/dev/video0", "size": (1280, 720)}


@dataclass(frozen=True)
class ConfigFile:
    path: str  # as given: every error starts with it
    values: dict[str, Any]  # the top level, by parser dest
    cameras: tuple[FileCamera, ...]  # in file order


def read_config_file(path: Path, actions: Sequence[argparse.Action],
                     camera_keys: Collection[str]) -> ConfigFile:
    """Read and check a config file whose keys are the options of `actions`; `camera_keys` may also
    (and only those may) appear in a camera's table. Raises ConfigError."""
    where = str(path)
    data = _load(path, where)
    by_key = {option_key(action): action for action in actions}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key == "cameras":
            continue
        if key not in by_key:
            hint = _suggest(key, [*by_key, "cameras"])
            if not hint and isinstance(raw, dict):
                hint = f" (a camera is a [cameras.{key}] table)"
            raise ConfigError(f"{where}: {key}: unknown key{hint}")
        values[by_key[key].dest] = _convert(raw, by_key[key], f"{where}: {key}")
    tables = data.get("cameras", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}: cameras: expected [cameras.NAME] tables, got {_describe(tables)}")
    cameras = tuple(_camera(where, name, table, by_key, camera_keys) for name, table in tables.items())
    return ConfigFile(where, values, cameras)


def _load(path: Path, where: str) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: cannot read (not UTF-8 text)") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {_syntax_error(str(exc))}") from None


def _syntax_error(message: str) -> str:
    # tomllib's message ends with where it stopped: "Invalid value (at line 3, column 7)".
    m = re.fullmatch(r"(?s)(.*?)\s*\(at (?:line (\d+), column (\d+)|(end of document))\)", message)
    if m is None:
        return f"invalid TOML ({_lower_first(message)})"
    place = "end of file" if m[4] else f"line {m[2]}, column {m[3]}"
    return f"{place}: invalid TOML ({_lower_first(m[1])})"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _camera(where: str, name: str, table: Any, by_key: dict[str, argparse.Action],
            camera_keys: Collection[str]) -> FileCamera:
    if not CAMERA_NAME.fullmatch(name):
        raise ConfigError(f"{where}: [cameras.{name}]: {CAMERA_NAME_RULE}")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: cameras.{name}: expected a table [cameras.{name}], got "
                          f"{_describe(table)}")
    values: dict[str, Any] = {}
    for key, raw in table.items():
        label = f"{where}: [cameras.{name}] {key}"
        if key in by_key and key not in camera_keys:
            raise ConfigError(f"{label}: a global option, set it at the top of the file (before the "
                              "[cameras.NAME] tables)")
        if key not in camera_keys:
            raise ConfigError(f"{label}: unknown key{_suggest(key, camera_keys)}")
        values[by_key[key].dest] = _convert(raw, by_key[key], label)
    if "source" not in values:
        raise ConfigError(f"{where}: [cameras.{name}] source: missing (every camera needs one, e.g. "
                          'source = "/dev/video0")')
    return FileCamera(name, values)


def _suggest(key: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _convert(raw: Any, action: argparse.Action, label: str) -> Any:
    """The value the command line would give for `action`, from a TOML value of the right type."""
    kind = action.type
    if kind is parse_rect:
        return _rects(raw, label)
    if isinstance(action, argparse._AppendAction):
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise _wrong(label, "a list of strings", raw)
        return items
    if kind is parse_bool or action.nargs == 0:
        if not isinstance(raw, bool):
            raise _wrong(label, "true or false", raw)
        return raw
    value = _scalar(raw, kind, label)
    if value is _WRONG_TYPE:
        raise _wrong(label, _EXPECTED.get(kind, "a string"), raw)
    return value


def _rects(raw: Any, label: str) -> list[tuple[float, float, float, float]]:
    """Rectangles: a list of [x, y, w, h] lists of numbers (or of "x,y,w,h" strings)."""
    if not isinstance(raw, list):
        raise _wrong(label, "a list of [x, y, w, h] lists", raw)
    rects = []
    for item in raw:
        if isinstance(item, str):
            try:
                rects.append(parse_rect(item))
            except argparse.ArgumentTypeError as exc:
                raise ConfigError(f"{label}: {exc}") from None
        elif isinstance(item, list) and len(item) == 4 and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in item):
            rects.append(tuple(float(v) for v in item))
        else:
            raise _wrong(label, "a list of [x, y, w, h] lists", item)
    return rects  # type: ignore[return-value]


_WRONG_TYPE = object()


def _scalar(raw: Any, kind: Any, label: str) -> Any:
    if isinstance(raw, bool):  # TOML booleans are Python ints: never a number here
        return _WRONG_TYPE
    if kind is int and isinstance(raw, int | float) and float(raw).is_integer():
        return int(raw)
    if kind is float and isinstance(raw, int | float):
        return float(raw)
    if kind is parse_bytes and isinstance(raw, int):
        return raw
    if kind in (parse_size, parse_bytes) and isinstance(raw, str):
        try:
            return kind(raw)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"{label}: {exc}") from None
    if kind is Path and isinstance(raw, str):
        return Path(raw)
    if kind is None and isinstance(raw, str):
        return raw
    return _WRONG_TYPE


_EXPECTED: dict[Any, str] = {
    int: "a whole number",
    float: "a number",
    parse_size: 'a string such as "640x480"',
    parse_bytes: 'a number of bytes or a string such as "20G"',
}


def _wrong(label: str, expected: str, raw: Any) -> ConfigError:
    return ConfigError(f"{label}: expected {expected}, got {_describe(raw)}")


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        text = json.dumps(value)
        if len(text) > 40:
            text = text[:36] + '..."'
        return f"a string ({text})"
    if isinstance(value, int):
        return f"a whole number ({value})"
    if isinstance(value, float):
        return f"a number ({value:g})"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, datetime.date | datetime.time):
        return f"a date or time ({value.isoformat()})"
    return type(value).__name__
