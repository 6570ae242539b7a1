"""Pre-roll: the last GOPs of encoded packets, so a recording can begin before the press."""

from __future__ import annotations

from collections import deque

from camcast.frames import EncodedPacket


class PrerollBuffer:
    """Keeps every packet from the newest keyframe that is at least `seconds` old.

    A press at time t then starts at the keyframe at or before t - seconds (or the oldest one
    held, while the buffer is still filling). `max_packets` bounds memory whatever happens.
    """

    def __init__(self, seconds: float, max_packets: int) -> None:
        self._span_us = int(seconds * 1_000_000)
        self._max = max_packets
        self._packets: deque[EncodedPacket] = deque()
        self._keys: deque[EncodedPacket] = deque()

    def __len__(self) -> int:
        return len(self._packets)

    @property
    def span(self) -> float:
        """Seconds held, first packet to last."""
        if not self._packets:
            return 0.0
        return (self._packets[-1].captured_us - self._packets[0].captured_us) / 1e6

    def clear(self) -> None:
        self._packets.clear()
        self._keys.clear()

    def push(self, packet: EncodedPacket) -> None:
        if self._packets and packet.generation != self._packets[-1].generation:
            self.clear()  # a new encoder chain (new size): older packets cannot precede it in a file
        if not self._packets and not packet.keyframe:
            return  # useless until a keyframe starts a decodable chain
        self._packets.append(packet)
        if packet.keyframe:
            self._keys.append(packet)
        horizon = packet.captured_us - self._span_us
        while len(self._keys) >= 2 and self._keys[1].captured_us <= horizon:
            self._drop_first_gop()
        while len(self._packets) > self._max and len(self._keys) >= 2:
            self._drop_first_gop()
        if len(self._packets) > self._max:  # one GOP longer than the bound: start over
            self.clear()

    def _drop_first_gop(self) -> None:
        self._keys.popleft()
        following = self._keys[0]
        while self._packets[0] is not following:
            self._packets.popleft()

    def since(self, time_us: int) -> list[EncodedPacket]:
        """The packets from the keyframe at or before `time_us` (else the oldest keyframe) on."""
        if not self._keys:
            return []
        start = self._keys[0]
        for key in reversed(self._keys):
            if key.captured_us <= time_us:
                start = key
                break
        packets = list(self._packets)
        for i, packet in enumerate(packets):
            if packet is start:
                return packets[i:]
        return []
