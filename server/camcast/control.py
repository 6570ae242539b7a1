"""The control message bus between viewers (data channel `control`, REST) and server features.

Features (the recorder, ping) register handlers by message `type`; outputs that carry messages
(each WebRTC peer's data channel) attach a sink to receive broadcasts and greet new peers with
the messages `greeting()` returns. Neither side imports the other: the app wires them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("camcast.control")

Message = dict[str, Any]
# A handler gets the message and the sender's id; it returns a reply for that sender (or None).
Handler = Callable[[Message, str], Awaitable[Message | None]]
# A sink gets a message already serialised: a broadcast encodes it once for every peer.
Sink = Callable[[str], None]


class ControlError(Exception):
    """A message was understood but cannot be done; the text goes back as an `error` message."""


class ControlBus:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._sinks: dict[str, Sink] = {}
        self._greeters: list[Callable[[], Message | None]] = []

    def register(self, message_type: str, handler: Handler) -> None:
        self._handlers[message_type] = handler

    def add_greeter(self, greeter: Callable[[], Message | None]) -> None:
        """`greeter()` gives a message every newly connected peer receives (e.g. the record state)."""
        self._greeters.append(greeter)

    def greeting(self) -> list[Message]:
        return [m for m in (g() for g in self._greeters) if m is not None]

    def attach(self, peer_id: str, sink: Sink) -> None:
        self._sinks[peer_id] = sink

    def detach(self, peer_id: str) -> None:
        self._sinks.pop(peer_id, None)

    @property
    def peer_count(self) -> int:
        return len(self._sinks)

    def broadcast(self, message: Message) -> None:
        """Send to every attached peer; a failing sink never stops the others."""
        try:
            text = encode(message)
        except (TypeError, ValueError) as exc:  # a feature's bug: say so, and keep the caller going
            log.error("broadcast not sent, not JSON: %s", exc)
            return
        for peer_id, sink in list(self._sinks.items()):
            try:
                sink(text)
            except Exception as exc:  # a closing channel: that peer is being removed anyway
                log.debug("broadcast to %s failed: %s", peer_id, exc)

    async def dispatch(self, message: object, sender: str) -> Message | None:
        """Handle one decoded message; always answers malformed or unknown ones with an `error`."""
        if not isinstance(message, dict):
            return error("a message must be a JSON object")
        kind = message.get("type")
        if not isinstance(kind, str):
            return error("a message needs a string 'type'")
        handler = self._handlers.get(kind)
        if handler is None:
            return error(f"unknown message type {kind[:40]!r}")
        try:
            return await handler(message, sender)
        except ControlError as exc:
            return error(str(exc))


def error(text: str) -> Message:
    return {"type": "error", "message": text}


def encode(message: Message) -> str:
    """The JSON text of a message as it goes on the wire; ValueError/TypeError if it is not JSON."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def finite_number(message: Message, key: str) -> float | None:
    """`message[key]` when it is a finite JSON number, else None (`true` is an int to Python, not here)."""
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value
