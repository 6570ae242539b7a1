"""The picture viewers get while the source is down: better than a frozen or dead stream."""

from __future__ import annotations

import cv2
import numpy as np


def no_signal_image(width: int, height: int, reason: str) -> np.ndarray:
    image = np.full((height, width, 3), 40, np.uint8)
    scale = height / 480
    thickness = max(1, int(3 * scale))
    text = "NO SIGNAL"
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 2.0 * scale, thickness)
    cv2.putText(image, text, ((width - tw) // 2, (height + th) // 2), cv2.FONT_HERSHEY_SIMPLEX,
                2.0 * scale, (80, 80, 230), thickness, cv2.LINE_AA)
    cv2.putText(image, reason[:60], (int(20 * scale), int(height * 0.9)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (200, 200, 200), max(1, thickness // 2),
                cv2.LINE_AA)
    return image
