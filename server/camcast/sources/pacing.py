"""Pace a loop at a fixed rate from a monotonic clock, without drift."""

from __future__ import annotations

import time


class Pacer:
    def __init__(self, fps: float) -> None:
        self.interval = 1.0 / fps
        self._next = time.monotonic()

    def wait(self) -> None:
        """Sleep until the next tick. Deadlines are t0 + n/fps; a late tick skips ahead, never bunches."""
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
            self._next += self.interval
        else:
            missed = int((now - self._next) / self.interval)
            self._next += (missed + 1) * self.interval
