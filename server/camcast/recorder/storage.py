"""The recordings folder: setup checks, free space, listing, safe name lookup, retention.

Everything here touches the disk, so it runs in a worker thread (never on the event loop).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from camcast.recorder.naming import is_recording_name, is_safe_name, iso_utc, started_from_name

log = logging.getLogger("camcast.recorder")


class FolderError(Exception):
    """The recordings folder cannot be used; the message says why (one line)."""


def prepare_folder(folder: Path) -> None:
    """Create the folder if it is missing; prove it is writable by writing a file there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FolderError(f"{folder} exists and is not a folder") from None
    except OSError as exc:
        raise FolderError(f"cannot create {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise FolderError(f"{folder} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".camcast-write-test-"):
            pass
    except OSError as exc:
        raise FolderError(f"{folder} is not writable: {exc.strerror or exc}") from None


def disk_problem(folder: Path, min_free_bytes: int, min_free_ratio: float) -> str | None:
    """Why the disk is too full to record (free space below either threshold), or None."""
    try:
        usage = shutil.disk_usage(folder)
    except OSError as exc:
        return f"cannot read the free space of {folder}: {exc.strerror or exc}"
    if usage.free < min_free_bytes or (usage.total and usage.free / usage.total < min_free_ratio):
        return (f"low disk space: {usage.free / 1e6:.0f} MB free "
                f"({100 * usage.free / max(1, usage.total):.1f} %) in {folder}")
    return None


@dataclass(frozen=True)
class StoredFile:
    name: str
    path: Path
    bytes: int
    mtime: float
    mtime_ns: int


def resolve(folder: Path, name: str) -> Path | None:
    """The file `name` in `folder`, or None: bad names, links out of the folder, non-files."""
    if not is_safe_name(name):
        return None
    candidate = folder / name
    try:
        real = candidate.resolve(strict=True)
        root = folder.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if real.parent != root or not real.is_file():
        return None
    return candidate


def scan(folder: Path) -> list[StoredFile]:
    """Every video file in the folder (links only when they stay inside it), oldest first."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        if not is_safe_name(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                if resolve(folder, entry.name) is None:
                    continue
                info = entry.stat()
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            found.append(StoredFile(entry.name, Path(entry.path), info.st_size, info.st_mtime,
                                    info.st_mtime_ns))
    found.sort(key=lambda f: (f.mtime_ns, f.name))
    return found


def apply_retention(folder: Path, keep_days: float, max_bytes: int, is_active: Callable[[str], bool],
                    lock: threading.Lock, now: float | None = None) -> list[str]:
    """Delete the oldest finished recordings: older than `keep_days`, then beyond `max_bytes`.

    Only files named like recordings are candidates, never the one being written (`is_active`)
    and never, for the size limit, the newest one: a recording larger than the limit is not lost
    the moment it ends. `lock` is the one the writer holds while it creates a file.
    """
    if keep_days <= 0 and max_bytes <= 0:
        return []
    deleted = []
    now = time.time() if now is None else now
    with lock:
        files = [f for f in scan(folder) if is_recording_name(f.name)]
        total = sum(f.bytes for f in files)
        for f in files:  # oldest first
            too_old = keep_days > 0 and now - f.mtime > keep_days * 86400
            too_big = max_bytes > 0 and total > max_bytes and f is not files[-1]
            if not (too_old or too_big) or is_active(f.name) or f.path.is_symlink():
                continue
            try:
                f.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("retention: cannot delete %s: %s", f.name, exc.strerror or exc)
                continue
            total -= f.bytes
            deleted.append(f.name)
    for name in deleted:
        log.info("retention: deleted %s", name)
    return deleted


def probe_duration(path: Path) -> float | None:
    try:
        with av.open(str(path)) as container:
            if container.duration is not None:
                return container.duration / 1_000_000
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except (av.FFmpegError, IndexError, OSError, ValueError):
        return None
    return None


class Library:
    """Lists recordings with their durations; probes each file once (cached by size and mtime)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._durations: dict[str, tuple[int, int, float | None]] = {}
        self._starts: dict[str, int] = {}

    def remember(self, path: Path, started_us: int, duration: float) -> None:
        """What the recorder knows of a file it just finished (no need to probe it)."""
        try:
            info = path.stat()
        except OSError:
            return
        with self._lock:
            self._durations[path.name] = (info.st_size, info.st_mtime_ns, duration)
            self._starts[path.name] = started_us

    def forget(self, name: str) -> None:
        with self._lock:
            self._durations.pop(name, None)
            self._starts.pop(name, None)

    def duration(self, f: StoredFile) -> float | None:
        with self._lock:
            cached = self._durations.get(f.name)
        if cached is not None and cached[:2] == (f.bytes, f.mtime_ns):
            return cached[2]
        value = probe_duration(f.path)
        with self._lock:
            self._durations[f.name] = (f.bytes, f.mtime_ns, value)
        return value

    def listing(self, active: dict[str, tuple[int, float, int]]) -> list[dict[str, object]]:
        """Newest first. `active` maps the file being written to (started µs, duration, bytes)."""
        rows = []
        files = scan(self.folder)
        with self._lock:
            for name in set(self._durations) - {f.name for f in files}:
                self._durations.pop(name, None)
                self._starts.pop(name, None)
        for f in files:
            if f.name in active:
                started_us, duration, size = active[f.name]
                rows.append((started_us, f.mtime_ns, {
                    "name": f.name, "bytes": max(size, f.bytes), "duration": round(duration, 3),
                    "started": iso_utc(started_us), "recording": True}))
                continue
            duration = self.duration(f)
            with self._lock:
                started_us = self._starts.get(f.name)
            if started_us is None:
                started_us = started_from_name(f.name)
            if started_us is None:
                started_us = int((f.mtime - (duration or 0.0)) * 1e6)
            rows.append((started_us, f.mtime_ns, {
                "name": f.name, "bytes": f.bytes,
                "duration": None if duration is None else round(duration, 3),
                "started": iso_utc(started_us), "recording": False}))
        rows.sort(key=lambda row: (row[0], row[1]), reverse=True)
        return [row[2] for row in rows]
