"""A token bucket: at most `rate` events a second on average, with bursts of up to `burst`."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    @property
    def empty(self) -> bool:
        """No token to spend right now (nothing is spent by asking)."""
        now = self._clock()
        return min(self.burst, self._tokens + (now - self._updated) * self.rate) < 1

    def take(self) -> bool:
        """Spend one token if there is one; False means the caller is over the limit."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
