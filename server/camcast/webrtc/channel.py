"""The `control` data channel of one peer: JSON text in, replies and broadcasts out.

Messages go through a per-peer token bucket, then one bounded inbox and one worker per peer, so
replies keep their order and a flooding client only ever costs its own share: messages over the rate
are dropped, with one `error` ("rate limited") a second to say so. Anything a client sends that is
not a JSON object with a known `type` gets an `error` reply; nothing it sends can raise out of here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from aiortc import RTCDataChannel

from camcast.control import ControlBus, Message, encode, error
from camcast.ratelimit import TokenBucket

log = logging.getLogger("camcast.webrtc")

CONTROL_LABEL = "control"
RATE = 50.0  # messages a second from one peer, on average
BURST = 100  # messages at once (a player sends a few a second)
RATE_NOTICE_INTERVAL = 1.0  # s: one "rate limited" reply per interval, however many were dropped
INBOX_SIZE = 128  # more than a burst: the bucket limits a flood, the inbox only a slow handler
MAX_MESSAGE_CHARS = 16 * 1024
MAX_BUFFERED_BYTES = 256 * 1024  # a peer that stops reading its channel stops getting messages


class _InvalidText:
    """A text message whose bytes are not UTF-8 (stands in for it in the inbox)."""


class _TooLong:
    """A message over MAX_MESSAGE_CHARS (stands in for it: the inbox never holds big messages)."""


Incoming = str | bytes | _InvalidText | _TooLong


class ControlChannel:
    def __init__(self, peer_id: str, bus: ControlBus,
                 on_accepted: Callable[[Message], None] | None = None) -> None:
        self.peer_id = peer_id
        self._bus = bus
        # Sees every message the bus handled without an error (per-peer bookkeeping of valid values).
        self._on_accepted = on_accepted
        self._channel: RTCDataChannel | None = None
        self._inbox: asyncio.Queue[Incoming] = asyncio.Queue(INBOX_SIZE)
        self._bucket = TokenBucket(RATE, BURST)
        self._last_notice = -1e9
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self.received = 0
        self.errors = 0  # error replies sent
        self.dropped_in = 0  # messages dropped: over the rate, or the inbox was full
        self.dropped_out = 0  # messages not sent because the peer was not reading

    @property
    def open(self) -> bool:
        return self._channel is not None and self._channel.readyState == "open"

    def adopt(self, channel: RTCDataChannel) -> None:
        """Take a data channel the remote opened; only the one labelled `control` is used."""
        if self._closed or channel.label != CONTROL_LABEL:
            return
        self._channel = channel  # a later `control` channel replaces an earlier one
        channel.on("message", lambda data, ch=channel: self._receive(ch, data))
        channel.on("close", lambda ch=channel: self._channel_closed(ch))
        if channel.readyState == "open":
            self._opened()
        else:
            channel.on("open", self._opened)

    def _opened(self) -> None:
        if self._closed:
            return
        if self._worker is None:
            loop = asyncio.get_running_loop()
            self._worker = loop.create_task(self._work(), name=f"control-{self.peer_id}")
        self._bus.attach(self.peer_id, self.send_text)
        for message in self._bus.greeting():
            self.send(message)

    def _channel_closed(self, channel: RTCDataChannel) -> None:
        if channel is self._channel:
            self._channel = None
            self._bus.detach(self.peer_id)

    def send(self, message: Message) -> None:
        """Send one message (a reply, a greeting); never raises."""
        try:
            text = encode(message)
        except (TypeError, ValueError) as exc:
            log.debug("control message to %s not sent, not JSON: %s", self.peer_id, exc)
            return
        self.send_text(text)

    def send_text(self, text: str) -> None:
        """Send one serialised message if the channel is open and the peer keeps up; never raises."""
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return
        if channel.bufferedAmount > MAX_BUFFERED_BYTES:
            self.dropped_out += 1
            return
        try:
            channel.send(text)
        except Exception as exc:  # a closing transport
            log.debug("control message to %s not sent: %s", self.peer_id, exc)

    def _receive(self, channel: RTCDataChannel, data: Incoming) -> None:
        if channel is not self._channel:
            return
        self.received += 1
        if not self._bucket.take():
            self._drop()
            return
        if not isinstance(data, _InvalidText) and len(data) > MAX_MESSAGE_CHARS:
            data = _TooLong()
        try:
            self._inbox.put_nowait(data)
        except asyncio.QueueFull:
            self._drop()

    def _drop(self) -> None:
        """Drop a message over the limit; say so once per interval, not once per message."""
        self.dropped_in += 1
        now = time.monotonic()
        if now - self._last_notice >= RATE_NOTICE_INTERVAL:
            self._last_notice = now
            self.errors += 1
            self.send(error(f"rate limited: at most {RATE:g} messages a second (bursts of {BURST}); "
                            "messages over that are dropped"))

    def receive_invalid_text(self, stream_id: int) -> None:
        channel = self._channel
        if channel is not None and channel.id == stream_id:
            self._receive(channel, _InvalidText())

    async def _work(self) -> None:
        while True:
            data = await self._inbox.get()
            try:
                reply = await self._handle(data)
            except Exception:
                log.exception("control message from %s failed", self.peer_id)
                reply = error("internal error handling that message")
            if reply is not None:
                if reply.get("type") == "error":
                    self.errors += 1
                self.send(reply)

    async def _handle(self, data: Incoming) -> Message | None:
        if isinstance(data, _InvalidText):
            return error("text messages must be UTF-8")
        if isinstance(data, _TooLong):
            return error(f"message too long (at most {MAX_MESSAGE_CHARS} characters)")
        if isinstance(data, bytes):
            return error("binary messages are not understood; send JSON text")
        try:
            message = json.loads(data)
        except Exception:  # ValueError, and RecursionError for absurdly deep nesting
            return error("a message must be JSON")
        reply = await self._bus.dispatch(message, self.peer_id)
        accepted = reply is None or reply.get("type") != "error"
        if accepted and isinstance(message, dict) and self._on_accepted is not None:
            self._on_accepted(message)
        return reply

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._bus.detach(self.peer_id)
        self._channel = None
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
