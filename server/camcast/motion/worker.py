"""The detection thread of one camera: the newest frame at the motion rate, downsized, detected, tracked.

The thread reads `frames.latest` (a reference read) at its own rate; the camera's frames hub knows it
as a subscriber (held by the loop), which is demand: an on-demand camera stays open while motion
detection runs. Transitions, with their thumbnails already encoded, go to the loop through
`loop.call_soon_threadsafe`. The event loop never does image work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from camcast.frames import Frame, now_us
from camcast.hub import Hub, HubClosed, Subscription
from camcast.motion.detector import MotionDetector, MotionSample, MotionSettings, to_small_gray
from camcast.motion.events import EventTracker, Transition
from camcast.threadname import name_native_thread

log = logging.getLogger("camcast.motion")

THUMBNAIL_WIDTH = 320
THUMBNAIL_QUALITY = 80
STALL_SECONDS = 1.0  # no new frame for this long: time still passes for an open event


@dataclass(frozen=True)
class Delivery:
    transition: Transition
    thumbnail: bytes | None  # JPEG with the box drawn, when the peak picture changed


def thumbnail_jpeg(picture: np.ndarray, box: tuple[float, float, float, float] | None) -> bytes | None:
    image = picture.copy()
    if box is not None:
        height, width = image.shape[:2]
        x, y, w, h = box
        thickness = max(2, width // 160)
        cv2.rectangle(image, (round(x * width), round(y * height)),
                      (round((x + w) * width) - 1, round((y + h) * height) - 1), (0, 0, 255), thickness)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_QUALITY])
    return jpeg.tobytes() if ok else None


def small_copy(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    if width <= THUMBNAIL_WIDTH:
        return image.copy()
    size = (THUMBNAIL_WIDTH, max(1, round(height * THUMBNAIL_WIDTH / width)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class MotionWorker:
    def __init__(self, name: str, frames: Hub[Frame], settings: MotionSettings,
                 deliver: Callable[[list[Delivery]], None]) -> None:
        self.name = name
        self.frames = frames
        self.settings = settings
        self._deliver = deliver  # called on the loop
        self.detector = MotionDetector(settings)
        self.tracker = EventTracker(settings)
        self.score = 0.0  # the latest sample's, for /metrics
        self.samples = 0
        self.busy_seconds = 0.0  # thread CPU spent detecting
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sub: Subscription[Frame] | None = None
        self._drain: asyncio.Task[None] | None = None

    def start(self) -> None:
        """On the loop: subscribe (demand) and start the thread."""
        self._loop = asyncio.get_running_loop()
        self._sub = self.frames.subscribe(maxsize=1)
        self._drain = self._loop.create_task(self._drain_frames(self._sub), name=f"motion-{self.name}")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"motion-{self.name}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """On the loop: stop the thread (an open event ends and is delivered), then the demand."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
            self._drain = None

    @staticmethod
    async def _drain_frames(sub: Subscription[Frame]) -> None:
        # The subscription is the demand; the thread reads the hub's newest frame itself.
        with contextlib.suppress(HubClosed):
            while True:
                await sub.get()

    # -- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        name_native_thread()  # ps and /proc show which thread this is
        period = 1.0 / self.settings.fps
        due = time.monotonic()
        last_seq = -1
        last_new = time.monotonic()
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            due = max(due + period, time.monotonic())
            frame = self.frames.latest
            try:
                if frame is not None and frame.live and frame.seq != last_seq:
                    last_seq, last_new = frame.seq, time.monotonic()
                    self._sample(frame)
                elif self.tracker.active is not None and time.monotonic() - last_new > STALL_SECONDS:
                    # The source stalled or went down: no motion is seen, so the event can end.
                    self._hand_over(self.tracker.feed(MotionSample(0.0, None), now_us()))
            except Exception:  # never let one bad frame end detection for good
                log.exception("motion detection failed on a frame of camera %s", self.name)
        self._hand_over(self.tracker.close(now_us()))

    def _sample(self, frame: Frame) -> None:
        started = time.thread_time()
        gray = to_small_gray(frame.image, self.settings.width)
        sample = self.detector.feed(gray, frame.captured_us)
        self.score = sample.score
        self.samples += 1
        transitions = self.tracker.feed(sample, frame.captured_us, lambda: small_copy(frame.image))
        self._hand_over(transitions)
        self.busy_seconds += time.thread_time() - started

    def _hand_over(self, transitions: list[Transition]) -> None:
        if not transitions or self._loop is None:
            return
        deliveries = [Delivery(t, thumbnail_jpeg(t.picture, t.box) if t.picture is not None else None)
                      for t in transitions]
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._deliver, deliveries)

