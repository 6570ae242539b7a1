"""The per-peer video track: hands a shared encoder's packets to aiortc's sender unchanged.

aiortc's RTCRtpSender packetizes an av.Packet returned by `recv()` without re-encoding, so every
peer costs only packetization and SRTP. The packets are shared by all peers (aiortc's `pack()` only
reads their bytes, pts and time_base). A peer starts on a keyframe and starts again on the next
keyframe after any gap (its bounded queue dropped packets, or the encoder restarted), asking the
shared encoder for one each time; the encoder rate-limits those requests.

A track can be moved between the renditions of its camera (`switch_to`): it subscribes to the
target's packets, asks that encoder for a keyframe, and keeps sending the current rendition until
the target's keyframe for a newer picture arrives; from that keyframe on it sends the target. A move
down holds the current rendition back meanwhile: the link is failing, and more of it would only
queue in front of the target's keyframe. The
sender, its SSRC and its sequence numbers stay; timestamps come from the shared capture clock, and
every H.264 keyframe carries its SPS/PPS, so the receiver follows the new size without renegotiation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from camcast.frames import EncodedPacket
from camcast.hub import Hub, HubClosed, Subscription
from camcast.webrtc.handout import Handouts

QUEUE_FRAMES = 4  # about 130 ms at 30 fps: a peer that falls further behind skips to a keyframe
KEYFRAME_RETRY = 0.25  # s: ask again while waiting (a request within the encoder's limit is refused)
# s a move down may hold back the current rendition while the target's keyframe is awaited; past
# it, the current one flows again (a target encoder that never delivers must not freeze the viewer).
DOWN_HOLD_LIMIT = 2.0


@dataclass(frozen=True)
class Level:
    """One rendition a track can send: its packets and how to ask its encoder for a keyframe."""

    name: str
    packets: Hub[EncodedPacket]
    force_keyframe: Callable[[], bool]
    bitrate: int = 0


class PacketTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, packets: Hub[EncodedPacket] | Sequence[Level],
                 force_keyframe: Callable[[], bool] | None = None,
                 on_sent: Callable[[int], None] | None = None, queue_frames: int = QUEUE_FRAMES,
                 start: Level | None = None, warmup: Subscription[Any] | None = None) -> None:
        super().__init__()
        if isinstance(packets, Hub):
            assert force_keyframe is not None
            packets = [Level("high", packets, force_keyframe)]
        self.levels: list[Level] = list(packets)
        self.level = 0  # the rendition being sent (0: the top one)
        self._packets = self.levels[0].packets
        self._force_keyframe = self.levels[0].force_keyframe
        self._target: int | None = None  # the rendition being switched to
        self._pending: Subscription[EncodedPacket] | None = None
        self._last_captured_us = -1
        self.handouts = Handouts()  # for sender reports in capture time
        self.switches = 0
        self.on_switched: Callable[[], None] | None = None  # as a move's first packet is handed over
        self._on_sent = on_sent
        self._queue_frames = queue_frames
        # A camera passed through cannot make a keyframe when asked: the viewer starts on `start`
        # (the current picture encoded at once) and moves to the top rendition at its next one.
        self._start = start
        self._bridging = False
        # Held from the offer until the first packet is wanted: the camera starts decoding (catching
        # up from its last keyframe) while ICE and DTLS still connect, so the start's first keyframe
        # comes at once.
        self._warmup = warmup
        # Subscribed on the first recv(), i.e. once the connection is up: the encoder starts then
        # (lazily) and nothing stale piles up while ICE and DTLS are still connecting.
        self._sub: Subscription[EncodedPacket] | None = None
        self._awaiting_keyframe = True
        self._dropped_seen = 0
        self._generation: int | None = None
        self._last_request = -1e9
        self._pending_asked = -1e9
        self._switch_asked = -1e9
        self._pending_forces = True
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
            self._subscribe_first()
        try:
            while True:
                switched = self._take_pending(newer_than=self._last_captured_us)
                if switched is not None:
                    return self._sent(switched)
                sub = self._sub
                assert sub is not None
                try:
                    item = await self._next(sub)
                except HubClosed:
                    if self._sub is not sub:
                        continue  # rebridge() replaced the subscription being waited on
                    raise
                # The target rendition's keyframe of this picture (or a newer one) replaces it.
                switched = self._take_pending(newer_than=item.captured_us - 1)
                if switched is not None:
                    return self._sent(switched)
                if sub.dropped != self._dropped_seen:
                    # The queue dropped the oldest packets: what follows has no reference frames.
                    self._dropped_seen = sub.dropped
                    self._resync(item)
                elif item.generation != self._generation and self._generation is not None:
                    self._resync(item)
                if self._holding_back():
                    self.skipped += 1
                    self._awaiting_keyframe = True  # should the move fail, resume at a keyframe
                    continue
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

    def _subscribe_first(self) -> None:
        self._end_warmup()
        start = self._start
        if start is None:
            self._sub = self._packets.subscribe(maxsize=self._queue_frames)
            return
        self._bridge_from(start)

    def rebridge(self) -> None:
        """The camera's own packets stopped (its source is lost): carry the camera's pictures
        (its "no signal" card) from the start level until the camera's next keyframe."""
        start = self._start
        if start is None or self._bridging or self._sub is None or self.level != 0:
            return
        if self._target is not None:
            return  # moving to another rendition already: it is encoded from the pictures
        self._sub.close()
        self._bridge_from(start)
        self._awaiting_keyframe = True
        self._last_request = -1e9

    def _bridge_from(self, start: Level) -> None:
        self._sub = start.packets.subscribe(maxsize=self._queue_frames)
        self._bridging = True
        self._force_keyframe = start.force_keyframe
        self._target = self.level  # ...until the level's own keyframe comes
        self._switch_asked = time.monotonic()
        self._pending = self._packets.subscribe(maxsize=self._queue_frames)

    async def _next(self, sub: Subscription[EncodedPacket]) -> EncodedPacket:
        if not self._awaiting_keyframe:
            return await sub.get()
        while True:
            if time.monotonic() - self._last_request >= KEYFRAME_RETRY and not self._holding_back():
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

    # -- switching renditions ------------------------------------------------------------------
    @property
    def target(self) -> int | None:
        return self._target

    def switch_to(self, level: int) -> None:
        """Move to rendition `level` at its next keyframe (newer than what was sent)."""
        level = max(0, min(level, len(self.levels) - 1))
        if self._target == level:
            return
        if self._pending is not None:  # a switch still waiting: abandon it
            self._pending.close()
            self._pending = None
        self._target = None
        if level == self.level and not self._bridging:
            return
        if self._sub is None:  # nothing sent yet: simply start there
            self._set_level(level)
            return
        self._target = level
        self._switch_asked = time.monotonic()
        # A move up is no emergency: when others already watch the target, its scheduled keyframe
        # (within a keyframe interval) serves, instead of an IDR forced on all of them.
        self._pending_forces = level > self.level or self.levels[level].packets.subscriber_count == 0
        self._pending = self.levels[level].packets.subscribe(maxsize=self._queue_frames)
        self._ask_pending()

    def _holding_back(self) -> bool:
        """A move down is under way: its link is failing, and whatever more of the current
        rendition is sent only fills the queue the target's keyframe must get through."""
        return self._target is not None and self._target > self.level \
            and time.monotonic() - self._switch_asked < DOWN_HOLD_LIMIT

    def _ask_pending(self) -> None:
        if self._target is not None and self._pending_forces:
            self._pending_asked = time.monotonic()
            self.levels[self._target].force_keyframe()

    def _take_pending(self, newer_than: int) -> EncodedPacket | None:
        """The target's keyframe of a picture newer than `newer_than`, if it came: the switch is done."""
        pending = self._pending
        if pending is None or self._target is None:
            return None
        while (item := pending.get_nowait()) is not None:
            if item.keyframe and item.captured_us > newer_than:
                self._complete_switch(pending, item)
                return item
        if time.monotonic() - self._pending_asked >= KEYFRAME_RETRY:
            self._ask_pending()  # the encoder may have refused within its rate limit
        return None

    def _complete_switch(self, pending: Subscription[EncodedPacket], item: EncodedPacket) -> None:
        assert self._target is not None
        if self._sub is not None:
            self._sub.close()  # leaves the old rendition: its encoder stops if nobody else watches
        self._sub = pending
        self._pending = None
        self._set_level(self._target)
        self._target = None
        self._dropped_seen = pending.dropped
        self._generation = item.generation
        self._awaiting_keyframe = False
        self._bridging = False
        self.switches += 1
        if self.on_switched is not None:
            self.on_switched()

    def _set_level(self, level: int) -> None:
        self.level = level
        self._packets = self.levels[level].packets
        self._force_keyframe = self.levels[level].force_keyframe

    def _sent(self, item: EncodedPacket) -> Any:
        self._last_captured_us = item.captured_us
        self.handouts.note(item.captured_us)
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

    def _end_warmup(self) -> None:
        if self._warmup is not None:
            self._warmup.close()
            self._warmup = None

    def stop(self) -> None:
        super().stop()
        self._end_warmup()
        for sub in (self._sub, self._pending):
            if sub is not None:
                sub.close()  # leaves the hub: the encoder stops once nobody else listens
