"""The `ping` control message: a client measures its round trip and its clock offset."""

from __future__ import annotations

import math
import time

from camcast.control import ControlError, Message


async def ping(message: Message, sender: str) -> Message:
    t = message.get("t")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise ControlError("ping needs a number 't' (the client's time in ms)")
    return {"type": "pong", "t": t, "server_time": time.time_ns() // 1_000_000}
