"""Recording file names: `<UTC start, YYYY-MM-DDTHH-MM-SSZ>[-N].<ext>`, never overwritten."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

# What the recorder writes (and the only names retention may delete).
RECORDING_NAME = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z)(?:-\d{1,6})?\.[a-z0-9]{2,5}")
# What the HTTP API serves or deletes: one plain file name, nothing that could reach another folder.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
VIDEO_EXTENSIONS = frozenset({"mp4", "m4v", "mov", "avi", "mkv", "webm"})
MAX_SUFFIX = 999


def base_name(start_us: int) -> str:
    return time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(start_us / 1e6))


def create_unique(folder: Path, start_us: int, extension: str) -> tuple[Path, BinaryIO]:
    """Create (exclusively) the first free name for a recording starting at `start_us`.

    The file is opened unbuffered, so every write reaches the OS at once (a crash loses only
    what the muxer still holds). O_EXCL makes "never overwritten" hold even against other writers.
    """
    stem = base_name(start_us)
    for n in range(MAX_SUFFIX + 1):
        path = folder / (f"{stem}.{extension}" if n == 0 else f"{stem}-{n}.{extension}")
        try:
            return path, open(path, "xb", buffering=0)  # the sink owns and closes it
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}/{stem}-*.{extension}: every name up to -{MAX_SUFFIX} is taken")


def is_recording_name(name: str) -> bool:
    return RECORDING_NAME.fullmatch(name) is not None


def is_safe_name(name: str) -> bool:
    """A plain file name with a video extension: no separators, no `..`, no NUL, not too long."""
    if SAFE_NAME.fullmatch(name) is None or ".." in name:
        return False
    return name.rsplit(".", 1)[-1].lower() in VIDEO_EXTENSIONS if "." in name else False


def started_from_name(name: str) -> int | None:
    """The start time (µs since the epoch) encoded in a recording's name, if it has one."""
    match = RECORDING_NAME.fullmatch(name)
    if match is None:
        return None
    try:
        parsed = datetime.strptime(match.group(1), "%Y-%m-%dT%H-%M-%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(parsed.timestamp()) * 1_000_000


def iso_utc(time_us: int | None) -> str | None:
    """ISO 8601 UTC with milliseconds, e.g. 2024-05-01T12:00:00.123Z."""
    if time_us is None:
        return None
    moment = datetime.fromtimestamp(time_us / 1e6, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
