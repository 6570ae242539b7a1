"""Receiver variants for aiortc bench peers, installed process-wide in a client process only.

- Counting (load peers): aiortc's RTCRtpReceiver still does everything the server's work depends
  on (SRTP, RTCP receiver reports, NACKs, bitrate estimates), but its jitter buffer is replaced by
  a counter that notes a frame when the packet carrying the RTP marker bit (the last packet of a
  frame) arrives and keeps no packets, so nothing is reassembled, queued or decoded; depayloading
  is skipped too. That is a few attribute reads per packet, which lets 50 peers and the server
  share 2 cores.
- Marker-aware (the measuring peer): aiortc's JitterBuffer (`_remove_frame`) hands a frame to the
  decoder only when the first packet of the *next* frame arrives, one frame interval (33 ms at
  30 fps) after the frame was complete. Browsers complete a frame on the marker bit. This buffer
  does the same: it emits a frame as soon as a contiguous run of packets from the buffer's origin
  ends with the marker bit (falling back to aiortc's rule if a marker is missing), and it records
  how long aiortc's own buffer would have held each frame, so the report can show both figures.
- Loopback ICE: aioice skips 127.0.0.1 unless `get_host_addresses` is replaced.
"""

from __future__ import annotations

import time
from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add


def loopback_only() -> None:
    """Gather 127.0.0.1 host candidates only (in this process)."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"] if use_ipv4 else []


class CountingJitterBuffer(JitterBuffer):
    """Counts frames by their marker packets; never returns a frame, stores no packet."""

    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        super().__init__(capacity, prefetch, is_video)
        self.frame_times: list[float] = []  # wall clock of every completed frame
        self.packets = 0
        self.lost = 0  # sequence numbers skipped (never seen later on loopback)
        self._next_seq: int | None = None
        self._in_frame_gap = False

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        self.packets += 1
        seq = packet.sequence_number
        if self._next_seq is not None and seq != self._next_seq:
            gap = uint16_add(seq, -self._next_seq)
            if gap < 0x8000:  # ahead: packets missing (behind: a late or repeated packet)
                self.lost += gap
                self._in_frame_gap = True
        if self._next_seq is None or uint16_add(seq, -self._next_seq) < 0x8000:
            self._next_seq = uint16_add(seq, 1)
        if packet.marker:
            if not self._in_frame_gap:  # a frame only counts when all of its packets came
                self.frame_times.append(time.time())
            self._in_frame_gap = False
        return False, None


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's JitterBuffer, but a frame leaves on its marker packet, not on the next frame's first."""

    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        super().__init__(capacity, prefetch, is_video)
        # Per frame: how long after its marker packet the next frame's first packet came, i.e.
        # the extra time aiortc's stock buffer would have kept it (ms).
        self.stock_hold_ms: list[float] = []
        self._completed_at: tuple[int, float] | None = None  # (RTP timestamp, monotonic)

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        done = self._completed_at
        if done is not None and packet.timestamp != done[0]:
            self.stock_hold_ms.append((time.monotonic() - done[1]) * 1000.0)
            self._completed_at = None
        return super().add(packet)

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        assert self._origin is not None
        packets: list[RtpPacket] = []
        timestamp = None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                return None  # a hole: wait for it (or for the capacity rule to drop it)
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                break  # no marker came for this frame: the next one began, emit it as aiortc does
            packets.append(packet)
            if packet.marker:
                self._completed_at = (timestamp, time.monotonic())
                break
        else:
            return None
        assert timestamp is not None
        frame = JitterFrame(data=b"".join(p._data for p in packets), timestamp=timestamp)  # type: ignore[attr-defined]
        self.remove(len(packets))
        return frame


def _video_only(cls: type[JitterBuffer]) -> Any:
    def make(capacity: int, prefetch: int = 0, is_video: bool = False) -> JitterBuffer:
        return (cls if is_video else JitterBuffer)(capacity, prefetch, is_video)

    return make


def install(receiver: str) -> None:
    """Make every video RTCRtpReceiver created from now on in this process use `receiver`:
    "stock" (aiortc as is), "marker" (marker-aware jitter buffer, decodes) or "count" (no decode)."""
    import aiortc.rtcrtpreceiver as rtcrtpreceiver

    if receiver == "stock":
        return
    if receiver == "marker":
        rtcrtpreceiver.JitterBuffer = _video_only(MarkerJitterBuffer)  # type: ignore[misc]
    elif receiver == "count":
        rtcrtpreceiver.JitterBuffer = _video_only(CountingJitterBuffer)  # type: ignore[misc]
        # Nothing reads the depayloaded bytes of a counting peer.
        rtcrtpreceiver.depayload = lambda codec, payload: b""  # type: ignore[assignment]
    else:
        raise ValueError(f"unknown receiver {receiver!r}")


def jitter_buffer_of(receiver: Any) -> JitterBuffer:
    """The jitter buffer an aiortc RTCRtpReceiver holds (a private attribute; aiortc has no accessor)."""
    return receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[no-any-return]
