"""OpenCV sources: a camera index, a /dev/videoN device, a video file (looped), or a URL."""

from __future__ import annotations

import os

import cv2
import numpy as np

from camcast.sources.base import SourceError
from camcast.sources.pacing import Pacer


def _is_url(spec: str) -> bool:
    return "://" in spec


class OpenCVSource:
    stamps = False

    def __init__(self, spec: str, width: int, height: int, fps: float, stamp: bool = False) -> None:
        self.spec = spec
        self.description = spec
        self.width, self.height, self.fps = width, height, fps
        self.stamps = stamp
        self.is_file = not spec.isdigit() and not _is_url(spec) and not spec.startswith("/dev/")
        self._capture: cv2.VideoCapture | None = None
        self._pacer: Pacer | None = None

    def open(self) -> None:
        if self.is_file and not os.path.isfile(self.spec):
            raise SourceError(f"no such file: {self.spec}")
        target: int | str = int(self.spec) if self.spec.isdigit() else self.spec
        capture = cv2.VideoCapture(target)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self.spec}")
        if not self.is_file and not _is_url(self.spec):
            # Ask a camera for the configured mode; it may pick the nearest one it has.
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            capture.set(cv2.CAP_PROP_FPS, self.fps)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of old ones
        ok, first = capture.read()
        if not ok or first is None:
            capture.release()
            raise SourceError(f"{self.spec} opened but gave no frame")
        if self.is_file:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            file_fps = capture.get(cv2.CAP_PROP_FPS)
            # A file plays at its own rate; cameras and streams are paced by the device.
            self._pacer = Pacer(file_fps if 1 <= file_fps <= 240 else self.fps)
        self._capture = capture

    def read(self) -> np.ndarray | None:
        capture = self._capture
        if capture is None:
            return None
        if self._pacer is not None:
            self._pacer.wait()
        ok, image = capture.read()
        if (not ok or image is None) and self.is_file:
            if not os.path.isfile(self.spec):
                return None  # the file went away: treat as a lost source
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)  # loop
            ok, image = capture.read()
        if not ok or image is None:
            return None
        return image

    def close(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()
