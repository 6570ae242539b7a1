"""A camera's motion events in SQLite (`events.sqlite3` in its recordings folder), thumbnails included.

Every call runs on one worker thread that owns the connection: the event loop never waits on the
disk. A thumbnail is a JPEG blob in its event's row, so deleting an event deletes its picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from camcast.motion.model import EventRecording, MotionEvent

log = logging.getLogger("camcast.motion")

FILE_NAME = "events.sqlite3"
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER,
    peak REAL NOT NULL,
    box TEXT,
    recording_name TEXT,
    recording_offset REAL,
    updated_us INTEGER NOT NULL,
    thumbnail BLOB
);
CREATE INDEX IF NOT EXISTS events_by_start ON events (start_us);
"""
_COLUMNS = "id, camera, start_us, end_us, peak, box, recording_name, recording_offset, updated_us"


class EventStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / FILE_NAME
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def open(self) -> int:
        """Open (or create) the file; events a crash left open end at their last update. Returns
        how many were closed so."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="motion-db")
        return await self._run(self._open)

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(self._close)
        self._executor.shutdown(wait=False)
        self._executor = None

    async def save(self, event: MotionEvent, thumbnail: bytes | None = None) -> None:
        """Insert or update `event`; a None thumbnail keeps the one it has."""
        await self._run(self._save, event, thumbnail)

    async def get(self, event_id: str) -> MotionEvent | None:
        return await self._run(self._get, event_id)

    async def listing(self, since_us: int | None, limit: int) -> list[MotionEvent]:
        """Newest first; with `since_us`, the events still going on at or after it."""
        return await self._run(self._listing, since_us, limit)

    async def thumbnail(self, event_id: str) -> bytes | None:
        return await self._run(self._thumbnail, event_id)

    async def delete(self, event_id: str) -> bool:
        return await self._run(self._delete, event_id)

    async def prune(self, ended_before_us: int) -> int:
        """Delete the events that ended before `ended_before_us` (retention); how many."""
        return await self._run(self._prune, ended_before_us)

    # -- on the worker thread ----------------------------------------------------------------------
    async def _run(self, function: Any, *args: Any) -> Any:
        if self._executor is None:
            raise RuntimeError("the event store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _open(self) -> int:
        try:
            return self._connect(self.path)
        except sqlite3.OperationalError as exc:  # locked, read-only, no space left
            log.error("%s cannot be opened (%s): motion events are kept in memory only until a restart",
                      self.path, exc)
            return self._connect(":memory:")
        except sqlite3.DatabaseError as exc:
            # Not a database any more (a half-copied file, a disk that filled up): set it aside,
            # where it can still be looked at, and start a new one rather than lose detection.
            aside = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
            log.warning("%s cannot be read (%s): moved to %s; starting a new one", self.path, exc, aside.name)
            with contextlib.suppress(OSError):
                self.path.rename(aside)
            return self._connect(self.path)

    def _connect(self, path: Path | str) -> int:
        db = sqlite3.connect(path, check_same_thread=False)
        try:
            db.executescript(_SCHEMA)
            with db:
                closed = db.execute("UPDATE events SET end_us = updated_us WHERE end_us IS NULL").rowcount
        except BaseException:
            db.close()
            raise
        self._db = db
        return closed

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the event store is closed")
        return self._db

    def _save(self, event: MotionEvent, thumbnail: bytes | None) -> None:
        recording = event.recording
        row = (event.id, event.camera, event.start_us, event.end_us, event.peak,
               json.dumps(event.box) if event.box is not None else None,
               recording.name if recording else None, recording.offset if recording else None,
               event.updated_us)
        with self._conn() as db:
            db.execute(f"INSERT INTO events ({_COLUMNS}, thumbnail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT(id) DO UPDATE SET end_us = excluded.end_us, peak = excluded.peak, "
                       "box = excluded.box, recording_name = excluded.recording_name, "
                       "recording_offset = excluded.recording_offset, updated_us = excluded.updated_us, "
                       "thumbnail = COALESCE(excluded.thumbnail, events.thumbnail)",
                       (*row, thumbnail))

    def _get(self, event_id: str) -> MotionEvent | None:
        row = self._conn().execute(f"SELECT {_COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
        return self._event(row) if row else None

    def _listing(self, since_us: int | None, limit: int) -> list[MotionEvent]:
        if since_us is None:
            rows = self._conn().execute(
                f"SELECT {_COLUMNS} FROM events ORDER BY start_us DESC LIMIT ?", (limit,)).fetchall()
        else:
            rows = self._conn().execute(
                f"SELECT {_COLUMNS} FROM events WHERE end_us IS NULL OR end_us >= ? OR start_us >= ? "
                "ORDER BY start_us DESC LIMIT ?", (since_us, since_us, limit)).fetchall()
        return [self._event(row) for row in rows]

    def _thumbnail(self, event_id: str) -> bytes | None:
        row = self._conn().execute("SELECT thumbnail FROM events WHERE id = ?", (event_id,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def _delete(self, event_id: str) -> bool:
        with self._conn() as db:
            return db.execute("DELETE FROM events WHERE id = ?", (event_id,)).rowcount > 0

    def _prune(self, ended_before_us: int) -> int:
        with self._conn() as db:
            return int(db.execute("DELETE FROM events WHERE end_us IS NOT NULL AND end_us < ?",
                                  (ended_before_us,)).rowcount)

    def _event(self, row: tuple[Any, ...]) -> MotionEvent:
        event = _event(row)
        if event.recording is not None and not (self.folder / event.recording.name).exists():
            # Deleted (by hand or by retention): the event keeps its thumbnail, not a dead link.
            event = dataclasses.replace(event, recording=None)
        return event


def _event(row: tuple[Any, ...]) -> MotionEvent:
    event_id, camera, start_us, end_us, peak, box, rec_name, rec_offset, updated_us = row
    recording = EventRecording(rec_name, rec_offset or 0.0) if rec_name else None
    return MotionEvent(event_id, camera, start_us, end_us, peak, tuple(json.loads(box)) if box else None,
                       recording, updated_us)
