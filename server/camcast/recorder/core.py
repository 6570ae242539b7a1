"""The recorder of one stream: one recording at a time, shared by every viewer.

State machine: stopped → (start: wait for a keyframe) → recording → (stop, failure) → stopped.
With sound (mp4 only) a second tap takes the camera's Opus packets into a buffer of recent sound
(as long as the pre-roll, else a couple of seconds). The sound goes to the writer behind the
picture: each packet once a frame captured at or after it has been written, to the file holding
that frame. So a file's sound starts with its first frame (a pre-roll's too), a segment's sound
goes on in the next file where the picture does, and the last file's ends with its last frame.
Everything here runs on the event loop and never waits on disk: a `WriterThread` per run does
the file work. Each change of state goes to `notify` (the control bus broadcast).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camcast.control import ControlError, Message, error
from camcast.frames import now_us
from camcast.hub import HubClosed, Subscription
from camcast.recorder.feeds import Feed, audio_job
from camcast.recorder.naming import create_unique, iso_utc
from camcast.recorder.preroll import PrerollBuffer
from camcast.recorder.sinks import Create, Job, RecordError, Sink
from camcast.recorder.storage import Library, apply_retention, disk_problem
from camcast.recorder.writer import FileInfo, WriterThread

if TYPE_CHECKING:
    from camcast.audio import AudioPacket, SharedAudio

log = logging.getLogger("camcast.recorder")
AUDIO_BACKLOG = 500  # Opus packets (10 s) that may wait for the writer on top of the video's
AUDIO_PACKETS_PER_S = 50  # 20 ms Opus packets
PREROLL_GOP_SLACK = 12  # s: a pre-roll starts at a keyframe up to a GOP before press - preroll


@dataclass(frozen=True)
class RecorderSettings:
    folder: Path
    preroll: float = 0.0  # seconds kept before a press (encoded packets only)
    segment: float = 0.0  # seconds per file (0: one file per recording)
    keep_days: float = 0.0  # 0: keep forever
    max_bytes: int = 0  # 0: no limit on the folder's total size
    min_free_bytes: int = 200 * 1024 * 1024
    min_free_ratio: float = 0.01
    start_timeout: float = 5.0  # seconds to wait for the first frame
    stop_timeout: float = 10.0  # seconds to wait for the file to be finalized
    retention_interval: float = 60.0


class _Run:
    """One recording, from a press to a stop; several files when segments roll over."""

    def __init__(self, writer: WriterThread, press_us: int, loop: asyncio.AbstractEventLoop) -> None:
        self.writer = writer
        self.press_us = press_us
        self.opened: asyncio.Future[FileInfo] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()
        self.need_key = True  # nothing is written until a keyframe starts a decodable chain
        self.started = False  # the first file is open (or being opened)
        self.chain: object = None
        self.segment_start_us = 0
        # Sound is written up to the newest frame's end; the next packet must be captured from here.
        self.video_end_us = 0
        self.audio_next_us = 0
        self.current: FileInfo | None = None
        self.failed = False


class Recorder:
    def __init__(
        self,
        feed: Feed,
        settings: RecorderSettings,
        notify: Callable[[Message], None],
        create: Create = create_unique,
        audio: SharedAudio | None = None,
    ) -> None:
        if settings.preroll > 0 and not feed.supports_preroll:
            raise ValueError(f"the {feed.kind} recorder has no pre-roll")
        self.feed = feed
        self.settings = settings
        self._audio: SharedAudio | None = None
        if audio is not None and feed.supports_audio:
            self._audio = audio
            feed.with_audio = True
        elif audio is not None:
            log.info("the %s recorder records no audio", feed.kind)
        # Thresholds are plain attributes: an operator (or a test) may change them at run time.
        self.min_free_bytes = settings.min_free_bytes
        self.min_free_ratio = settings.min_free_ratio
        self.library = Library(settings.folder)
        self._notify = notify
        self.create = create  # makes each file: exclusive, never overwriting (replaceable in tests)
        self._lock = asyncio.Lock()
        self._folder_lock = threading.Lock()
        self._run: _Run | None = None
        self._runs: dict[WriterThread, _Run] = {}  # until each writer thread has ended
        self._last: FileInfo | None = None
        self._error: str | None = None
        self._preroll = (PrerollBuffer(settings.preroll, round(feed.fps * (settings.preroll + 12)) + 60)
                         if settings.preroll > 0 else None)
        self._sub: Subscription[Any] | None = None
        self._tap_task: asyncio.Task[None] | None = None
        self._audio_sub: Subscription[AudioPacket] | None = None
        self._audio_task: asyncio.Task[None] | None = None
        # Recent sound, captured in order: the pre-roll's, and what waits for its picture (which
        # comes out of its encoder later than the sound captured with it).
        recent_s = settings.preroll + PREROLL_GOP_SLACK if settings.preroll > 0 else 2
        self._audio_recent: deque[AudioPacket] = deque(maxlen=round(recent_s * AUDIO_PACKETS_PER_S))
        self._frame_us = round(1_000_000 / feed.fps) if feed.fps > 0 else 33_333
        self._retention_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.dropped = 0  # packets the recorder's subscription lost (each forces a keyframe wait)
        self.files_written = 0
        # Motion stops only the recordings it started; a press on record makes a recording manual.
        self.started_by_motion = False

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._preroll is not None:
            self._start_tap()  # pre-roll keeps the encoder running and the last GOPs in memory
            self._start_audio_tap()  # and the Opus encode, with the same seconds of sound
        s = self.settings
        if s.keep_days > 0 or s.max_bytes > 0:
            self._retention_task = asyncio.get_running_loop().create_task(
                self._retention_loop(), name="recorder-retention")

    async def close(self) -> None:
        """Finalize the open file (shutdown, SIGINT/SIGTERM) and stop the background tasks."""
        await self.stop()
        for task in (self._retention_task, *self._tasks):
            if task is not None:
                task.cancel()
        await self._stop_tap()
        await self._stop_audio_tap()
        for task in (self._retention_task, *self._tasks):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # -- state -----------------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self._run is not None and self._run.current is not None

    def active_name(self) -> str | None:
        """The file being written now (None while stopped)."""
        run = self._run
        if run is None:
            return None
        current = run.writer.current or run.current
        return current.name if current else None

    def is_active(self, name: str) -> bool:
        # Any writer that has not ended yet, including one still finalizing after a stop.
        # Called from threads too: it only reads references.
        for writer in list(self._runs):
            current = writer.current
            if current is not None and current.name == name:
                return True
        return self.active_name() == name

    def active_files(self) -> dict[str, tuple[int, float, int]]:
        run = self._run
        current = run.writer.current if run else None
        if current is None:
            return {}
        return {current.name: (current.started_us, current.duration, current.bytes)}

    def state(self) -> dict[str, Any]:
        """The JSON of GET /api/record. Stopped: name/started/elapsed/bytes describe the last file."""
        run = self._run
        if run is not None and run.current is not None:
            info = run.current
            return {"state": "recording", "name": info.name, "started": iso_utc(info.started_us),
                    "elapsed": round(max(0, now_us() - info.started_us) / 1e6, 1),
                    "bytes": info.bytes, "frames": info.frames, "error": None}
        last = self._last
        return {"state": "stopped", "name": last.name if last else None,
                "started": iso_utc(last.started_us) if last else None,
                "elapsed": round(last.duration, 1) if last else 0, "bytes": last.bytes if last else 0,
                "frames": last.frames if last else 0, "error": self._error}

    def message(self) -> Message:
        """The data-channel form: {"type": "record", "state", "name", "started", ...}."""
        return {"type": "record", **self.state()}

    def status(self) -> dict[str, Any]:
        """The "recording" part of /api/status."""
        return self.state() | {
            "backend": self.feed.kind, "preroll": self.settings.preroll, "segment": self.settings.segment,
            "preroll_buffered": round(self._preroll.span, 2) if self._preroll else 0.0,
            "files_written": self.files_written, "dropped": self.dropped,
        }

    # -- commands ----------------------------------------------------------------------------------
    async def start(self, by_motion: bool = False) -> dict[str, Any]:
        """Start recording (idempotent: while recording, answer the current state)."""
        press_us = now_us()
        async with self._lock:
            if self._run is not None:
                if not by_motion:
                    self.started_by_motion = False  # someone records over it: theirs now
                return self.state()
            loop = asyncio.get_running_loop()
            problem = await loop.run_in_executor(None, self._disk_problem)
            if problem:  # refuse a doomed start before touching anything
                raise RecordError(problem)
            backlog = self.feed.max_pending + (len(self._preroll) if self._preroll is not None else 0)
            backlog += AUDIO_BACKLOG + len(self._audio_recent) if self._audio is not None else 0
            writer = WriterThread(loop, self, self._open_sink, self._disk_problem, self._folder_lock,
                                  self._after_close, backlog)
            run = _Run(writer, press_us, loop)
            self._runs[writer] = run
            self._run = run
            writer.start()
            self._error = None
            if self._preroll is not None:
                # Start at the keyframe at or before press - preroll: all of it is in memory.
                for item in self._preroll.since(press_us - int(self.settings.preroll * 1e6)):
                    self._feed_item(run, item)
            else:
                for item in self.feed.backlog():
                    self._feed_item(run, item)
            self._start_tap()
            self._start_audio_tap()
            if not run.started:
                self.feed.request_keyframe()  # the file starts on the next frame, as a keyframe
            try:
                info = await asyncio.wait_for(asyncio.shield(run.opened), self.settings.start_timeout)
            except (TimeoutError, RecordError) as exc:
                run.opened.cancel()
                message = str(exc) if isinstance(exc, RecordError) else (
                    f"no video to record within {self.settings.start_timeout:g} s")
                await self._end_run(run)
                self._error = message
                raise RecordError(message) from None
            log.info("recording started: %s (%.0f ms after the %s)", info.name,
                     (info.started_us - press_us) / 1000, "motion" if by_motion else "press")
            self.started_by_motion = by_motion
        self._broadcast()
        return self.state()

    async def stop(self) -> dict[str, Any]:
        """Stop and finalize (idempotent: while stopped, answer the current state)."""
        async with self._lock:
            run = self._run
            if run is None:
                return self.state()
            await self._end_run(run)
        self._broadcast()
        return self.state()

    async def handle_control(self, message: Message, sender: str) -> Message:
        """The `record` data-channel message: {"action": "start"|"stop"}; answers the state."""
        action = message.get("action")
        if action == "start":
            try:
                await self.start()
            except RecordError as exc:
                raise ControlError(f"cannot record: {exc}") from None
        elif action == "stop":
            await self.stop()
        elif action not in (None, "state"):
            raise ControlError("a record message needs \"action\": \"start\" or \"stop\"")
        return self.message()

    def greeting(self) -> Message:
        return self.message()

    # -- internals -------------------------------------------------------------------------------
    async def _end_run(self, run: _Run) -> None:
        if self._run is run:
            self._run = None
        if self._preroll is None:
            await self._stop_tap()
        self._drain_audio(run)  # the sound up to the last frame too
        if self._preroll is None:
            await self._stop_audio_tap()
        run.writer.stop()
        try:
            await asyncio.wait_for(asyncio.shield(run.ended), self.settings.stop_timeout)
        except TimeoutError:
            log.error("the recording writer did not finish within %g s", self.settings.stop_timeout)
        run.current = None

    def _broadcast(self) -> None:
        self._notify(self.message())

    def _disk_problem(self) -> str | None:
        return disk_problem(self.settings.folder, self.min_free_bytes, self.min_free_ratio)

    def _open_sink(self, job: Job) -> Sink:
        return self.feed.open_sink(self.settings.folder, job, self.create)

    def _after_close(self, info: FileInfo) -> None:  # writer thread
        self.library.remember(info.path, info.started_us, info.duration)
        self._apply_retention()

    def _apply_retention(self) -> list[str]:
        s = self.settings
        deleted = apply_retention(s.folder, s.keep_days, s.max_bytes, self.is_active, self._folder_lock)
        for name in deleted:
            self.library.forget(name)  # its cached duration would otherwise stay for good
        return deleted

    async def _retention_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(None, self._apply_retention)
            except Exception:
                log.exception("retention failed")
            await asyncio.sleep(self.settings.retention_interval)

    def _start_tap(self) -> None:
        if self._tap_task is None or self._tap_task.done():
            self._sub = self.feed.subscribe()
            self._tap_task = asyncio.get_running_loop().create_task(self._tap(self._sub),
                                                                    name="recorder-tap")

    async def _stop_tap(self) -> None:
        task, self._tap_task = self._tap_task, None
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _tap(self, sub: Subscription[Any]) -> None:
        dropped = 0
        while True:
            try:
                item = await sub.get()
            except HubClosed:
                return
            if sub.dropped != dropped:
                # A lost packet breaks the reference chain: skip to the next keyframe.
                self.dropped += sub.dropped - dropped
                dropped = sub.dropped
                log.warning("recorder lost %d packets; waiting for a keyframe", self.dropped)
                if self._preroll is not None:
                    self._preroll.clear()
                if self._run is not None:
                    self._run.need_key = True
            if self._preroll is not None:
                self._preroll.push(item)
            run = self._run
            if run is not None and not run.failed:
                try:
                    self._feed_item(run, item)
                except RecordError as exc:  # the writer's backlog is full
                    self.writer_failed(run.writer, str(exc))

    def _start_audio_tap(self) -> None:
        if self._audio is None or (self._audio_task is not None and not self._audio_task.done()):
            return
        # Subscribing starts the camera's Opus encode; 2 s deep so a busy loop loses nothing.
        self._audio_sub = self._audio.packets.subscribe(maxsize=100)
        self._audio_task = asyncio.get_running_loop().create_task(
            self._audio_tap(self._audio_sub), name="recorder-audio-tap")

    def _drain_audio(self, run: _Run) -> None:
        if self._audio_sub is not None:
            while (item := self._audio_sub.get_nowait()) is not None:
                self._take_audio(item, run)

    async def _stop_audio_tap(self) -> None:
        task, self._audio_task = self._audio_task, None
        if self._audio_sub is not None:
            self._audio_sub.close()
            self._audio_sub = None
        self._audio_recent.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _audio_tap(self, sub: Subscription[AudioPacket]) -> None:
        while True:
            try:
                item = await sub.get()
            except HubClosed:
                return
            self._take_audio(item)

    def _take_audio(self, item: AudioPacket, run: _Run | None = None) -> None:
        self._audio_recent.append(item)
        run = run or self._run
        if run is not None:
            self._write_audio(run, run.video_end_us)

    def _write_audio(self, run: _Run, until_us: int) -> None:
        """Write the sound captured from `run.audio_next_us` to before `until_us` (the end of the
        newest frame written): a file never has sound before its first frame nor after its last.
        A lost packet is a 20 ms gap, nothing to wait for."""
        if run.failed or not run.started or until_us <= run.audio_next_us:
            return
        due: list[AudioPacket] = []
        for item in reversed(self._audio_recent):  # newest first: only the new ones are looked at
            if item.captured_us < run.audio_next_us:
                break
            if item.captured_us < until_us:
                due.append(item)
        if not due:
            return
        run.audio_next_us = due[0].captured_us + 1
        try:
            for item in reversed(due):
                run.writer.write(audio_job(item))
        except RecordError as exc:  # the writer's backlog is full
            self.writer_failed(run.writer, str(exc))

    def _feed_item(self, run: _Run, item: Any) -> None:
        feed, s = self.feed, self.settings
        key = feed.is_key(item)
        if not run.started:
            if not key:
                feed.request_keyframe()
                return
            run.started, run.need_key = True, False
            self._open_file(run, item)
            return
        if feed.chain(item) != run.chain:
            run.need_key = True  # the encoder restarted (new size): the next file starts on its IDR
            if key:
                self._open_file(run, item)
                return
        if run.need_key:
            if not key:
                feed.request_keyframe()
                return
            run.need_key = False
        if s.segment > 0 and item.captured_us - run.segment_start_us >= s.segment * 1_000_000:
            if key:
                self._open_file(run, item)
                return
            feed.request_keyframe()  # roll over on the very next frame
        run.writer.write(feed.job(item))
        self._picture_written(run, item)

    def _open_file(self, run: _Run, item: Any) -> None:
        if run.video_end_us:
            # The sound before this frame ends the previous file; from it on, it goes in the new one.
            self._write_audio(run, item.captured_us)
        run.chain = self.feed.chain(item)
        run.need_key = False
        run.segment_start_us = item.captured_us
        run.writer.open(self.feed.job(item))
        # Sound up to the previous frame's nominal end may be in the old file already (this frame
        # came sooner): never twice.
        run.audio_next_us = max(run.audio_next_us, item.captured_us)
        self._picture_written(run, item)

    def _picture_written(self, run: _Run, item: Any) -> None:
        run.video_end_us = max(run.video_end_us, item.captured_us + self._frame_us)
        self._write_audio(run, run.video_end_us)

    # -- writer events (on the loop) -------------------------------------------------------------
    def writer_opened(self, writer: WriterThread, info: FileInfo) -> None:
        run = self._runs.get(writer)
        if run is None:
            return
        first = run.current is None
        run.current = info
        self.files_written += 1
        if first and not run.opened.done():
            run.opened.set_result(info)
        elif self._run is run:  # a new segment (or a start whose caller stopped waiting)
            self._broadcast()  # a new segment: viewers see the new name

    def writer_closed(self, writer: WriterThread, info: FileInfo) -> None:
        self._last = info

    def writer_failed(self, writer: WriterThread, message: str) -> None:
        run = self._runs.get(writer)
        if run is None or run.failed:
            return
        run.failed = True
        self._error = message
        if not run.opened.done():
            run.opened.set_exception(RecordError(message))
        elif self._run is run:
            task = asyncio.get_running_loop().create_task(self._abort(run, message), name="recorder-abort")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def writer_ended(self, writer: WriterThread) -> None:
        run = self._runs.get(writer)
        if run is None:
            return
        if not writer.stopping and not run.failed:  # it should never end unasked
            self.writer_failed(writer, "the recording writer stopped")
        del self._runs[writer]
        if not run.ended.done():
            run.ended.set_result(None)

    async def _abort(self, run: _Run, message: str) -> None:
        """A write failed or the disk is low: stop cleanly, tell every viewer, keep streaming."""
        async with self._lock:
            if self._run is not run:
                return
            self._error = message
            await self._end_run(run)
        log.error("recording stopped: %s", message)
        self._notify(error(f"recording stopped: {message}"))
        self._broadcast()
