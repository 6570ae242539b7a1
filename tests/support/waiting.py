"""Wait for a condition with a deadline, instead of sleeping a fixed time and hoping it happened."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

INTERVAL = 0.05  # s between two looks: short next to any deadline, cheap for what tests look at


def _shown(value: object, limit: int = 2000) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


async def eventually(probe: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0,
                     what: str = "condition", *, until: Callable[[Any], object] = bool,
                     interval: float = INTERVAL) -> Any:
    """Call `probe` (a function, or one that returns an awaitable) until `until(value)` holds, and
    return that value. Past `timeout` s, fail with `what` and the last value the probe returned.

    Give deadlines that a busy shared machine meets: the wait ends as soon as the condition holds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if until(value):
            return value
        if time.monotonic() >= deadline:
            last = "" if value is None or isinstance(value, bool) else f"; last: {_shown(value)}"
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{last}")
        await asyncio.sleep(interval)
