"""A camera's capture: the supervisor's threads, run always or only while something needs frames.

Demand is read from the frame hub itself: every consumer of pictures (the JPEG encoder, the video
encoders, a frame-based recorder, a snapshot waiting for a fresh frame) subscribes to it, and the
lazy encoders subscribe only while their own outputs have subscribers. So a camera with
`on_demand` opens its source when the first subscriber arrives and closes it `idle_timeout` seconds
after the last one leaves; starting and stopping never block the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from camcast.frames import Frame, JpegPart
from camcast.hub import Hub
from camcast.sources.base import Source, VideoPacket
from camcast.sources.supervisor import CaptureSupervisor

log = logging.getLogger("camcast.capture")


class Capture:
    def __init__(self, camera: str, make_source: Callable[[], Source], frames: Hub[Frame], width: int,
                 height: int, fps: float, on_demand: bool, idle_timeout: float,
                 on_frame: Callable[[Frame], None],
                 on_compressed: Callable[[JpegPart | VideoPacket], None] | None = None,
                 demand: Sequence[Hub[Any]] = ()) -> None:
        self._camera = camera
        self._make_source = make_source
        self._frames = frames
        self._size = (width, height)
        self._fps = fps
        self.on_demand = on_demand
        self.idle_timeout = idle_timeout
        self._on_frame = on_frame  # runs on the loop for every frame (before the hub gets it)
        # What the camera compressed itself (its JPEGs, its H.264) goes here, on the loop.
        self._on_compressed = on_compressed
        # Hubs fed from the source without a picture (the camera's own packets or JPEGs): their
        # subscribers are demand too.
        self._demand = [frames, *demand]
        self._loop: asyncio.AbstractEventLoop | None = None
        self.supervisor: CaptureSupervisor | None = None  # the running one; None while idle
        self._wanted = asyncio.Event()  # set when the desired state may differ from the actual one
        self._idle_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._past_reconnects = 0  # of supervisors stopped on idle
        self.opens = 0  # times the source was opened on demand (or once, always-on)
        self.last_started = 0.0  # monotonic time of the last start
        for hub in self._demand:
            hub.on_subscribers_changed(self._on_demand_changed)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._follow_demand(), name=f"capture-{self._camera}")
        self._wanted.set()

    async def stop(self) -> None:
        self._closing = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stop_supervisor()

    # -- state -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.supervisor is not None

    @property
    def idle(self) -> bool:
        """Closed because nobody needs it (on-demand cameras only)."""
        return self.on_demand and self.supervisor is None

    @property
    def reconnects(self) -> int:
        """Times the source was lost (not counting closes on idle)."""
        return self._past_reconnects + (self.supervisor.reconnects if self.supervisor else 0)

    def _needed(self) -> bool:
        return not self.on_demand or self._subscribers() > 0

    def _subscribers(self) -> int:
        return sum(hub.subscriber_count for hub in self._demand)

    def pictures_wanted(self) -> bool:
        """Whether anything needs decoded pictures (read from the capture thread: a plain int)."""
        return self._frames.subscriber_count > 0

    def _on_demand_changed(self, _count: int) -> None:
        if not self.on_demand or self._closing or self._loop is None:
            return
        count = self._subscribers()
        if count > 0:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            if self.supervisor is None:
                self._wanted.set()
        elif self.supervisor is not None and self._idle_timer is None:
            # Linger: a viewer who reloads the page, or a snapshot poller, finds it still open.
            self._idle_timer = self._loop.call_later(self.idle_timeout, self._idle_elapsed)

    def _idle_elapsed(self) -> None:
        self._idle_timer = None
        self._wanted.set()

    # -- the one task that opens and closes the source -------------------------------------------
    async def _follow_demand(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            if self._needed() and self.supervisor is None:
                self._start_supervisor()
            elif not self._needed() and self.supervisor is not None and self._idle_timer is None:
                log.info("camera %s: idle for %g s, closing the source", self._camera, self.idle_timeout,
                         extra={"event": "source_idle", "camera": self._camera})
                # Pictures from before the pause must not reach the next viewer as if they were new,
                # not even one who arrives while the old source is still being closed (its frames
                # are dropped from the moment the stop begins, before anything else runs).
                self._frames.forget_latest()
                await self._stop_supervisor()

    def _start_supervisor(self) -> None:
        width, height = self._size
        supervisor = CaptureSupervisor(self._make_source, self._publish_from_thread, width, height,
                                       self._fps, camera=self._camera, pictures_wanted=self.pictures_wanted)
        self.supervisor = supervisor
        self.opens += 1
        self.last_started = time.monotonic()
        if self.on_demand:
            log.info("camera %s: opening the source for a viewer", self._camera,
                     extra={"event": "source_wanted", "camera": self._camera})
        supervisor.start()

    async def _stop_supervisor(self) -> None:
        supervisor, self.supervisor = self.supervisor, None
        if supervisor is not None:
            self._past_reconnects += supervisor.reconnects
            # Joining the threads waits up to a second: never on the loop.
            await asyncio.get_running_loop().run_in_executor(None, supervisor.stop)

    # The capture thread hands each frame to the loop once; the hub fans it out there.
    def _publish_from_thread(self, item: Frame | JpegPart | VideoPacket) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._publish, item)
            except RuntimeError:  # loop closing during shutdown
                pass

    def _publish(self, item: Frame | JpegPart | VideoPacket) -> None:
        if self.supervisor is None:
            return  # an item still in flight from a supervisor that was stopped meanwhile
        if not isinstance(item, Frame):
            if self._on_compressed is not None:
                self._on_compressed(item)
            return
        self._on_frame(item)
        self._frames.publish(item)
