"""One WebRTC viewer: its peer connection, a packet track per camera it watches, control channel, watchdog.

A player's session carries one camera (and that camera's control channel); the wall's carries one
video m-line per camera over one connection (BUNDLE), each fed from its own camera's packet hub.

Everything a peer holds is released in `close()`, whatever ends it: the client closing, ICE or DTLS
failing, the receiver going silent, a WHEP DELETE, or shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription, clock

from camcast.control import ControlBus, Message, finite_number
from camcast.hub import Subscription
from camcast.webrtc.adapt import Adaptation
from camcast.webrtc.audiotrack import AudioPacketTrack
from camcast.webrtc.channel import ControlChannel
from camcast.webrtc.compat import (
    Retransmissions,
    guard_sctp,
    h264_profile_codec,
    observe_rtcp,
    report_capture_times,
    route_keyframe_requests,
)
from camcast.webrtc.offer import OfferError, codec_preferences, opus_preferences
from camcast.webrtc.track import Level, PacketTrack

if TYPE_CHECKING:
    from camcast.camera import Camera

log = logging.getLogger("camcast.webrtc")

CONNECT_TIMEOUT = 30.0  # s from the answer to a connected transport
WATCH_INTERVAL = 1.0
CLOSE_TIMEOUT = 5.0
VIEWER_KIND = "webrtc"


@dataclass
class CameraFeed:
    """One video m-line of a session: the camera it shows and the track that carries its packets."""

    name: str  # the camera asked for
    camera: Camera | None  # None: no such camera
    codec: str | None  # None: this m-line was refused (answered inactive)
    track: PacketTrack | None
    refused: str | None = None  # why, for the wall's answer
    adaptation: Adaptation | None = None  # which rendition this m-line's link carries
    sender: RTCRtpSender | None = None
    keyframe_requests_remote: int = 0  # PLI/FIR received on this m-line
    h264_profile: str | None = None  # a camera's own profile, answered first


def camera_levels(camera: Camera, codec: str, rendition: str | None = None
                  ) -> tuple[list[Level], Level | None, Subscription[Any] | None]:
    """What a PacketTrack of `camera` in `codec` sends: its renditions (only `rendition` when one is
    named), the level it starts on, and the subscription that warms the camera's decoder up."""
    levels = [Level(out.rendition.name, out.packets, out.encoder.force_keyframe, out.rendition.bitrate)
              for out in camera.renditions[codec]]
    start = warmup = None
    if codec == "h264" and camera.passthrough.h264 and camera.bridge is not None:
        top, bridge = levels[0], camera.bridge
        # The camera's own packets: it makes keyframes on its own schedule, not when asked.
        levels[0] = Level(top.name, top.packets, lambda: False, top.bitrate)
        start = Level("bridge", bridge.packets, bridge.encoder.force_keyframe, top.bitrate)
        warmup = camera.frames.subscribe(maxsize=1)  # the camera decodes from now on
    if rendition is not None:
        levels = [level for level in levels if level.name == rendition]
        start = start if levels and levels[0].name == camera.ladder[0].name else None
    return levels, start, warmup


class Peer:
    def __init__(self, peer_id: str, remote: str, via: str, configuration: RTCConfiguration,
                 peer_timeout: float, on_closed: Callable[[Peer], None],
                 control: ControlBus | None = None) -> None:
        self.id = peer_id
        self.remote = remote
        self.via = via  # "offer" (the player), "whep" or "wall"
        self.peer_timeout = peer_timeout
        self.created = time.monotonic()
        self.connected_at: float | None = None
        self.latency_ms: float | None = None  # the player's last capture-to-display report
        self.latency_reports = 0
        self.close_reason: str | None = None
        self.pc = RTCPeerConnection(configuration)
        self.feeds: list[CameraFeed] = []
        self.audio_track: AudioPacketTrack | None = None
        self.audio_camera: Camera | None = None  # whose sound the audio m-line carries
        self._audio_sender: RTCRtpSender | None = None
        self._watching = False  # counted as a viewer: from connected until closed
        self.control = ControlChannel(peer_id, control, on_accepted=self._bookkeep) if control else None
        self._on_closed = on_closed
        self._closing = False
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    def add_camera(self, camera: Camera, codec: str, rendition: str | None = None,
                   h264_profile: str | None = None) -> None:
        """The next video m-line shows `camera` in `codec`, starting on its top rendition and
        moving with its link, or held on `rendition` when one is named. `h264_profile`: the
        profile-level-id of a camera passed through, answered when the offer has it."""
        levels, start, warmup = camera_levels(camera, codec, rendition)
        viewers = camera.viewers
        track = PacketTrack(levels, on_sent=lambda size: viewers.sent(VIEWER_KIND, size), start=start,
                            warmup=warmup)
        camera.sessions.add(self)
        adaptation = Adaptation(track, on_switch=camera.note_switch, viewer=f"{self.id} ({camera.name})")
        adaptation.share = functools.partial(self._estimate_share, adaptation)
        self.feeds.append(CameraFeed(camera.name, camera, codec, track, adaptation=adaptation,
                                     h264_profile=h264_profile))

    def _estimate_share(self, adaptation: Adaptation) -> float:
        """The part of this connection's bandwidth estimate that `adaptation`'s stream takes."""
        rates = [f.adaptation.last_sent_bps for f in self.live_feeds if f.adaptation is not None]
        total = sum(rates)
        if len(rates) <= 1:
            return 1.0
        return adaptation.last_sent_bps / total if total > 0 else 1.0 / len(rates)

    def add_audio(self, camera: Camera) -> None:
        """The offer's audio m-line carries `camera`'s sound (its one shared Opus encode)."""
        assert camera.audio is not None
        self.audio_track = AudioPacketTrack(camera.audio.packets)
        self.audio_camera = camera
        camera.sessions.add(self)  # an audio-only session is the camera's too (status, shutdown)

    @property
    def watched_cameras(self) -> list[Camera]:
        """The cameras this session counts as a viewer of: its video m-lines', or the one it only
        listens to."""
        cameras = [f.camera for f in self.live_feeds if f.camera is not None]
        return cameras or ([self.audio_camera] if self.audio_camera is not None else [])

    def rebridge(self, camera: Camera) -> None:
        """`camera`'s own packets stopped: its m-lines carry its pictures from the bridge."""
        for feed in self.live_feeds:
            if feed.camera is camera and feed.track is not None:
                feed.track.rebridge()

    def refuse_camera(self, name: str, camera: Camera | None, reason: str) -> None:
        """The next video m-line is answered inactive: `reason` says why (the wall shows it)."""
        self.feeds.append(CameraFeed(name, camera, None, None, reason))

    @property
    def live_feeds(self) -> list[CameraFeed]:
        return [f for f in self.feeds if f.track is not None]

    def renditions_of(self, camera: Camera) -> list[str]:
        """The rendition each of this session's m-lines of `camera` is on (for /metrics)."""
        return [f.track.levels[f.track.level].name for f in self.live_feeds
                if f.camera is camera and f.track is not None]

    @property
    def codec(self) -> str:
        """The codec of the first camera (a player's session has only that one)."""
        return next((f.codec for f in self.feeds if f.codec), "none")

    @property
    def track(self) -> PacketTrack:
        """The first camera's track (a player's session has only that one)."""
        return next(f.track for f in self.feeds if f.track is not None)

    # -- negotiation --------------------------------------------------------------------------
    async def negotiate(self, offer_sdp: str) -> str:
        """Apply the offer and return the answer SDP, with every ICE candidate gathered."""
        pc = self.pc
        # Added before setRemoteDescription, in order: aiortc pairs them with the offer's video
        # m-lines in the same order.
        ours = []
        for feed in self.feeds:
            if feed.track is None or feed.codec is None:
                ours.append(pc.addTransceiver("video", direction="inactive"))
                continue
            transceiver = pc.addTransceiver(feed.track, direction="sendonly")
            # aiortc negotiates from these, and sends codecs[0].
            preferences = codec_preferences(feed.codec)
            if feed.h264_profile:  # registered first, so that aiortc's capabilities list it
                preferences = [h264_profile_codec(feed.h264_profile), *codec_preferences(feed.codec)]
            transceiver.setCodecPreferences(preferences)
            feed.sender = sender = transceiver.sender
            # PLI/FIR on this m-line go to its camera's shared encoder.
            route_keyframe_requests(sender, functools.partial(self._on_remote_keyframe_request, feed))
            report_capture_times(sender, feed.track.handouts.captured_before)
            if feed.adaptation is not None:
                observe_rtcp(sender, feed.adaptation.on_feedback)
                feed.track.on_switched = Retransmissions(sender).forget_sent
            ours.append(transceiver)
        if self.audio_track is not None:
            audio = pc.addTransceiver(self.audio_track, direction="sendonly")
            audio.setCodecPreferences(opus_preferences())
            self._audio_sender = audio.sender
            report_capture_times(audio.sender, self.audio_track.handouts.captured_before)
            ours.append(audio)
        if self.control is not None:
            pc.on("datachannel", self.control.adopt)
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:
            raise OfferError(400, f"the offer was refused: {exc or type(exc).__name__}") from None
        for other in pc.getTransceivers():
            if other not in ours:
                # Never receive media (nothing would read it) nor send on extra m-lines.
                other.direction = "inactive"
        if pc.sctp is not None:
            on_invalid = self.control.receive_invalid_text if self.control else _ignore_invalid_text
            guard_sctp(pc.sctp, on_invalid)
        try:
            await pc.setLocalDescription(await pc.createAnswer())  # gathers every candidate first
        except Exception as exc:
            raise OfferError(400, f"no answer to that offer: {exc or type(exc).__name__}") from None
        return pc.localDescription.sdp

    def start(self) -> None:
        self._spawn(self._watch(), f"watch-{self.id}")

    # -- events ---------------------------------------------------------------------------------
    def _on_remote_keyframe_request(self, feed: CameraFeed) -> None:
        feed.keyframe_requests_remote += 1
        # The adaptation decides whether this one reaches the encoder (shared by other viewers).
        if feed.track is not None and (feed.adaptation is None or feed.adaptation.keyframe_request()):
            feed.track.request_keyframe()

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
            for camera in self.watched_cameras:
                codec = next((f.codec for f in self.live_feeds if f.camera is camera), "audio only")
                who = f"{self.id} from {self.remote} ({self.via}, {codec})"
                camera.viewers.join(VIEWER_KIND, who)
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
            for feed in self.live_feeds:
                if feed.adaptation is not None:
                    feed.adaptation.evaluate()  # a link gone silent sends no RTCP to react to
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
        first_packets = [f.track.first_packet_at for f in self.live_feeds
                         if f.track is not None and f.track.first_packet_at is not None]
        if self.audio_track is not None and self.audio_track.first_packet_at is not None:
            first_packets.append(self.audio_track.first_packet_at)
        if silent is None and first_packets:
            # No report yet: every receiver sends them (RFC 3550), so count from the first packet.
            silent = time.monotonic() - min(first_packets)
        if silent is not None and silent > self.peer_timeout:
            return f"no receiver reports for {silent:.0f} s"
        return None

    async def _report_silence(self) -> float | None:
        """Seconds since the remote's last RTCP receiver report; None before the first one."""
        last = []
        senders = [f.sender for f in self.live_feeds] + [self._audio_sender]
        for sender in senders:
            if sender is not None:
                stats = await sender.getStats()
                last += [s.timestamp for s in stats.values() if s.type == "remote-inbound-rtp"]
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
            for camera in self.watched_cameras:
                camera.viewers.leave(VIEWER_KIND, f"{self.id} from {self.remote} ({reason})")
        else:  # never a viewer: still worth a line for whoever debugs a client that cannot connect
            log.info("webrtc session ended before connecting: %s from %s (%s)", self.id, self.remote,
                     reason)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current and not task.get_name().startswith("close-"):
                task.cancel()
        if self.control is not None:
            await self.control.close()
        for feed in self.live_feeds:
            if feed.track is not None:
                feed.track.stop()
        if self.audio_track is not None:
            self.audio_track.stop()  # leaves the Opus hub: the encoder stops after the last listener
        try:
            await asyncio.wait_for(self.pc.close(), CLOSE_TIMEOUT)
        except Exception as exc:
            log.warning("peer %s did not close cleanly: %r", self.id, exc)
        for task in list(self._tasks):
            if task is not current and not task.get_name().startswith("close-"):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for feed in self.live_feeds:
            if feed.camera is not None:
                feed.camera.sessions.discard(self)
        if self.audio_camera is not None:
            self.audio_camera.sessions.discard(self)
        self._closed.set()
        self._on_closed(self)

    @property
    def closed(self) -> bool:
        return self._closing

    def status(self, camera: Camera | None = None) -> dict[str, object]:
        """This session as `camera`'s viewers see it (default: its first camera)."""
        feed = next((f for f in self.live_feeds if camera is None or f.camera is camera), None)
        track = feed.track if feed is not None else None
        return {
            "id": self.id,
            "via": self.via,
            "codec": feed.codec if feed else None,
            "cameras": [f.name for f in self.live_feeds],
            "remote": self.remote,
            "state": self.pc.connectionState,
            "age": round(time.monotonic() - self.created, 1),
            "frames_sent": track.frames_sent if track else 0,
            "keyframes_sent": track.keyframes_sent if track else 0,
            "bytes_sent": track.bytes_sent if track else 0,
            "dropped": track.dropped if track else 0,
            "skipped": track.skipped if track else 0,
            "resyncs": track.resyncs if track else 0,
            "keyframe_requests": track.keyframe_requests if track else 0,
            "pli": feed.keyframe_requests_remote if feed else 0,
            "control_open": self.control.open if self.control else False,
            "control_dropped": self.control.dropped_in if self.control else 0,
            "latency_ms": self.latency_ms,
            "audio_packets_sent": self.audio_track.packets_sent if self.audio_track else 0,
            **(feed.adaptation.status() if feed and feed.adaptation else {}),
        }


def _ignore_invalid_text(stream_id: int) -> None:
    """A session without a control channel (the wall) reads no data-channel messages at all."""
