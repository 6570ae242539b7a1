"""Small video files with machine-readable frame numbers, for file-source tests."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

CODE_BITS = 8
BACKGROUND_BGR = (150, 90, 30)  # a colour no "no signal" picture has


def _code_rows(height: int) -> slice:
    return slice(height * 2 // 5, height * 3 // 5)


def draw_frame(index: int, width: int, height: int) -> np.ndarray:
    """A picture with `index` written as text and as CODE_BITS black/white cells across the middle."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND_BGR
    rows = _code_rows(height)
    for i in range(CODE_BITS):
        if index >> (CODE_BITS - 1 - i) & 1:
            image[rows, i * width // CODE_BITS : (i + 1) * width // CODE_BITS] = 255
        else:
            image[rows, i * width // CODE_BITS : (i + 1) * width // CODE_BITS] = 0
    cv2.putText(image, f"frame {index}", (10, height - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                (255, 255, 255), 2, cv2.LINE_AA)
    return image


def read_frame_index(image: np.ndarray) -> int:
    """The number draw_frame wrote (read from the cell centres, so JPEG and H.264 noise do not matter)."""
    height, width = image.shape[:2]
    rows = _code_rows(height)
    gray = image[rows].mean(axis=2)
    index = 0
    for i in range(CODE_BITS):
        x0, x1 = i * width // CODE_BITS, (i + 1) * width // CODE_BITS
        cell = gray[:, x0 + (x1 - x0) // 4 : x1 - (x1 - x0) // 4]
        index = index << 1 | int(cell.mean() > 128)
    return index


def make_video(path: Path, seconds: float = 2.0, width: int = 320, height: int = 240, fps: int = 15) -> Path:
    """Write an H.264 MP4 whose frame i shows the number i (see read_frame_index)."""
    frames = round(seconds * fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"preset": "ultrafast", "g": str(fps)}
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(draw_frame(index, width, height), format="bgr24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def looks_like_no_signal(image: np.ndarray) -> bool:
    """The server's "no signal" picture: a flat dark grey (40) under the stamp band."""
    body = image[16:]
    return bool(np.abs(np.median(body.reshape(-1, 3), axis=0) - 40).max() <= 6)
