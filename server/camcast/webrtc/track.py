"""The per-peer video track: hands the shared encoder's packets to aiortc's sender unchanged.

aiortc's RTCRtpSender packetizes an av.Packet returned by `recv()` without re-encoding, so every
peer costs only packetization and SRTP. The packets are shared by all peers (aiortc's `pack()` only
reads their bytes, pts and time_base). A peer starts on a keyframe and starts again on the next
keyframe after any gap (its bounded queue dropped packets, or the encoder restarted), asking the
shared encoder for one each time; the encoder rate-limits those requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from camcast.frames import EncodedPacket
from camcast.hub import Hub, HubClosed, Subscription

QUEUE_FRAMES = 4  # about 130 ms at 30 fps: a peer that falls further behind skips to a keyframe
KEYFRAME_RETRY = 0.25  # s: ask again while waiting (a request within the encoder's limit is refused)


class PacketTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, packets: Hub[EncodedPacket], force_keyframe: Callable[[], bool],
                 on_sent: Callable[[int], None] | None = None, queue_frames: int = QUEUE_FRAMES) -> None:
        super().__init__()
        self._packets = packets
        self._force_keyframe = force_keyframe
        self._on_sent = on_sent
        self._queue_frames = queue_frames
        # Subscribed on the first recv(), i.e. once the connection is up: the encoder starts then
        # (lazily) and nothing stale piles up while ICE and DTLS are still connecting.
        self._sub: Subscription[EncodedPacket] | None = None
        self._awaiting_keyframe = True
        self._dropped_seen = 0
        self._generation: int | None = None
        self._last_request = -1e9
        self.first_packet_at: float | None = None  # monotonic time the first packet went out
        self.frames_sent = 0
        self.keyframes_sent = 0
        self.bytes_sent = 0
        self.skipped = 0  # packets passed over while waiting for a keyframe
        self.resyncs = 0  # gaps that made this peer wait for a keyframe
        self.keyframe_requests = 0

    @property
    def dropped(self) -> int:
        """Packets the bounded queue dropped because this peer fell behind."""
        return self._sub.dropped if self._sub is not None else 0

    def request_keyframe(self) -> None:
        """New peer, gap, or a PLI/FIR from the remote: ask the shared encoder for an IDR."""
        self.keyframe_requests += 1
        self._last_request = time.monotonic()
        self._force_keyframe()

    async def recv(self) -> Any:  # av.Packet
        if self.readyState != "live":
            raise MediaStreamError
        if self._sub is None:
            self._sub = self._packets.subscribe(maxsize=self._queue_frames)
        sub = self._sub
        try:
            while True:
                item = await self._next(sub)
                if sub.dropped != self._dropped_seen:
                    # The queue dropped the oldest packets: what follows has no reference frames.
                    self._dropped_seen = sub.dropped
                    self._resync(item)
                elif item.generation != self._generation and self._generation is not None:
                    self._resync(item)
                if self._awaiting_keyframe:
                    if not item.keyframe:
                        self.skipped += 1
                        continue
                    self._awaiting_keyframe = False
                self._generation = item.generation
                return self._sent(item)
        except HubClosed:
            self.stop()
            raise MediaStreamError from None

    async def _next(self, sub: Subscription[EncodedPacket]) -> EncodedPacket:
        if not self._awaiting_keyframe:
            return await sub.get()
        while True:
            if time.monotonic() - self._last_request >= KEYFRAME_RETRY:
                self.request_keyframe()
            try:
                return await asyncio.wait_for(sub.get(), KEYFRAME_RETRY)
            except TimeoutError:
                if self.readyState != "live":
                    raise MediaStreamError from None

    def _resync(self, item: EncodedPacket) -> None:
        if item.keyframe or self._awaiting_keyframe:
            return
        self.resyncs += 1
        self._awaiting_keyframe = True
        self._last_request = -1e9  # ask at once, not after the retry interval

    def _sent(self, item: EncodedPacket) -> Any:
        packet = item.packet
        size = packet.size
        self.frames_sent += 1
        self.bytes_sent += size
        if item.keyframe:
            self.keyframes_sent += 1
        if self.first_packet_at is None:
            self.first_packet_at = time.monotonic()
        if self._on_sent is not None:
            self._on_sent(size)
        return packet

    def stop(self) -> None:
        super().stop()
        if self._sub is not None:
            self._sub.close()  # leaves the hub: the encoder stops once nobody else listens
