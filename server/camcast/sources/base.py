"""What every source provides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class SourceError(Exception):
    """The source cannot be opened or has failed; the message says why."""


@dataclass(frozen=True, slots=True)
class JpegImage:
    """A picture the camera compressed itself: one complete JPEG, passed on unchanged."""

    data: bytes


@dataclass(frozen=True, slots=True)
class VideoPacket:
    """One access unit of the camera's own video stream, passed on without a re-encode.

    `data` is H.264 Annex B with SPS/PPS in front of every IDR. `captured_us` maps the stream's
    own clock to the capture clock. `picture` is the decoded frame, present only while something
    needs pictures (MJPEG, snapshots, other renditions).
    """

    data: bytes
    codec: str
    keyframe: bool
    captured_us: int
    width: int
    height: int
    parameters: bytes  # the stream's SPS+PPS: a change starts a new chain (new file, resync)
    opened_us: int  # when the source opened: a reconnect starts a new chain too
    picture: np.ndarray | None = None


class Source(Protocol):
    """A blocking producer, read from its own capture thread: decoded frames (numpy BGR), or what
    the camera compressed itself (JpegImage, VideoPacket)."""

    description: str
    stamps: bool  # True when the frame stamp is drawn on every frame

    def open(self) -> None:
        """Open the device/file/stream; raise SourceError if it cannot be opened."""

    def read(self) -> np.ndarray | JpegImage | VideoPacket | None:
        """Block until the next frame (paced at the source's rate); None when the source failed."""

    def close(self) -> None:
        """Release the device; safe to call twice."""
