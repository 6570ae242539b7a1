"""The capture-to-display latency players report over the data channel (`{"type":"latency","ms":N}`)."""

from __future__ import annotations

from camcast.control import ControlError, Message, finite_number
from camcast.histogram import LATENCY_SECONDS_BUCKETS, Histogram

MAX_LATENCY_MS = 60_000.0  # more than a minute is a broken clock, not a latency


class DisplayLatency:
    """The players' reports: a histogram of accepted values and a count of rejected ones."""

    def __init__(self) -> None:
        self.histogram = Histogram(LATENCY_SECONDS_BUCKETS)
        self.rejected = 0

    async def handle(self, message: Message, sender: str) -> Message | None:
        ms = finite_number(message, "ms")
        if ms is None:
            self.rejected += 1
            raise ControlError("latency needs a number 'ms'")
        if not 0 <= ms <= MAX_LATENCY_MS:
            # A client whose clock is off reports nonsense: keep it out of the histogram.
            self.rejected += 1
            raise ControlError(f"latency ms must be 0..{MAX_LATENCY_MS:g}")
        self.histogram.observe(ms / 1000.0)
        return None
