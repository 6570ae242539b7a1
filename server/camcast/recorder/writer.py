"""One recording run's writer thread: opens, writes, rolls over and closes files, in order.

The event loop only enqueues jobs (never waits on disk); the thread reports back through
`loop.call_soon_threadsafe`: a file opened, a file closed, the run failed, the run ended.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from camcast.recorder.sinks import AudioJob, Job, RecordError, Sink

log = logging.getLogger("camcast.recorder")

DISK_CHECK_INTERVAL = 1.0  # seconds


@dataclass
class FileInfo:
    """One recording file; the writer thread updates `bytes` and `duration` as it writes."""

    path: Path
    started_us: int
    bytes: int = 0
    duration: float = 0.0
    frames: int = 0

    @property
    def name(self) -> str:
        return self.path.name


class WriterEvents(Protocol):
    """Called on the event loop, in this order per file: opened, closed; then failed and/or ended."""

    def writer_opened(self, writer: WriterThread, info: FileInfo) -> None: ...

    def writer_closed(self, writer: WriterThread, info: FileInfo) -> None: ...

    def writer_failed(self, writer: WriterThread, message: str) -> None: ...

    def writer_ended(self, writer: WriterThread) -> None: ...


class Backlog(RecordError):
    """The disk does not keep up: too many jobs wait for the writer thread."""


_OPEN, _WRITE, _STOP = "open", "write", "stop"


class WriterThread:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        events: WriterEvents,
        open_sink: Callable[[Job], Sink],
        disk_problem: Callable[[], str | None],
        folder_lock: threading.Lock,
        after_close: Callable[[FileInfo], None],
        max_pending: int,
    ) -> None:
        self._loop = loop
        self._events = events
        self._open_sink = open_sink
        self._disk_problem = disk_problem
        self._folder_lock = folder_lock
        self._after_close = after_close
        self._max_pending = max_pending
        self._queue: queue.SimpleQueue[tuple[str, Job | None]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="camcast-recorder", daemon=True)
        self.current: FileInfo | None = None  # read from the loop for live figures
        self.stopping = False

    def start(self) -> None:
        self._thread.start()

    # -- called on the event loop --------------------------------------------------------------
    def open(self, job: Job) -> None:
        """Start a new file on this (key)frame; closes the current one first (a roll-over)."""
        self._put(_OPEN, job)

    def write(self, job: Job) -> None:
        self._put(_WRITE, job)

    def stop(self) -> None:
        """Finish: close the current file; `writer_ended` follows."""
        if not self.stopping:
            self.stopping = True
            self._queue.put((_STOP, None))

    def _put(self, kind: str, job: Job) -> None:
        if self.stopping:
            return
        if self._queue.qsize() >= self._max_pending:
            raise Backlog(f"the disk does not keep up ({self._max_pending} frames waiting)")
        self._queue.put((kind, job))

    # -- writer thread ------------------------------------------------------------------------
    def _emit(self, callback: Callable[..., None], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, self, *args)
        except RuntimeError:  # the loop is gone (interpreter shutdown): nobody to tell
            pass

    def _run(self) -> None:
        sink: Sink | None = None
        info: FileInfo | None = None
        next_check = 0.0
        failure: str | None = None
        try:
            while True:
                kind, job = self._queue.get()
                if kind == _STOP:
                    break
                assert job is not None
                if kind == _OPEN:
                    if sink is not None and info is not None:
                        sink, info = None, self._close(sink, info)
                    problem = self._disk_problem()
                    if problem:
                        raise RecordError(problem)
                    with self._folder_lock:  # retention never sees a file we are about to own
                        sink = self._open_sink(job)
                        info = FileInfo(sink.path, job.captured_us)
                        self.current = info
                    log.info("recording to %s", sink.path)
                    self._emit(self._events.writer_opened, info)
                    next_check = time.monotonic() + DISK_CHECK_INTERVAL
                if sink is None or info is None:
                    continue
                sink.write(job)
                if not isinstance(job, AudioJob):
                    info.frames += 1
                info.bytes, info.duration = sink.bytes_written, sink.duration
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + DISK_CHECK_INTERVAL
                    problem = self._disk_problem()
                    if problem:
                        raise RecordError(problem)
        except Exception as exc:
            failure = _describe(exc)
            log.error("recording failed: %s", failure)
        finally:
            if sink is not None and info is not None:
                self._close(sink, info)
            self.current = None
            if failure is not None:
                self._emit(self._events.writer_failed, failure)
            self._emit(self._events.writer_ended)

    def _close(self, sink: Sink, info: FileInfo) -> FileInfo:
        try:
            sink.close()
        except Exception as exc:  # e.g. the disk is full: what is on disk so far still plays
            log.warning("closing %s: %s", sink.path.name, _describe(exc))
        info.bytes, info.duration = _size(sink), sink.duration
        with self._folder_lock:
            self.current = None
        log.info("recorded %s (%.1f s, %d bytes)", sink.path.name, info.duration, info.bytes)
        self._emit(self._events.writer_closed, info)
        try:
            self._after_close(info)
        except Exception:
            log.exception("after closing %s", sink.path.name)
        return info

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


def _size(sink: Sink) -> int:
    try:
        return sink.path.stat().st_size
    except OSError:
        return sink.bytes_written


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RecordError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"write failed: {exc.strerror}"
    return f"write failed: {exc}"
