"""The `ping` control message: a client measures its round trip and its clock offset."""

from __future__ import annotations

import time

from camcast.control import ControlError, Message, finite_number


async def ping(message: Message, sender: str) -> Message:
    t = finite_number(message, "t")
    if t is None:
        raise ControlError("ping needs a number 't' (the client's time in ms)")
    return {"type": "pong", "t": t, "server_time": time.time_ns() // 1_000_000}
