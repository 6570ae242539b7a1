"""Every use of aiortc's and aioice's private internals, in one place.

camcast feeds aiortc encoded packets instead of frames, so a few hooks that aiortc keeps for its own
encoders have to be taken over; and aioice has no per-connection setting for host addresses. When
aiortc changes, this is the one module to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aioice.ice
from aiortc import RTCCertificate, RTCRtpSender, RTCSctpTransport
from aiortc.codecs import CODECS, is_rtx
from aiortc.exceptions import InvalidStateError
from aiortc.rtcdtlstransport import SRTPProtectionProfile
from aiortc.rtcpeerconnection import find_common_codecs, is_codec_compatible
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)
from OpenSSL import SSL

log = logging.getLogger("camcast.webrtc")

_WEBRTC_STRING = 51  # SCTP payload protocol id of a text message (RFC 8831)


def missing_internals() -> list[str]:
    """What this module relies on that the installed aiortc and aioice lack (empty when all is
    there): checked at startup, so a changed library stops the server with one clear line instead
    of failing a viewer later."""
    made_in_sender_init = RTCRtpSender.__init__.__code__.co_names
    checks = {
        "RTCRtpSender._retransmit": hasattr(RTCRtpSender, "_retransmit"),
        "RTCRtpSender._send_keyframe": hasattr(RTCRtpSender, "_send_keyframe"),
        "RTCRtpSender._handle_rtcp_packet": hasattr(RTCRtpSender, "_handle_rtcp_packet"),
        "RTCRtpSender._send_rtcp": hasattr(RTCRtpSender, "_send_rtcp"),
        "RTCRtpSender.__rtp_history": "_RTCRtpSender__rtp_history" in made_in_sender_init,
        "RTCRtpSender.__lsr": "_RTCRtpSender__lsr" in made_in_sender_init,
        "RTCSctpTransport._data_channel_receive": hasattr(RTCSctpTransport, "_data_channel_receive"),
        "RTCCertificate._create_ssl_context": hasattr(RTCCertificate, "_create_ssl_context"),
        "aiortc.codecs.CODECS": isinstance(CODECS.get("video"), list),
        "aioice.ice.get_host_addresses": callable(getattr(aioice.ice, "get_host_addresses", None)),
    }
    return [name for name, present in checks.items() if not present]


def h264_profile_codec(profile_level_id: str) -> RTCRtpCodecCapability:
    """The capability of H.264 in a camera's own profile (High, Main...), registered with aiortc's
    codec table when new: aiortc negotiates only what that table lists (constrained baseline), and
    a camera passed through sends its own profile."""
    parameters: dict[str, str | int | None] = {"level-asymmetry-allowed": "1", "packetization-mode": "1",
                                               "profile-level-id": profile_level_id.lower()}
    table = CODECS["video"]
    if not any(c.mimeType == "video/H264" and c.parameters == parameters for c in table):
        payload_type = max(c.payloadType or 0 for c in table) + 1
        table.append(RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=payload_type,
                                           rtcpFeedback=list(table[0].rtcpFeedback), parameters=parameters))
        table.append(RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000,
                                           payloadType=payload_type + 1, parameters={"apt": payload_type}))
    return RTCRtpCodecCapability(mimeType="video/H264", clockRate=90000, parameters=parameters)


def offers_codec(offered: Sequence[RTCRtpCodecParameters], capability: RTCRtpCodecCapability) -> bool:
    """Whether aiortc would match `capability` with one of the offered codecs."""
    ours = RTCRtpCodecParameters(mimeType=capability.mimeType, clockRate=capability.clockRate,
                                 parameters=dict(capability.parameters))
    return any(is_codec_compatible(ours, c) for c in offered)


def common_video_codecs(offered: Sequence[RTCRtpCodecParameters]) -> list[RTCRtpCodecParameters]:
    """The offered video codecs aiortc can send (RTX excluded)."""
    return [c for c in find_common_codecs(CODECS["video"], list(offered)) if not is_rtx(c)]


# -- the sender ------------------------------------------------------------------------------------
@dataclass
class Feedback:
    """What one RTCP packet from the remote says about the stream this sender sends."""

    remb: int | None = None  # receiver-estimated maximum bitrate, bits/s
    fraction_lost: float | None = None  # from a receiver report: 0..1 since the previous report
    packets_lost: int | None = None  # cumulative, from the same report
    highest_sequence: int | None = None  # extended highest sequence number received
    jitter: int | None = None  # RTP timestamp units (90 kHz for video)
    rtt: float | None = None  # s, the round trip this receiver report measures
    nacked: int = 0  # packets asked for again
    keyframe_request: bool = False  # PLI or FIR


def route_keyframe_requests(sender: RTCRtpSender, handler: Callable[[], None]) -> None:
    """aiortc answers a PLI/FIR by asking its own encoder for a keyframe, a no-op for packet input:
    send them to `handler` instead."""
    sender._send_keyframe = handler  # type: ignore[method-assign]


NTP_UNIX_OFFSET = 2_208_988_800  # s from 1900 (NTP's epoch) to 1970 (Unix's)


def ntp_to_unix_us(ntp: int) -> int:
    return ((ntp >> 32) - NTP_UNIX_OFFSET) * 1_000_000 + ((ntp & 0xFFFF_FFFF) * 1_000_000 >> 32)


def unix_us_to_ntp(unix_us: int) -> int:
    seconds, micros = divmod(unix_us, 1_000_000)
    return ((seconds + NTP_UNIX_OFFSET) << 32) | ((micros << 32) // 1_000_000)


def report_capture_times(sender: RTCRtpSender, captured_before: Callable[[int], int | None]) -> None:
    """Sender reports that pair each RTP timestamp with its frame's capture time (from
    `captured_before(send time, µs)`) instead of the time aiortc sent its last packet, so that a
    browser's lip sync lines up sound and pictures captured together (see webrtc/handout.py)."""
    original: Callable[..., Awaitable[None]] = sender._send_rtcp
    ssrc = sender._ssrc

    async def send(packets: list[Any]) -> None:
        for packet in packets:
            if isinstance(packet, RtcpSrPacket) and packet.ssrc == ssrc:
                info = packet.sender_info
                captured_us = captured_before(ntp_to_unix_us(info.ntp_timestamp))
                if captured_us is not None and info.ntp_timestamp:
                    info.ntp_timestamp = unix_us_to_ntp(captured_us)
                    # The receiver echoes it as "last SR" in its reports: the round trip is
                    # computed from this value.
                    sender._RTCRtpSender__lsr = (info.ntp_timestamp >> 16) & 0xFFFF_FFFF
        await original(packets)

    sender._send_rtcp = send  # type: ignore[method-assign]


def observe_rtcp(sender: RTCRtpSender, on_feedback: Callable[[Feedback], None]) -> None:
    """Call `on_feedback` for every RTCP packet about this sender's stream, after aiortc handled
    it as usual (retransmissions for NACKs included). aiortc drops REMB when it has no encoder of
    its own; the receiver reports' loss, jitter and round trip are otherwise only in its stats."""
    original: Callable[..., Awaitable[None]] = sender._handle_rtcp_packet
    ssrc = sender._ssrc

    async def handle(packet: object) -> None:
        try:
            feedback = _feedback(packet, ssrc)
            if feedback is not None and feedback.fraction_lost is not None:
                feedback.rtt = _round_trip(sender, packet, ssrc)
        except Exception as exc:  # a malformed report must not end the sender's RTCP loop
            log.debug("unreadable RTCP feedback: %r", exc)
            feedback = None
        await original(packet)
        if feedback is not None:
            on_feedback(feedback)

    sender._handle_rtcp_packet = handle  # type: ignore[method-assign]


def _round_trip(sender: RTCRtpSender, packet: object, ssrc: int) -> float | None:
    """This report's own round trip (aiortc keeps only a heavily smoothed one, which lags a queue
    building up by seconds): now minus the sender report it answers and the receiver's delay (RFC 3550)."""
    lsr = getattr(sender, "_RTCRtpSender__lsr", None)
    lsr_time = getattr(sender, "_RTCRtpSender__lsr_time", None)
    for report in getattr(packet, "reports", ()):
        if report.ssrc == ssrc and lsr is not None and lsr_time is not None and report.lsr == lsr \
                and report.dlsr:
            return max(0.0, time.time() - lsr_time - report.dlsr / 65536)
    return None


def _feedback(packet: object, ssrc: int) -> Feedback | None:
    if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
        for report in packet.reports:
            if report.ssrc == ssrc:
                return Feedback(fraction_lost=report.fraction_lost / 256, jitter=report.jitter,
                                packets_lost=report.packets_lost, highest_sequence=report.highest_sequence)
        return None
    if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
        return Feedback(nacked=len(packet.lost))
    if isinstance(packet, RtcpPsfbPacket):
        if packet.fmt in (RTCP_PSFB_FIR, RTCP_PSFB_PLI):
            return Feedback(keyframe_request=True)
        if packet.fmt == RTCP_PSFB_APP:
            bitrate, _ssrcs = unpack_remb_fci(packet.fci)
            return Feedback(remb=bitrate)
    return None


class Retransmissions:
    """NACKed packets are sent again from aiortc's history, except those `forget_sent()` names.

    When a viewer moves to another rendition, the packets sent before the move belong to pictures
    it will never decode (the new rendition starts at its own keyframe): on a link that was just
    found too slow, sending them again would only delay that keyframe.
    """

    def __init__(self, sender: RTCRtpSender) -> None:
        self._sender = sender
        self._stale: set[int] = set()
        self.skipped = 0
        original: Callable[[int], Awaitable[None]] = sender._retransmit

        async def retransmit(sequence_number: int) -> None:
            if sequence_number in self._stale:
                self.skipped += 1
                return
            await original(sequence_number)

        sender._retransmit = retransmit  # type: ignore[method-assign]

    def forget_sent(self) -> None:
        """Never send again what was sent so far (called as the first packet of a move is handed over)."""
        history = getattr(self._sender, "_RTCRtpSender__rtp_history", {})
        self._stale = {packet.sequence_number for packet in history.values()}


# -- the data channel ------------------------------------------------------------------------------
def guard_sctp(sctp: RTCSctpTransport, on_invalid_text: Callable[[int], None]) -> None:
    """Keep a client's malformed data-channel traffic from tearing down its connection.

    aiortc decodes text messages (and channel-open requests) without a check; a bad byte would raise
    inside its receive loop and end the peer's DTLS session. This wraps that one method of this
    transport instance: invalid UTF-8 text is reported, and anything else that raises is dropped.
    """
    original: Callable[[int, int, bytes], Awaitable[None]] = sctp._data_channel_receive

    async def receive(stream_id: int, pp_id: int, data: bytes) -> None:
        if pp_id == _WEBRTC_STRING:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                on_invalid_text(stream_id)
                return
        try:
            await original(stream_id, pp_id, data)
        except Exception as exc:
            log.debug("dropped a malformed data-channel message: %r", exc)

    sctp._data_channel_receive = receive  # type: ignore[method-assign]


# -- errors of aiortc's own tasks -------------------------------------------------------------------
@contextlib.contextmanager
def closed_connects_quiet(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """A session closed while ICE still connects (a WHEP DELETE, a client gone) leaves aiortc's own
    connect task failing with InvalidStateError, which nobody awaits: asyncio would print its
    traceback as an error. That is an ordinary end of a session: say it at debug level."""
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exception = context.get("exception")
        task = context.get("future")
        coro = getattr(task, "get_coro", lambda: None)()
        if isinstance(exception, InvalidStateError) and "__connect" in getattr(coro, "__qualname__", ""):
            log.debug("a session closed while connecting: %s", exception)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
    try:
        yield
    finally:
        loop.set_exception_handler(previous)


# -- ICE host addresses ----------------------------------------------------------------------------
@contextlib.contextmanager
def host_addresses_replaced(get_host_addresses: Callable[[bool, bool], list[str]]) -> Iterator[None]:
    """While inside, every ICE agent in this process gathers host candidates from
    `get_host_addresses` (aioice has no per-connection setting: its module function is replaced)."""
    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = get_host_addresses
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


# -- DTLS cipher suites ----------------------------------------------------------------------------
_ECDSA_SUITE = "ECDHE-ECDSA-"
_RSA_SUITE = "ECDHE-RSA-"


def with_rsa_suites(names: Sequence[str]) -> list[str]:
    """aiortc's (D)TLS 1.2 cipher suites, then the ECDHE-RSA twin (same key exchange, cipher and MAC)
    of each ECDHE-ECDSA one. TLS 1.3 names (TLS_...) are left out: OpenSSL sets those apart, and
    DTLS 1.2 never uses them."""
    tls12 = [name for name in names if not name.startswith("TLS_")]
    twins = [_RSA_SUITE + name.removeprefix(_ECDSA_SUITE) for name in tls12 if name.startswith(_ECDSA_SUITE)]
    return tls12 + [name for name in twins if name not in tls12]


@contextlib.contextmanager
def rsa_peers_accepted() -> Iterator[None]:
    """While inside, aiortc's DTLS contexts offer ECDHE-RSA suites beside its ECDHE-ECDSA ones.

    In TLS 1.2 a suite names the DTLS server's certificate type. aiortc offers ECDHE-ECDSA suites
    only, so when it is the DTLS client (it answers an actpass offer, as WHEP does, with "active")
    a server holding an RSA certificate (GStreamer's webrtcbin, among others) finds "no shared
    cipher". Our own certificate stays ECDSA, so as a DTLS server we still choose only ECDSA suites;
    the added suites are the same forward-secret key exchange and ciphers, and the peer's certificate
    is still checked against its SDP fingerprint whatever its key type.
    """
    original = RTCCertificate._create_ssl_context
    suites: list[bytes] = []  # aiortc's list never changes: read once

    def create_ssl_context(certificate: RTCCertificate,
                           srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        if not suites:  # from a context of its own: pyOpenSSL freezes one that made a Connection
            names = SSL.Connection(original(certificate, srtp_profiles)).get_cipher_list()
            suites.append(":".join(with_rsa_suites(names)).encode())
        context = original(certificate, srtp_profiles)
        context.set_cipher_list(suites[0])
        return context

    RTCCertificate._create_ssl_context = create_ssl_context  # type: ignore[method-assign]
    try:
        yield
    finally:
        RTCCertificate._create_ssl_context = original  # type: ignore[method-assign]
