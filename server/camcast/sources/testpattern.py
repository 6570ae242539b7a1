"""A moving test pattern with a clock, the frame number and (added by the supervisor) the stamp."""

from __future__ import annotations

import time

import cv2
import numpy as np

from camcast.frames import now_us
from camcast.sources.pacing import Pacer

FLASH = 64  # px: the A/V sync block


def _color_bars(width: int, height: int) -> np.ndarray:
    # SMPTE-like bars: white, yellow, cyan, green, magenta, red, blue (BGR).
    colors = [(235, 235, 235), (16, 235, 235), (235, 235, 16), (16, 235, 16),
              (235, 16, 235), (16, 16, 235), (235, 16, 16)]
    image = np.zeros((height, width, 3), np.uint8)
    for i, color in enumerate(colors):
        image[:, i * width // len(colors) : (i + 1) * width // len(colors)] = color
    # A darker lower third, where the text goes.
    image[height * 2 // 3 :] //= 4
    return image


class TestPattern:
    description = "testpattern"
    stamps = True

    def __init__(self, width: int, height: int, fps: float, label: str = "", flash: bool = False) -> None:
        self.width, self.height, self.fps = width, height, fps
        # With the test tone: the first frame at or after each whole second of the capture clock has
        # a white 64x64 block in its bottom-right corner (black otherwise), beside the tone's beep.
        self.flash = flash
        self._flashed_second = -1
        self.label = label  # the camera's name: on a wall of test patterns, each tile says which it is
        self._background = _color_bars(width, height)
        self._pacer: Pacer | None = None
        self._count = 0

    def open(self) -> None:
        self._pacer = Pacer(self.fps)
        self._count = 0

    def read(self) -> np.ndarray | None:
        if self._pacer is None:
            return None
        self._pacer.wait()
        self._count += 1
        image = self._render(self._count)
        if self.flash:
            second = now_us() // 1_000_000  # the supervisor stamps this frame a moment later
            white = second != self._flashed_second
            self._flashed_second = second
            image[-FLASH:, -FLASH:] = 255 if white else 0
        return image

    def _render(self, count: int) -> np.ndarray:
        w, h = self.width, self.height
        image = self._background.copy()
        # A bar sweeping across once every 2 s, and a ball bouncing: motion you can see at a glance.
        period = max(1, round(self.fps * 2))  # frames per sweep; at least one below 0.5 fps
        phase = (count % period) / period
        x = int(phase * w)
        image[h // 6 : h * 2 // 3, max(0, x - w // 64) : x + w // 64] = 255 - image[
            h // 6 : h * 2 // 3, max(0, x - w // 64) : x + w // 64
        ]
        t = count / self.fps
        bx = int((0.5 + 0.4 * np.sin(t * 1.3)) * w)
        by = int((0.45 + 0.2 * np.cos(t * 2.1)) * h)
        cv2.circle(image, (bx, by), max(4, h // 16), (0, 200, 255), -1, cv2.LINE_AA)
        scale = h / 480
        now = time.time()
        clock = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
        thickness = max(1, int(2 * scale))
        cv2.putText(image, clock, (int(20 * scale), int(h * 0.80)), cv2.FONT_HERSHEY_SIMPLEX,
                    1.4 * scale, (255, 255, 255), thickness, cv2.LINE_AA)
        if self.label:
            cv2.putText(image, self.label, (int(20 * scale), int(h * 0.14)), cv2.FONT_HERSHEY_SIMPLEX,
                        1.2 * scale, (0, 0, 0), thickness + 1, cv2.LINE_AA)
        cv2.putText(image, f"frame {count}  {w}x{h}@{self.fps:g}", (int(20 * scale), int(h * 0.92)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, (200, 200, 200), thickness, cv2.LINE_AA)
        return image

    def close(self) -> None:
        self._pacer = None
