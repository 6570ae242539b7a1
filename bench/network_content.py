"""Test content that compresses like a camera: a textured scene, things moving in it, sensor noise.

The server's test pattern is flat colour bars: x264 makes it a few hundred kbit/s, so a link limit
barely bites. This writes a looping video file instead (OpenCV, Motion-JPEG in AVI at high quality,
so the noise survives and decoding stays cheap): a fine texture at several scales (foliage, gravel),
a slow pan over it, a few shapes crossing, and fresh noise on every frame. camcast serves it with
`--source FILE --stamp`; the aiortc baseline reads it through bench.network_relay.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

CACHE = Path("/tmp/camcast-bench-content")


def _texture(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Noise summed over a few blur scales: detail everywhere, as leaves or gravel give."""
    out = np.zeros((height, width, 3), np.float32)
    for sigma, weight in ((0.0, 0.35), (1.5, 0.35), (6.0, 0.6), (24.0, 0.8)):
        layer = rng.normal(0.0, 1.0, (height, width, 3)).astype(np.float32)
        if sigma:
            layer = cv2.GaussianBlur(layer, (0, 0), sigma)
        layer /= max(1e-6, float(layer.std()))
        out += weight * layer
    out = 128 + 28 * out
    return np.clip(out, 0, 255).astype(np.uint8)


def textured_video(size: tuple[int, int], fps: float, seconds: float, noise: float = 4.0) -> Path:
    """The file for these parameters, written once and cached (it is deterministic)."""
    width, height = size
    path = CACHE / f"textured-{width}x{height}-{fps:g}fps-{seconds:g}s-n{noise:g}.avi"
    if path.exists() and path.stat().st_size > 0:
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part.avi")  # the writer picks its container from the extension
    rng = np.random.default_rng(7)
    scene = _texture(width + width // 2, height + height // 8, rng)
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    frames = round(seconds * fps)
    for i in range(frames):
        phase = i / frames  # one pan there and back per loop, so the loop has no jump
        x = int((width // 2) * (0.5 - 0.5 * np.cos(2 * np.pi * phase)))
        frame = scene[: height, x: x + width].copy()
        for k in range(3):  # shapes crossing at their own speeds
            cx = int((0.15 + 0.7 * ((phase * (k + 1)) % 1.0)) * width)
            cy = int((0.3 + 0.2 * k) * height)
            cv2.circle(frame, (cx, cy), height // (10 + 3 * k), (40 + 60 * k, 180 - 50 * k, 90 + 40 * k), -1,
                       cv2.LINE_AA)
        grain = rng.normal(0.0, noise, frame.shape).astype(np.float32)
        writer.write(np.clip(frame.astype(np.float32) + grain, 0, 255).astype(np.uint8))
    writer.release()
    partial.rename(path)
    return path
