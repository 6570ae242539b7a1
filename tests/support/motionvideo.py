"""Test videos for motion detection, made with OpenCV: a static textured scene with sensor noise and
JPEG artefacts, an optional slow brightness ramp, and a bright yellow square (~2 % of the picture)
that crosses it at known times. The square is the only saturated colour in the picture, so a test
finds it in any decoded frame (`object_visible`) and so learns when the server's clock saw it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT = 320, 240
SIDE = 40  # 40x40 of 320x240: 2.1 % of the picture
OBJECT_Y = 100  # the square's top row while it crosses
SPEED = 100.0  # px per second, left to right
YELLOW = (0, 255, 255)  # BGR


@dataclass(frozen=True)
class Crossing:
    enters: float  # s into the video: its first column shows at the left edge
    y: int = OBJECT_Y

    @property
    def leaves(self) -> float:
        """When its last column leaves the right edge."""
        return self.enters + (WIDTH + SIDE) / SPEED


def scene(seed: int = 7) -> np.ndarray:
    """A mid-grey texture (blurred noise plus a few shapes): something for noise to hide in."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(60, 190, (HEIGHT // 4, WIDTH // 4), dtype=np.uint8)
    texture = cv2.resize(texture, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    texture = cv2.GaussianBlur(texture, (5, 5), 0)
    picture = cv2.cvtColor(texture, cv2.COLOR_GRAY2BGR)
    cv2.rectangle(picture, (20, 20), (90, 60), (70, 70, 70), -1)
    cv2.circle(picture, (250, 180), 30, (170, 170, 170), -1)
    return picture


def make_video(path: Path, seconds: float, crossings: Sequence[Crossing] = (), fps: float = 15.0,
               noise: float = 5.0, jpeg_quality: int = 40, ramp: float = 0.0, speedup: float = 1.0,
               seed: int = 7) -> Path:
    """Write `seconds` of the scene (mp4v). `ramp`: brightness swings ±ramp (a fraction) once over
    the video; `speedup`: the file says its frames come `speedup` times faster than they were
    made (a 60 s scene plays in 60/speedup s)."""
    rng = np.random.default_rng(seed + 1)
    base = scene(seed).astype(np.float32)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps * speedup, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    try:
        for index in range(round(seconds * fps)):
            t = index / fps
            gain = 1.0 + ramp * math.sin(2 * math.pi * t / seconds)
            picture = base * gain + rng.normal(0.0, noise, base.shape[:2])[..., None]
            frame = np.clip(picture, 0, 255).astype(np.uint8)
            for crossing in crossings:
                if crossing.enters <= t < crossing.leaves:
                    right = round((t - crossing.enters) * SPEED)
                    top_left, bottom_right = (right - SIDE, crossing.y), (right - 1, crossing.y + SIDE - 1)
                    cv2.rectangle(frame, top_left, bottom_right, YELLOW, -1)
            # A camera's compression: blocky artefacts that differ from frame to frame.
            ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            assert ok
            writer.write(cv2.imdecode(jpeg, cv2.IMREAD_COLOR))
    finally:
        writer.release()
    return path


def object_visible(image_bgr: np.ndarray, min_pixels: int = 40) -> bool:
    """Whether the yellow square (or enough of it) is in a decoded picture of any size."""
    b, g, r = (image_bgr[..., i].astype(np.int16) for i in range(3))
    yellow = (r > 170) & (g > 170) & (b < 110)
    scale = (image_bgr.shape[1] / WIDTH) ** 2
    return int(np.count_nonzero(yellow)) >= min_pixels * scale
