"""The textured test video at the sizes and rates of the lower renditions, for the baseline cameras.

A camera whose only encode is a rendition's must be shown what that rendition encodes: the same
scene, scaled down as the encoder scales it (OpenCV's INTER_AREA, which averages away some of the
noise) and, below the capture rate, every other frame. Written once next to the source file.
"""

from __future__ import annotations

from pathlib import Path

import cv2


def scaled_video(source: Path, size: tuple[int, int], fps: float) -> Path:
    """`source` resized to `size` and thinned to `fps` (at most its own rate); cached."""
    width, height = size
    path = source.with_name(f"{source.stem}-as-{width}x{height}-{fps:g}fps.avi")
    if path.exists() and path.stat().st_size > 0:
        return path
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise RuntimeError(f"cannot open {source}")
    source_fps = capture.get(cv2.CAP_PROP_FPS) or fps
    keep_every = max(1, round(source_fps / fps))
    partial = path.with_suffix(".part.avi")  # the writer picks its container from the extension
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"MJPG"), source_fps / keep_every,
                             (width, height))
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    index = 0
    try:
        while True:
            ok, image = capture.read()
            if not ok or image is None:
                break
            if index % keep_every == 0:
                writer.write(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
            index += 1
    finally:
        capture.release()
        writer.release()
    if index == 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"{source} gave no frame")
    partial.rename(path)
    return path
