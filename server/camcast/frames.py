"""The items that flow through the hubs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np


def now_us() -> int:
    """Wall-clock time in microseconds since the Unix epoch (the frame-stamp clock)."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded picture (BGR), its sequence number and its capture time."""

    image: np.ndarray
    seq: int
    captured_us: int
    live: bool = True  # False for the "no signal" pictures shown while the source is down

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class JpegPart:
    """One JPEG, plus the MJPEG multipart part built from it once for every client.

    `chunk` is the multipart part; `http_chunk` is the same bytes already framed as one HTTP/1.1
    chunk, so the MJPEG fan-out writes the identical buffer to every socket without copying.
    """

    jpeg: bytes
    chunk: bytes
    http_chunk: bytes
    seq: int
    captured_us: int


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One whole encoded video frame, shared by every WebRTC peer and the recorder.

    `packet` is an av.Packet with pts (90 kHz, from the capture time) and time_base set; for
    H.264 it is an Annex B access unit with SPS/PPS in-band before every IDR.
    """

    packet: Any  # av.Packet (kept as Any: frames.py does not import av)
    codec: str  # "h264" or "vp8"
    keyframe: bool
    seq: int
    captured_us: int
    width: int
    height: int
    generation: int  # bumps when the encoder restarts (new size, error): a new GOP chain begins
