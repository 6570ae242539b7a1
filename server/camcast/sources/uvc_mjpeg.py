"""A UVC camera in MJPG mode: the JPEGs it compresses itself pass through, never decoded here.

OpenCV's V4L2 backend is asked for FOURCC MJPG with CAP_PROP_CONVERT_RGB off, so read() hands
back the driver's compressed buffer instead of a decoded picture. A camera that does not offer
MJPG at the asked size silently gives something else (raw YUYV, or a decoded picture); the
first frame is checked in open() so that is a clear error, not a stream of garbage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import cv2
import numpy as np

from camcast.sources.base import JpegImage, SourceError
from camcast.sources.multipart_jpeg import EOI, SOI

log = logging.getLogger("camcast.source")

MJPG = cv2.VideoWriter.fourcc(*"MJPG")
READ_TIMEOUT_MS = 5000  # a camera that stops sending makes read() return None, not hang


class Capture(Protocol):
    """What is used of cv2.VideoCapture (tests pass a fake)."""

    def isOpened(self) -> bool: ...
    def set(self, prop: int, value: float) -> bool: ...
    def get(self, prop: int) -> float: ...
    def read(self) -> tuple[bool, Any]: ...
    def release(self) -> None: ...


def open_v4l2(device: str | int) -> Capture:
    return cv2.VideoCapture(device, cv2.CAP_V4L2)


def fourcc_name(code: float) -> str:
    value = int(code)
    text = "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4))
    return text if value and text.isprintable() else f"0x{value:08x}"


def jpeg_bytes(buffer: Any) -> bytes | None:
    """The JPEG in a buffer read with CONVERT_RGB off; None when it holds something else."""
    if not isinstance(buffer, np.ndarray) or buffer.dtype != np.uint8 or buffer.ndim > 2:
        return None  # a decoded picture (H x W x 3): the backend did not pass the bytes through
    if buffer.ndim == 2 and buffer.shape[0] != 1:
        return None  # a grey or packed raw picture, not one row of compressed bytes
    data = buffer.tobytes()
    if not data.startswith(SOI):
        return None
    # Drivers may report the whole buffer, zero-filled past the picture: keep SOI..EOI.
    trimmed = data.rstrip(b"\x00")
    return trimmed if trimmed.endswith(EOI) else data


class UvcMjpegSource:
    """Source protocol (camcast.sources.base): open(), read() -> JpegImage | None, close()."""

    stamps = False  # the camera's own JPEGs are passed on untouched

    def __init__(self, device: str | int, width: int, height: int, fps: float,
                 open_capture: Callable[[str | int], Capture] = open_v4l2) -> None:
        self.device: str | int = int(device) if isinstance(device, str) and device.isdigit() else device
        self.width, self.height, self.fps = width, height, fps
        self.description = f"{device} (MJPG)"
        self.size = (0, 0)  # what the camera settled on (it may pick its nearest mode)
        self.last_error = ""  # why the last read() returned None
        self._open_capture = open_capture
        self._capture: Capture | None = None
        self._pending: bytes | None = None  # the first frame, read in open() to check it
        self._lock = threading.Lock()
        self._reading = False
        self._closed = False

    def open(self) -> None:
        capture = self._open_capture(self.device)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self.device}")
        try:
            self._pending = self._configure(capture)
        except BaseException:
            capture.release()
            raise
        with self._lock:
            if self._closed:
                capture.release()
                raise SourceError(f"{self.description}: closed")
            self._capture = capture

    def _configure(self, capture: Capture) -> bytes:
        wanted = f"{self.width}x{self.height}"
        # The format first: V4L2 applies the size to the pixel format that is set.
        capture.set(cv2.CAP_PROP_FOURCC, MJPG)
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        capture.set(cv2.CAP_PROP_FPS, self.fps)
        capture.set(cv2.CAP_PROP_CONVERT_RGB, 0)  # the compressed buffer, not a decoded picture
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
        capture.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS)
        fourcc = capture.get(cv2.CAP_PROP_FOURCC)
        self.size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if int(fourcc) != MJPG:
            raise SourceError(f"{self.device} does not do MJPG at {wanted} "
                              f"(it delivers {fourcc_name(fourcc)})")
        ok, buffer = capture.read()
        if not ok or buffer is None:
            raise SourceError(f"{self.device} opened but gave no frame")
        data = jpeg_bytes(buffer)
        if data is None:
            raise SourceError(f"{self.device} does not do MJPG at {wanted}: its frames are not JPEGs "
                              f"({_what(buffer)})")
        self.description = f"{self.device} (MJPG {self.size[0]}x{self.size[1]})"
        return data

    def read(self) -> JpegImage | None:
        with self._lock:
            capture = self._capture
            if capture is None or self._closed:
                return None
            if self._pending is not None:
                data, self._pending = self._pending, None
                return JpegImage(data)
            self._reading = True
        try:
            ok, buffer = capture.read()
        finally:
            with self._lock:
                self._reading = False
                closed = self._closed
            if closed:  # close() came while we read: releasing is ours to do
                self._release()
        if closed:
            return None
        if not ok or buffer is None:
            return self._failed(f"{self.description}: read failed")
        data = jpeg_bytes(buffer)
        if data is None:
            return self._failed(f"{self.description}: a frame that is not a JPEG ({_what(buffer)})")
        return JpegImage(data)

    def close(self) -> None:
        """Idempotent; from another thread during a read, the reader releases the device."""
        with self._lock:
            self._closed = True
            reading = self._reading
        if not reading:
            self._release()

    def _release(self) -> None:
        with self._lock:
            capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()

    def _failed(self, reason: str) -> None:
        self.last_error = reason
        log.warning("%s", reason)
        return None


def _what(buffer: Any) -> str:
    if isinstance(buffer, np.ndarray):
        return f"{buffer.shape} {buffer.dtype} starting {bytes(buffer.reshape(-1)[:4].tobytes())!r}"
    return type(buffer).__name__
