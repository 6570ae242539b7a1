"""Motion in a stream of small grayscale pictures: a running-average background, compared frame by frame.

Pure: no threads and no clock. The caller gives each picture its capture time, so a bench can feed
generated frames at simulated times and a camera its real ones.

Why a running average rather than MOG2: at a few samples per second on a 160 px copy both are cheap,
but the average with a time-based learning rate behaves the same at any sample rate, and with the
frame's brightness normalised against the background's it ignores slow light changes (a cloud, auto
exposure) while an object that walks through the picture still stands out for its whole way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[float, float, float, float]  # x, y, w, h in fractions 0..1 of the picture

BACKGROUND_SECONDS = 4.0  # time constant of the background: absorbs ramps, keeps a walker visible
FOREGROUND_SLOWDOWN = 8.0  # moving pixels teach the background this many times slower
SPECK_FRACTION = 0.0005  # regions smaller than this part of the picture are noise, not motion


@dataclass(frozen=True)
class MotionSettings:
    fps: float = 5.0  # samples per second
    width: int = 160  # width of the grayscale copy the detector looks at
    # 0..1: higher sees fainter differences. 0.8 (13 grey levels) finds objects of 1 % that 0.5 (25)
    # misses, and still made no false event on the bench's light ramps (0.9 did).
    sensitivity: float = 0.8
    min_area: float = 0.5  # percent of the picture that must move
    masks: tuple[Box, ...] = ()  # rectangles (fractions of the picture) where motion is ignored
    # s of persistent motion before an event starts: 0 is the first moving sample (a sample is
    # already a blurred, thresholded, opened difference of a fifth of a second).
    start_after: float = 0.0
    quiet: float = 5.0  # s without motion before an event ends
    post_roll: float = 5.0  # s a motion recording keeps going after the event's end

    @property
    def threshold(self) -> int:
        """The grey-level difference that counts as a change (sensitivity 0.8 → 13, 0.5 → 25)."""
        return round(5 + 40 * (1.0 - self.sensitivity))


@dataclass(frozen=True)
class MotionSample:
    score: float  # percent of the (unmasked) picture that moves
    box: Box | None  # bounding box of the moving regions, None when nothing moves


def to_small_gray(frame_bgr: np.ndarray, width: int) -> np.ndarray:
    """A `width`-wide grayscale copy (the aspect ratio kept), averaged down rather than sampled."""
    height, full_width = frame_bgr.shape[:2]
    if full_width > width:
        small_height = max(1, round(height * width / full_width))
        frame_bgr = cv2.resize(frame_bgr, (width, small_height), interpolation=cv2.INTER_AREA)
    if frame_bgr.ndim == 2:
        return frame_bgr
    return cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)


def mask_image(shape: tuple[int, int], masks: tuple[Box, ...]) -> np.ndarray | None:
    """255 where motion counts, 0 inside the masks; None without masks."""
    if not masks:
        return None
    height, width = shape
    keep = np.full((height, width), 255, np.uint8)
    for x, y, w, h in masks:
        x0, y0 = math.floor(x * width), math.floor(y * height)
        x1, y1 = math.ceil((x + w) * width), math.ceil((y + h) * height)
        keep[max(0, y0):min(height, y1), max(0, x0):min(width, x1)] = 0
    return keep


class MotionDetector:
    def __init__(self, settings: MotionSettings) -> None:
        self.settings = settings
        self._background: np.ndarray | None = None  # float32, blurred
        self._last_us = 0
        self._keep: np.ndarray | None = None
        self._counted = 1
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))

    def reset(self) -> None:
        self._background = None

    def feed(self, gray: np.ndarray, t_us: int) -> MotionSample:
        """Compare one small grayscale picture (uint8) captured at `t_us` with the background."""
        blurred = cv2.GaussianBlur(gray, (5, 5), 0).astype(np.float32)
        background = self._background
        if background is None or background.shape != blurred.shape:
            self._start(blurred, t_us)
            return MotionSample(0.0, None)
        dt = max(0.0, (t_us - self._last_us) / 1e6)
        self._last_us = t_us
        keep = self._keep
        # Light changes move the whole picture's brightness: scale it to the background's.
        frame_mean = cv2.mean(blurred, keep)[0]
        if frame_mean > 1.0:
            blurred *= cv2.mean(background, keep)[0] / frame_mean
        diff = cv2.absdiff(blurred, background)
        moving = (diff > self.settings.threshold).astype(np.uint8) * 255
        if keep is not None:
            moving &= keep
        moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, self._kernel)
        moving = cv2.morphologyEx(moving, cv2.MORPH_CLOSE, self._kernel, iterations=2)
        self._learn(blurred, moving, dt)
        return self._measure(moving)

    def _start(self, blurred: np.ndarray, t_us: int) -> None:
        self._background = blurred
        self._last_us = t_us
        self._keep = mask_image(blurred.shape[:2], self.settings.masks)
        self._counted = int(np.count_nonzero(self._keep)) if self._keep is not None else blurred.size
        self._counted = max(1, self._counted)

    def _learn(self, blurred: np.ndarray, moving: np.ndarray, dt: float) -> None:
        rate = 1.0 - math.exp(-dt / BACKGROUND_SECONDS) if dt > 0 else 0.0
        if rate <= 0:
            return
        assert self._background is not None
        still = cv2.bitwise_not(moving)
        cv2.accumulateWeighted(blurred, self._background, rate, still)
        cv2.accumulateWeighted(blurred, self._background, rate / FOREGROUND_SLOWDOWN, moving)

    def _measure(self, moving: np.ndarray) -> MotionSample:
        contours, _ = cv2.findContours(moving, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        height, width = moving.shape
        smallest = SPECK_FRACTION * width * height
        area = 0.0
        x0, y0, x1, y1 = width, height, 0, 0
        for contour in contours:
            contour_area = cv2.contourArea(contour)
            if contour_area < smallest:
                continue
            area += contour_area
            x, y, w, h = cv2.boundingRect(contour)
            x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x + w), max(y1, y + h)
        if area <= 0:
            return MotionSample(0.0, None)
        box = (x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height)
        return MotionSample(100.0 * area / self._counted, tuple(round(v, 4) for v in box))  # type: ignore[arg-type]
