"""Measured frame rate over a sliding window."""

from __future__ import annotations

import time
from collections import deque


class FpsMeter:
    def __init__(self, window_seconds: float = 2.0) -> None:
        self._window = window_seconds
        self._times: deque[float] = deque()

    def tick(self) -> None:
        now = time.monotonic()
        self._times.append(now)
        while self._times and now - self._times[0] > self._window:
            self._times.popleft()

    @property
    def fps(self) -> float:
        now = time.monotonic()
        while self._times and now - self._times[0] > self._window:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(1e-6, self._times[-1] - self._times[0])
