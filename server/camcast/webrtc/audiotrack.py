"""The per-peer audio track: hands the camera's shared Opus packets to aiortc's sender unchanged
(aiortc's Opus encoder packs an encoded packet as it is, so a listener costs no encode)."""

from __future__ import annotations

import time
from typing import Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from camcast.audio import AudioPacket
from camcast.hub import Hub, HubClosed, Subscription
from camcast.webrtc.handout import Handouts

QUEUE_PACKETS = 10  # 200 ms: a listener that falls further behind skips the oldest


class AudioPacketTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, packets: Hub[AudioPacket]) -> None:
        super().__init__()
        self._packets = packets
        # Subscribed on the first recv(), once the connection is up: the encoder starts then.
        self._sub: Subscription[AudioPacket] | None = None
        self.packets_sent = 0
        self.handouts = Handouts()  # for sender reports in capture time
        self.first_packet_at: float | None = None  # monotonic

    async def recv(self) -> Any:  # av.Packet
        if self.readyState != "live":
            raise MediaStreamError
        if self._sub is None:
            self._sub = self._packets.subscribe(maxsize=QUEUE_PACKETS)
        try:
            item = await self._sub.get()
        except HubClosed:
            self.stop()
            raise MediaStreamError from None
        self.packets_sent += 1
        self.handouts.note(item.captured_us)
        if self.first_packet_at is None:
            self.first_packet_at = time.monotonic()
        return item.packet

    def stop(self) -> None:
        super().stop()
        if self._sub is not None:
            self._sub.close()
