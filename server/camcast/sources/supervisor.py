"""Run a source in its own capture thread; reopen it with backoff when it fails or goes silent.

While the source is down, a ticker thread publishes "no signal" pictures at the configured
rate, so viewers see what is going on instead of a frozen or dead stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from camcast.encoding.jpeg import mjpeg_chunk
from camcast.frames import Frame, JpegPart, now_us
from camcast.sources.base import JpegImage, Source, SourceError, VideoPacket
from camcast.sources.nosignal import no_signal_image
from camcast.sources.pacing import Pacer
from camcast.stamp import write_stamp
from camcast.threadname import name_native_thread

log = logging.getLogger("camcast.source")

BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0)  # then every 10 s
# Capture threads stuck in a read() that never returns cannot be stopped, only abandoned: beyond
# this many, no new one starts until one of them comes back (a hung driver must not eat threads).
MAX_STUCK_READS = 3
# While a source is first opening, "no signal" pictures wait this long: a viewer who woke an
# on-demand camera should see its first real frame, not a "starting" card before it.
STARTUP_GRACE_SECONDS = 1.0


def silence_limit(fps: float) -> float:
    """Seconds without a frame after which a source counts as lost: 2 s, or three frame intervals
    for a source slower than 1.5 fps (it must not be dropped between two of its own frames)."""
    return max(2.0, 3.0 / fps)


class CaptureSupervisor:
    def __init__(
        self,
        make: Callable[[], Source],
        publish: Callable[[Frame | JpegPart | VideoPacket], None],
        width: int,
        height: int,
        fps: float,
        watchdog_seconds: float | None = None,
        camera: str = "default",
        pictures_wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        self.camera = camera  # names the camera in log lines (a server may run several)
        self._make = make
        self._publish = publish  # thread-safe hand-over to the hubs
        self._pictures_wanted = pictures_wanted  # a camera's own JPEGs are decoded only then
        self._fps = fps
        self.watchdog_seconds = silence_limit(fps) if watchdog_seconds is None else watchdog_seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._generation = 0
        self._seq = 0
        self._size = (width, height)
        self._no_signal_reason = "starting"
        self._ticker: threading.Thread | None = None
        self._captures: list[threading.Thread] = []
        self._capture_wanted = False  # the watchdog abandoned a capture thread: start another
        self._reading = False  # a source is open: the watchdog times its reads
        self._last_progress = 0.0  # when it opened or last delivered a frame
        self.up = False  # a source is open and has delivered a frame
        self.reconnects = 0
        self.frames_captured = 0
        self.last_frame_monotonic = 0.0  # the last real frame (never the "no signal" ticker's)
        self.description = ""

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, name="camcast-no-signal", daemon=True)
        self._ticker.start()
        self._start_capture()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop every thread, waiting at most `timeout` s in all (a read that hangs is left behind)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = [t for t in (self._ticker, *self._captures) if t is not None]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._ticker = None

    def _start_capture(self) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
            thread = threading.Thread(
                target=self._capture, args=(generation,), name=f"camcast-capture-{generation}",
                daemon=True,  # a hung driver read must not keep the process alive
            )
            self._captures = [t for t in self._captures if t.is_alive()]
            self._captures.append(thread)
        thread.start()

    def _abandon_capture(self) -> None:
        """The current capture thread is stuck: from now on nothing it reads is published."""
        with self._lock:
            self._generation += 1
        self._capture_wanted = True

    def _stuck_reads(self) -> int:
        with self._lock:
            return sum(1 for t in self._captures if t.is_alive())

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    # -- state -------------------------------------------------------------------------------
    def _set_reading(self, generation: int, description: str) -> None:
        with self._lock:
            if not self._current(generation):
                return
            self._reading = True
            self._last_progress = time.monotonic()
        self.description = description

    def _got_frame(self, generation: int) -> None:
        """A real frame arrived: the source is up from its first frame on, not from its open()."""
        now = time.monotonic()
        with self._lock:
            if not self._current(generation):
                return
            self.last_frame_monotonic = self._last_progress = now
            if self.up:
                return
            self.up = True
        log.info("camera %s: source found: %s", self.camera, self.description,
                 extra={"event": "source_found", "source": self.description, "camera": self.camera})

    def _set_down(self, generation: int, reason: str) -> None:
        with self._lock:
            if generation != self._generation:
                return
            was_up = self.up
            self.up = self._reading = False
            self._no_signal_reason = reason
        if was_up:
            self.reconnects += 1
            log.warning("camera %s: source lost: %s", self.camera, reason,
                        extra={"event": "source_lost", "reason": reason, "camera": self.camera})

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    # -- threads -----------------------------------------------------------------------------
    def _capture(self, generation: int) -> None:
        name_native_thread()
        failures = 0
        while self._current(generation):
            source = self._make()
            try:
                source.open()
            except SourceError as exc:
                self._set_down(generation, str(exc))
                if failures == 0:
                    log.warning("camera %s: source unavailable: %s; retrying with backoff", self.camera, exc)
                delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
                failures += 1
                source.close()
                self._stop.wait(delay)
                continue
            except Exception:  # a driver bug must not kill the capture thread
                log.exception("camera %s: source open crashed", self.camera)
                source.close()
                self._stop.wait(BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)])
                failures += 1
                continue
            failures = 0
            self._set_reading(generation, source.description)
            reason = "source stopped"
            try:
                while self._current(generation):
                    item = source.read()
                    captured = now_us()
                    if not self._current(generation):
                        break  # abandoned by the watchdog while read() hung, or stopping
                    if item is None:
                        reason = f"{source.description}: read failed"
                        break
                    image = self._hand_over(item, captured)
                    if image is not None:
                        if source.stamps:
                            write_stamp(image, captured)
                        self._size = (image.shape[1], image.shape[0])
                        self._publish(Frame(image, self._next_seq(), captured))
                    self.frames_captured += 1
                    self._got_frame(generation)
            except Exception as exc:
                reason = f"{source.description}: {exc}"
                log.exception("camera %s: source read crashed", self.camera)
            finally:
                source.close()
            if not self._current(generation):
                return
            self._set_down(generation, reason)
            self._stop.wait(BACKOFF_SECONDS[0])
            failures = 1

    def _hand_over(self, item: np.ndarray | JpegImage | VideoPacket, captured: int) -> np.ndarray | None:
        """Publish what the camera compressed itself as it is; return the picture to publish as a
        frame (a decoded one only while something needs pictures)."""
        if isinstance(item, VideoPacket):
            self._publish(item)
            if item.picture is not None:
                self._size = (item.picture.shape[1], item.picture.shape[0])
                self._publish(Frame(item.picture, self._next_seq(), item.captured_us))
            return None
        if isinstance(item, JpegImage):
            seq = self._next_seq()
            chunk = mjpeg_chunk(item.data, captured)
            self._publish(JpegPart(item.data, chunk, b"%x\r\n%b\r\n" % (len(chunk), chunk), seq, captured))
            if self._pictures_wanted():
                image = cv2.imdecode(np.frombuffer(item.data, np.uint8), cv2.IMREAD_COLOR)
                if image is not None:  # the same picture, under the same number, for snapshots
                    self._size = (image.shape[1], image.shape[0])
                    self._publish(Frame(image, seq, captured))
            return None
        return item

    def _tick(self) -> None:
        name_native_thread()
        started = time.monotonic()
        pacer = Pacer(self._fps)
        cached: tuple[tuple[int, int], str] | None = None
        background = None
        while not self._stop.is_set():
            pacer.wait()
            if self._reading and time.monotonic() - self._last_progress > self.watchdog_seconds:
                # A read() that hangs never returns to tell us: abandon that thread, start anew.
                self._set_down(self._generation, f"no frame for {self.watchdog_seconds:g} s")
                self._abandon_capture()
            if self._capture_wanted and not self._stop.is_set() and self._stuck_reads() < MAX_STUCK_READS:
                self._capture_wanted = False
                self._start_capture()
            if self.up or self._stop.is_set():
                continue
            if self._no_signal_reason == "starting" and time.monotonic() - started < STARTUP_GRACE_SECONDS:
                continue
            key = (self._size, self._no_signal_reason)
            if key != cached or background is None:
                background = no_signal_image(*self._size, self._no_signal_reason)
                cached = key
            image = background.copy()
            captured = now_us()
            write_stamp(image, captured)
            self._publish(Frame(image, self._next_seq(), captured, live=False))
