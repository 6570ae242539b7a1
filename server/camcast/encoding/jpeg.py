"""The shared JPEG encoder: one encode per frame, the same bytes for every MJPEG client.

A camera has one at its own size and quality, and one per live MJPEG variant (a smaller width,
another quality) that clients ask for with `?width=` and `?quality=`.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from camcast.encoding.lazy import LazyWorker, encode_frames
from camcast.frames import Frame, JpegPart
from camcast.histogram import ENCODE_SECONDS_BUCKETS, Histogram
from camcast.hub import Hub

BOUNDARY = "frame"


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def scale_to_width(image: np.ndarray, width: int) -> np.ndarray:
    """`image` shrunk to `width` (aspect kept, even height); never enlarged."""
    height, current = image.shape[:2]
    if current <= width:
        return image
    scaled_height = max(2, round(height * width / current / 2) * 2)
    # INTER_AREA averages the pixels it drops: no aliasing in the smaller picture.
    return cv2.resize(image, (width, scaled_height), interpolation=cv2.INTER_AREA)


def mjpeg_chunk(jpeg: bytes, captured_us: int) -> bytes:
    """One multipart part, ending with the next boundary so browsers show it at once."""
    head = (
        f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
        f"X-Timestamp: {captured_us / 1e6:.6f}\r\n\r\n"
    ).encode()
    return head + jpeg + f"\r\n--{BOUNDARY}\r\n".encode()


class SharedJpegEncoder:
    def __init__(self, frames: Hub[Frame], output: Hub[JpegPart], quality: int, width: int | None = None,
                 name: str = "jpeg") -> None:
        self.frames = frames
        self.output = output
        self.quality = quality
        self.width = width  # frames wider than this are scaled down first; None keeps their size
        self.name = name
        self.frames_encoded = 0
        self.encode_time = Histogram(ENCODE_SECONDS_BUCKETS)  # per-frame seconds, for /metrics
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="camcast-jpeg")
        # The snapshot of one frame (by seq), finished or in flight: pollers of that frame share it.
        self._snapshot: tuple[int, asyncio.Future[JpegPart]] | None = None
        self.worker = LazyWorker(f"{name}-encoder", output, self._run)

    @property
    def running(self) -> bool:
        return self.worker.running

    def _encode(self, frame: Frame) -> JpegPart:
        started = time.perf_counter()
        image = frame.image if self.width is None else scale_to_width(frame.image, self.width)
        jpeg = encode_jpeg(image, self.quality)
        elapsed = time.perf_counter() - started
        self.encode_time.observe(elapsed)
        self.frames_encoded += 1
        chunk = mjpeg_chunk(jpeg, frame.captured_us)
        http_chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
        return JpegPart(jpeg, chunk, http_chunk, frame.seq, frame.captured_us)

    async def _run(self) -> None:
        await encode_frames(self.frames, self._executor, self._encode, self.output.publish)

    async def snapshot(self) -> JpegPart | None:
        """The newest frame as JPEG: reuse the shared encode when it is current, else encode it
        once for every request that asks for the same frame."""
        frame = self.frames.latest
        latest = self.output.latest
        if frame is None:
            return None
        if latest is not None and latest.seq == frame.seq:
            return latest
        cached = self._snapshot
        if cached is None or cached[0] != frame.seq:
            future = asyncio.get_running_loop().run_in_executor(self._executor, self._encode, frame)
            cached = self._snapshot = (frame.seq, future)
        return await asyncio.shield(cached[1])  # one request that gives up must not cancel the rest

    async def close(self) -> None:
        await self.worker.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
