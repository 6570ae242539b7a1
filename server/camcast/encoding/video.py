"""The shared video encoder: one H.264 (or VP8) encode per frame for every peer and the recorder."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import av
import cv2
from av.video.frame import PictureType

from camcast.encoding.lazy import LazyWorker, encode_frames
from camcast.frames import EncodedPacket, Frame
from camcast.histogram import ENCODE_SECONDS_BUCKETS, Histogram
from camcast.hub import Hub

log = logging.getLogger("camcast.encoding")

VIDEO_TIME_BASE = Fraction(1, 90000)
KEYFRAME_REQUEST_MIN_INTERVAL = 0.5  # seconds: many peers asking at once yield one keyframe


def _open_context(codec: str, width: int, height: int, fps: float, keyframe_interval: float,
                  bitrate: int, buffer_seconds: float = 1.0) -> av.VideoCodecContext:
    """`buffer_seconds` of the bitrate is the most one frame (a keyframe) may take: a rendition for
    poor links keeps its keyframes small enough to pass a shallow router queue whole."""
    gop = max(1, round(fps * keyframe_interval))
    buffer_kbit = max(1, round(bitrate * buffer_seconds / 1000))
    if codec == "h264":
        ctx = av.CodecContext.create("libx264", "w")
        ctx.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "profile": "baseline",  # x264's baseline is constrained baseline: what every browser decodes
            # In-band SPS/PPS before every IDR (repeat-headers), fixed GOP, no scene-cut keyframes,
            # no B-frames; a VBV of at most a second keeps frame sizes even for low latency.
            "x264-params": (
                f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:repeat-headers=1:annexb=1"
                f":vbv-maxrate={bitrate // 1000}:vbv-bufsize={buffer_kbit}"
            ),
        }
    elif codec == "vp8":
        ctx = av.CodecContext.create("libvpx", "w")
        ctx.options = {
            "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "error-resilient": "1",
            "auto-alt-ref": "0", "kf-max-dist": str(gop),
            # A keyframe may take this % of an average frame's bits: the same cap as H.264's VBV.
            "max-intra-rate": str(max(100, round(buffer_seconds * fps * 100))),
        }
    else:
        raise ValueError(f"unknown codec {codec!r}")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = VIDEO_TIME_BASE
    ctx.framerate = Fraction(round(fps * 1000), 1000)
    ctx.gop_size = gop
    ctx.max_b_frames = 0
    ctx.bit_rate = bitrate
    ctx.open()
    return ctx


class SharedVideoEncoder:
    """Encodes the frame hub into a packet hub while anyone subscribes to the packets."""

    def __init__(self, codec: str, frames: Hub[Frame], output: Hub[EncodedPacket], fps: float,
                 keyframe_interval: float = 2.0, bitrate: int = 2_000_000, scale: float = 1.0,
                 epoch_us: int | None = None, name: str | None = None,
                 max_fps: float | None = None, buffer_seconds: float = 1.0) -> None:
        self.codec = codec
        self.name = name or codec  # e.g. "h264", or "h264-medium" for a lower rendition
        self.scale = scale  # of the captured size: renditions below the top one are scaled down
        # pts count from this capture time: every rendition of a camera shares it, so a viewer moved
        # from one to another sees continuous timestamps.
        self._epoch_us = epoch_us
        # Below the capture rate (a rendition for poor links): frames are skipped to keep to it.
        self._frame_interval_us = int(1e6 / max_fps) if max_fps else 0
        self.frames = frames
        self.output = output
        self.fps = fps
        self.keyframe_interval = keyframe_interval
        self.bitrate = bitrate
        self.buffer_seconds = buffer_seconds
        self.frames_encoded = 0
        self.keyframes = 0
        self.encode_time = Histogram(ENCODE_SECONDS_BUCKETS)  # per-frame seconds, for /metrics
        self.errors = 0
        self.restarts = 0
        self._failing = False  # the last frame failed: log the next success, not every failure
        self._ctx: av.VideoCodecContext | None = None
        self._generation = 0
        self._last_pts = -1
        self._next_due_us = 0  # frames before this are skipped (a rendition below the capture rate)
        self._force_keyframe = False
        self._keyframe_deferred = False
        self._last_forced = 0.0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"camcast-{self.name}")
        self.worker = LazyWorker(f"{self.name}-encoder", output, self._run)

    @property
    def running(self) -> bool:
        return self.worker.running

    @property
    def starts(self) -> int:
        """How often the encoder started (lazily, on a first subscriber) since the app began."""
        return self.worker.starts

    def force_keyframe(self, urgent: bool = False) -> bool:
        """Ask for an IDR on the next frame (new peer, PLI/FIR, recording start); rate-limited.

        Requests within KEYFRAME_REQUEST_MIN_INTERVAL of the last forced keyframe are merged into
        one deferred keyframe at the end of that window, so many peers joining at once cost one
        IDR and none of them waits for the regular keyframe interval. `urgent` (a recording
        start, which must begin at the press) skips the window. Returns True when a keyframe is
        due on the next frame.
        """
        now = time.monotonic()
        if self._force_keyframe:
            return True
        if urgent or now - self._last_forced >= KEYFRAME_REQUEST_MIN_INTERVAL:
            self._last_forced = now
            self._force_keyframe = True
            return True
        self._keyframe_deferred = True
        return False

    def _take_keyframe_request(self) -> bool:
        if not self._force_keyframe and self._keyframe_deferred and (
            time.monotonic() - self._last_forced >= KEYFRAME_REQUEST_MIN_INTERVAL
        ):
            self._keyframe_deferred = False
            self._last_forced = time.monotonic()
            return True
        taken, self._force_keyframe = self._force_keyframe, False
        return taken

    # -- encoder thread ---------------------------------------------------------------------
    def _encode(self, frame: Frame) -> list[EncodedPacket]:
        """Encode one frame. Any failure drops that frame and reopens the encoder on the next one:
        a new generation that starts with a keyframe, on which every peer resyncs."""
        try:
            packets = self._encode_frame(frame)
        except Exception as exc:  # FFmpegError, or a picture OpenCV or the codec cannot take
            self.errors += 1
            self._ctx = None
            if not self._failing:
                self._failing = True
                log.error("%s encoder error, restarting it: %s", self.name, exc,
                          extra={"event": "encoder_error", "encoder": self.name})
            return []
        if self._failing:
            self._failing = False
            log.info("%s encoder recovered (%d errors so far)", self.name, self.errors)
        return packets

    def _encode_frame(self, frame: Frame) -> list[EncodedPacket]:
        if self._frame_interval_us:
            if frame.captured_us < self._next_due_us:
                return []  # this rendition runs at a lower frame rate than the capture
            # From the due time, with slack for capture jitter (as MJPEG's ?fps=N does).
            interval = self._frame_interval_us
            self._next_due_us = max(self._next_due_us + interval, frame.captured_us + interval // 2)
        started = time.perf_counter()
        image = frame.image
        if self.scale != 1.0:
            width = max(16, round(frame.width * self.scale) & ~1)
            height = max(16, round(frame.height * self.scale) & ~1)
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        else:
            # 4:2:0 needs an even width and height: a camera or file with an odd size loses one line.
            width, height = frame.width & ~1, frame.height & ~1
            if (width, height) != (frame.width, frame.height):
                image = image[:height, :width]
        ctx = self._ctx
        if ctx is None or ctx.width != width or ctx.height != height:
            if ctx is not None:
                log.info("%s encoder: size changed to %dx%d, restarting", self.name, width, height)
            ctx = self._restart(width, height)
        yuv = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
        picture = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        if self._epoch_us is None:
            self._epoch_us = frame.captured_us
        # pts from the capture clock: no drift, and strictly increasing even if the clock steps.
        pts = max(self._last_pts + 1, (frame.captured_us - self._epoch_us) * 9 // 100)
        self._last_pts = pts
        picture.pts = pts
        picture.time_base = VIDEO_TIME_BASE
        if self._take_keyframe_request():
            picture.pict_type = PictureType.I
        packets = ctx.encode(picture)
        out = []
        for packet in packets:
            packet.time_base = VIDEO_TIME_BASE
            if packet.is_keyframe:
                self.keyframes += 1
            out.append(EncodedPacket(packet, self.codec, packet.is_keyframe, frame.seq,
                                     frame.captured_us, width, height, self._generation))
        self.frames_encoded += 1
        elapsed = time.perf_counter() - started
        self.encode_time.observe(elapsed)
        return out

    def _restart(self, width: int, height: int) -> av.VideoCodecContext:
        self._generation += 1
        self.restarts += 1
        self._ctx = _open_context(self.codec, width, height, self.fps, self.keyframe_interval,
                                  self.bitrate, self.buffer_seconds)
        return self._ctx

    async def _run(self) -> None:
        # Each run starts a new chain on a keyframe (a fresh context begins with an IDR).
        self._ctx = None
        self._next_due_us = 0
        await encode_frames(self.frames, self._executor, self._encode, self._publish_all)

    def _publish_all(self, packets: list[EncodedPacket]) -> None:
        for packet in packets:
            self.output.publish(packet)

    async def close(self) -> None:
        await self.worker.close()
        # Wait (off the loop) for a frame still encoding: its codec context is freed only after.
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self._executor.shutdown, wait=True, cancel_futures=True))
        self._ctx = None
