"""One WebRTC viewer: its peer connection, packet track, control channel and watchdog.

Everything a peer holds is released in `close()`, whatever ends it: the client closing, ICE or DTLS
failing, the receiver going silent, a WHEP DELETE, or shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription, clock

from camcast.control import ControlBus, Message, finite_number
from camcast.stream import Stream
from camcast.viewers import Viewers
from camcast.webrtc.channel import ControlChannel, guard_sctp
from camcast.webrtc.offer import OfferError, codec_preferences
from camcast.webrtc.track import PacketTrack

log = logging.getLogger("camcast.webrtc")

CONNECT_TIMEOUT = 30.0  # s from the answer to a connected transport
WATCH_INTERVAL = 1.0
CLOSE_TIMEOUT = 5.0
VIEWER_KIND = "webrtc"


class Peer:
    def __init__(self, peer_id: str, remote: str, via: str, codec: str, configuration: RTCConfiguration,
                 stream: Stream, bus: ControlBus, peer_timeout: float,
                 on_closed: Callable[[Peer], None]) -> None:
        self.id = peer_id
        self.remote = remote
        self.via = via  # "offer" (the player) or "whep"
        self.codec = codec
        self.peer_timeout = peer_timeout
        self.created = time.monotonic()
        self.connected_at: float | None = None
        self.keyframe_requests_remote = 0  # PLI/FIR received
        self.latency_ms: float | None = None  # the player's last capture-to-display report
        self.latency_reports = 0
        self.close_reason: str | None = None
        self.pc = RTCPeerConnection(configuration)
        encoder = stream.video_encoders[codec]
        viewers = stream.viewers
        self._viewers: Viewers = viewers
        self._watching = False  # counted as a viewer: from connected until closed
        self.track = PacketTrack(stream.packets[codec], encoder.force_keyframe,
                                 on_sent=lambda size: viewers.sent(VIEWER_KIND, size))
        self.control = ControlChannel(peer_id, bus, on_accepted=self._bookkeep)
        self.sender: RTCRtpSender | None = None
        self._on_closed = on_closed
        self._closing = False
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- negotiation --------------------------------------------------------------------------
    async def negotiate(self, offer_sdp: str) -> str:
        """Apply the offer and return the answer SDP, with every ICE candidate gathered."""
        pc = self.pc
        transceiver = pc.addTransceiver(self.track, direction="sendonly")
        # Before setRemoteDescription: aiortc negotiates from these, and sends codecs[0].
        transceiver.setCodecPreferences(codec_preferences(self.codec))
        sender = transceiver.sender
        # aiortc routes PLI/FIR to the sender's _send_keyframe, a no-op for packet input: this
        # sender's requests go to the shared encoder instead.
        sender._send_keyframe = self._on_remote_keyframe_request  # type: ignore[method-assign]
        self.sender = sender
        pc.on("datachannel", self.control.adopt)
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:
            raise OfferError(400, f"the offer was refused: {exc or type(exc).__name__}") from None
        for other in pc.getTransceivers():
            if other is not transceiver:
                # Never receive media (nothing would read it) nor send on extra m-lines.
                other.direction = "inactive"
        if pc.sctp is not None:
            guard_sctp(pc.sctp, self.control.receive_invalid_text)
        try:
            await pc.setLocalDescription(await pc.createAnswer())  # gathers every candidate first
        except Exception as exc:
            raise OfferError(400, f"no answer to that offer: {exc or type(exc).__name__}") from None
        return pc.localDescription.sdp

    def start(self) -> None:
        self._spawn(self._watch(), f"watch-{self.id}")

    # -- events ---------------------------------------------------------------------------------
    def _on_remote_keyframe_request(self) -> None:
        self.keyframe_requests_remote += 1
        self.track.request_keyframe()

    def _bookkeep(self, message: Message) -> None:
        """Called for messages the bus accepted only: a latency here passed the metrics' checks."""
        if message.get("type") != "latency":
            return
        ms = finite_number(message, "ms")
        if ms is not None:
            self.latency_ms = float(ms)
            self.latency_reports += 1

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self.connected_at is None and not self._closing:
            self.connected_at = time.monotonic()
            log.debug("peer %s connected after %.0f ms", self.id, (self.connected_at - self.created) * 1000)
            # A viewer from here on: attempts that never connect are not counted.
            self._watching = True
            self._viewers.join(VIEWER_KIND, f"{self.id} from {self.remote} ({self.via}, {self.codec})")
        elif state in ("failed", "closed"):
            self._spawn(self.close(f"connection {state}"), f"close-{self.id}")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self) -> None:
        """Drop a peer that never connects, or whose receiver reports stop (it went away silently)."""
        while not self._closing:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                reason = await self._check()
            except Exception as exc:
                # Unwatched, a peer that went away would be kept for ever: end it instead.
                log.debug("peer %s watchdog failed: %r", self.id, exc)
                reason = f"watchdog failed: {exc!r}"
            if reason is not None:
                self._spawn(self.close(reason), f"close-{self.id}")
                return

    async def _check(self) -> str | None:
        """Why this peer should be closed now, if it should."""
        if self.connected_at is None:
            if time.monotonic() - self.created > CONNECT_TIMEOUT:
                return f"not connected within {CONNECT_TIMEOUT:g} s"
            return None
        silent = await self._report_silence()
        if silent is None and self.track.first_packet_at is not None:
            # No report yet: every receiver sends them (RFC 3550), so count from the first packet.
            silent = time.monotonic() - self.track.first_packet_at
        if silent is not None and silent > self.peer_timeout:
            return f"no receiver reports for {silent:.0f} s"
        return None

    async def _report_silence(self) -> float | None:
        """Seconds since the remote's last RTCP receiver report; None before the first one."""
        if self.sender is None:
            return None
        stats = await self.sender.getStats()
        last = [s.timestamp for s in stats.values() if s.type == "remote-inbound-rtp"]
        if not last:
            return None
        return (clock.current_datetime() - max(last)).total_seconds()

    # -- teardown -------------------------------------------------------------------------------
    async def close(self, reason: str) -> None:
        """Release everything this peer holds; safe to call from anywhere, any number of times."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self.close_reason = reason
        if self._watching:
            self._watching = False
            self._viewers.leave(VIEWER_KIND, f"{self.id} from {self.remote} ({reason})")
        else:  # never a viewer: still worth a line for whoever debugs a client that cannot connect
            log.info("webrtc session ended before connecting: %s from %s (%s)", self.id, self.remote,
                     reason)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current and not task.get_name().startswith("close-"):
                task.cancel()
        await self.control.close()
        self.track.stop()
        try:
            await asyncio.wait_for(self.pc.close(), CLOSE_TIMEOUT)
        except Exception as exc:
            log.warning("peer %s did not close cleanly: %r", self.id, exc)
        for task in list(self._tasks):
            if task is not current and not task.get_name().startswith("close-"):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._closed.set()
        self._on_closed(self)

    @property
    def closed(self) -> bool:
        return self._closing

    def status(self) -> dict[str, object]:
        track = self.track
        return {
            "id": self.id,
            "via": self.via,
            "codec": self.codec,
            "remote": self.remote,
            "state": self.pc.connectionState,
            "age": round(time.monotonic() - self.created, 1),
            "frames_sent": track.frames_sent,
            "keyframes_sent": track.keyframes_sent,
            "bytes_sent": track.bytes_sent,
            "dropped": track.dropped,
            "skipped": track.skipped,
            "resyncs": track.resyncs,
            "keyframe_requests": track.keyframe_requests,
            "pli": self.keyframe_requests_remote,
            "control_open": self.control.open,
            "control_dropped": self.control.dropped_in,
            "latency_ms": self.latency_ms,
        }
