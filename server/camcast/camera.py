"""Everything that belongs to one camera: source, hubs, encoders, viewers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from camcast.encoding.jpeg import SharedJpegEncoder
from camcast.encoding.video import SharedVideoEncoder
from camcast.fpsmeter import FpsMeter
from camcast.frames import EncodedPacket, Frame, JpegPart
from camcast.hub import Hub
from camcast.sources.base import Source
from camcast.sources.supervisor import CaptureSupervisor
from camcast.viewers import Viewers


@dataclass(frozen=True)
class StreamSettings:
    name: str
    source: str  # the resolved --source spec (the running source adds its own description)
    width: int
    height: int
    fps: float
    jpeg_quality: int
    keyframe_interval: float = 2.0
    bitrate: int = 2_000_000


class Stream:
    def __init__(self, settings: StreamSettings, make_source: Callable[[], Source]) -> None:
        self.settings = settings
        self.frames: Hub[Frame] = Hub("frames")
        self.jpeg: Hub[JpegPart] = Hub("jpeg")
        self.viewers = Viewers()
        self.fps_meter = FpsMeter()
        self.started_monotonic = time.monotonic()
        self.jpeg_encoder = SharedJpegEncoder(self.frames, self.jpeg, settings.jpeg_quality)
        # One packet hub and one lazily started shared encoder per codec.
        self.packets: dict[str, Hub[EncodedPacket]] = {c: Hub(f"{c}-packets") for c in ("h264", "vp8")}
        self.video_encoders = {
            codec: SharedVideoEncoder(codec, self.frames, hub, settings.fps,
                                      settings.keyframe_interval, settings.bitrate)
            for codec, hub in self.packets.items()
        }
        self._make_source = make_source
        self._loop: asyncio.AbstractEventLoop | None = None
        self.capture: CaptureSupervisor | None = None

    # The capture thread hands each frame to the loop once; the hub fans it out there.
    def _publish_from_thread(self, frame: Frame) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._publish, frame)
            except RuntimeError:  # loop closing during shutdown
                pass

    def _publish(self, frame: Frame) -> None:
        if frame.live:  # the measured rate is the source's, not the "no signal" ticker's
            self.fps_meter.tick()
        self.frames.publish(frame)

    async def start_capture(self) -> None:
        self._loop = asyncio.get_running_loop()
        s = self.settings
        self.capture = CaptureSupervisor(self._make_source, self._publish_from_thread,
                                         s.width, s.height, s.fps)
        self.capture.start()

    async def stop_capture(self) -> None:
        if self.capture is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.capture.stop)
        self.frames.close()

    @property
    def source_up(self) -> bool:
        return self.capture is not None and self.capture.up

    @property
    def healthy(self) -> bool:
        """The source is up (it delivered a frame since it opened) and its frames still flow
        (within the watchdog's limit, which scales with slow frame rates)."""
        capture = self.capture
        if capture is None or not capture.up:
            return False
        latest = self.frames.latest
        if latest is None or not latest.live:
            return False  # its first frame has not reached the hub yet
        return time.monotonic() - capture.last_frame_monotonic < capture.watchdog_seconds

    @property
    def current_size(self) -> tuple[int, int]:
        frame = self.frames.latest
        if frame is not None:
            return frame.width, frame.height
        return self.settings.width, self.settings.height

    def uptime(self) -> float:
        return time.monotonic() - self.started_monotonic
