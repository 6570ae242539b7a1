"""Motion events of one camera, on the event loop: the worker's transitions become saved events,
data-channel messages, webhook posts and (with `motion_record`) recordings.

Transitions are handled one at a time, in order, by one task: an event's start (which may wait for
its recording to open) is always handled before its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camcast.control import ControlBus, Message
from camcast.frames import Frame, now_us
from camcast.hub import Hub
from camcast.motion.detector import MotionSettings
from camcast.motion.model import EventRecording, MotionEvent
from camcast.motion.store import EventStore
from camcast.motion.worker import Delivery, MotionWorker

if TYPE_CHECKING:
    from camcast.recorder import Recorder

log = logging.getLogger("camcast.motion")

DEFAULT_PREROLL = 3.0  # s of pre-roll a motion recording gets when --preroll is 0
RETENTION_EVERY = 600.0  # s between deletions of events older than the recordings' keep_days


class MotionService:
    def __init__(self, camera: str, settings: MotionSettings | None, record: bool, folder: Path,
                 frames: Hub[Frame], recorder: Recorder, control: ControlBus) -> None:
        self.camera = camera
        self.settings = settings
        self.record = record and settings is not None
        self.recorder = recorder
        self.control = control
        self.store = EventStore(folder) if settings is not None else None
        self.worker = (MotionWorker(camera, frames, settings, self._delivered)
                       if settings is not None else None)
        self.webhooks: list[Callable[[Message], None]] = []  # set by the app
        self.current: MotionEvent | None = None
        self.events_total = 0
        self._queue: asyncio.Queue[list[Delivery] | None] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._stop_recording: asyncio.Task[None] | None = None
        self._deleted: set[str] = set()  # deleted while under way: not saved again
        self._retention: asyncio.Task[None] | None = None
        control.add_greeter(self.greeting)

    @property
    def enabled(self) -> bool:
        return self.settings is not None

    @property
    def active(self) -> bool:
        return self.current is not None

    @property
    def score(self) -> float:
        return self.worker.score if self.worker is not None else 0.0

    # -- lifetime --------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.store is None or self.worker is None:
            return
        closed = await self.store.open()
        if closed:
            log.info("camera %s: %d motion event(s) left open by a crash ended at their last update",
                     self.camera, closed)
        self._consumer = asyncio.get_running_loop().create_task(self._consume(), name=f"motion-{self.camera}")
        keep_days = self.recorder.settings.keep_days
        if keep_days > 0:
            self._retention = asyncio.get_running_loop().create_task(
                self._retention_loop(keep_days), name=f"motion-retention-{self.camera}")
        self.worker.start()

    async def stop(self) -> None:
        if self.store is None or self.worker is None:
            return
        await self.worker.stop()  # an open event ends: its transition is on its way to the queue
        await asyncio.sleep(0)
        self._queue.put_nowait(None)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer
        if self._stop_recording is not None:
            self._stop_recording.cancel()
        if self._retention is not None:
            self._retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention
        await self.store.close()

    async def _retention_loop(self, keep_days: float) -> None:
        """Events go with the recordings' age limit (`keep_days`), checked now and then."""
        assert self.store is not None
        while True:
            try:
                deleted = await self.store.prune(now_us() - int(keep_days * 86_400e6))
            except Exception as exc:  # a locked or broken file must not end the camera
                log.warning("camera %s: motion event retention failed: %s", self.camera, exc)
            else:
                if deleted:
                    log.info("camera %s: %d motion event(s) older than %g days deleted", self.camera,
                             deleted, keep_days)
            await asyncio.sleep(RETENTION_EVERY)

    # -- state -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The "motion" part of /api/status and /api/cameras."""
        return {"enabled": self.enabled, "active": self.active,
                "event": self.current.to_json() if self.current is not None else None}

    def message(self, state: str, event: MotionEvent) -> Message:
        return {"type": "motion", "state": state, "event": event.to_json()}

    def greeting(self) -> Message | None:
        """A peer that joins during an event hears that it started."""
        return self.message("start", self.current) if self.current is not None else None

    async def delete(self, event_id: str) -> bool:
        """Delete a saved event; one under way is not saved again (it is still announced)."""
        if self.store is None:
            return False
        if self.current is not None and self.current.id == event_id:
            self._deleted.add(event_id)
        return await self.store.delete(event_id)

    async def _save(self, event: MotionEvent, thumbnail: bytes | None) -> None:
        assert self.store is not None
        if event.id not in self._deleted:
            await self.store.save(event, thumbnail)
        if event.end_us is not None:
            self._deleted.discard(event.id)

    # -- transitions (on the loop) -----------------------------------------------------------------
    def _delivered(self, deliveries: list[Delivery]) -> None:
        self._queue.put_nowait(deliveries)

    async def _consume(self) -> None:
        while (deliveries := await self._queue.get()) is not None:
            for delivery in deliveries:
                try:
                    await self._handle(delivery)
                except Exception:
                    log.exception("camera %s: motion event %s not handled", self.camera,
                                  delivery.transition.id)

    async def _handle(self, delivery: Delivery) -> None:
        t = delivery.transition
        stamp = now_us()
        if t.kind == "start":
            recording = await self._recording_for(t.start_us)
            event = MotionEvent(t.id, self.camera, t.start_us, None, t.peak, t.box, recording, stamp)
            await self._save(event, delivery.thumbnail)  # saved before anyone hears of it
            self.current = event
            self.events_total += 1
            log.info("camera %s: motion event %s started (%.2f %% of the picture)", self.camera, t.id, t.peak)
            self._announce("start", event)
            return
        previous = self.current if self.current is not None and self.current.id == t.id else None
        recording = previous.recording if previous is not None else None
        event = MotionEvent(t.id, self.camera, t.start_us, t.end_us, t.peak, t.box, recording, stamp)
        await self._save(event, delivery.thumbnail)
        if t.kind == "update":
            self.current = event
            return
        self.current = None
        log.info("camera %s: motion event %s ended after %.1f s", self.camera, t.id,
                 ((t.end_us or t.start_us) - t.start_us) / 1e6)
        self._announce("end", event)
        if self.record:
            self._schedule_recording_stop((t.end_us or stamp) + int(self.settings.post_roll * 1e6)
                                          if self.settings else stamp)

    def _announce(self, state: str, event: MotionEvent) -> None:
        message = self.message(state, event)
        self.control.broadcast(message)
        for post in self.webhooks:
            post(message)

    # -- recordings ---------------------------------------------------------------------------------
    async def _recording_for(self, start_us: int) -> EventRecording | None:
        """The recording that holds an event starting at `start_us`: the one going on (a manual one
        absorbs the event), or, with motion_record, one started now with its pre-roll."""
        if self._stop_recording is not None:
            self._stop_recording.cancel()  # the motion recording goes on for this event too
            self._stop_recording = None
        recorder = self.recorder
        if self.record and not recorder.recording:
            try:
                await recorder.start(by_motion=True)
            except Exception as exc:  # no disk, no video: the event is still an event
                log.error("camera %s: cannot record the motion event: %s", self.camera, exc)
        files = recorder.active_files()
        if not files:
            return None
        name, (file_start_us, _, _) = next(iter(files.items()))
        return EventRecording(name, max(0.0, (start_us - file_start_us) / 1e6))

    def _schedule_recording_stop(self, at_us: int) -> None:
        if self._stop_recording is not None:
            self._stop_recording.cancel()
        self._stop_recording = asyncio.get_running_loop().create_task(
            self._stop_recording_at(at_us), name=f"motion-record-stop-{self.camera}")

    async def _stop_recording_at(self, at_us: int) -> None:
        await asyncio.sleep(max(0.0, (at_us - now_us()) / 1e6))
        # A recording someone started (or took over by pressing record) is theirs to stop.
        if self.current is None and self.recorder.recording and self.recorder.started_by_motion:
            log.info("camera %s: motion recording stops (post-roll over)", self.camera)
            # Shielded: a new event (or shutdown) cancelling this task mid-stop must not leave the
            # file unfinished or the viewers' REC badge on.
            await asyncio.shield(self.recorder.stop())


def with_default_preroll(preroll: float, motion_record: bool, recorder: str) -> float:
    """A motion recording starts before the motion: without --preroll it gets DEFAULT_PREROLL s."""
    return DEFAULT_PREROLL if motion_record and preroll == 0 and recorder == "mp4" else preroll

