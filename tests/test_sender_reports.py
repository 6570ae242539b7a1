"""RTCP sender reports in capture time: a browser lines up sound and pictures from the (NTP, RTP)
pairs of each track's sender reports, so each pair must name when that RTP timestamp's frame was
captured, not when its last packet happened to be sent (aiortc's own choice, which makes an encoded
picture look younger than the sound captured with it by its encode time).

A real aiortc receiver takes the reports as they arrive and maps the RTP timestamps of what it
decodes through them: the pictures' times must be the capture times stamped into them, and the
beep's first sample must map to the whole second it was captured at.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtcpSrPacket

from camcast.stamp import read_stamp
from camcast.webrtc.compat import ntp_to_unix_us
from support.waiting import eventually

SR = tuple[int, int]  # (NTP time in Unix µs, RTP timestamp)


def observe_sender_reports(receiver: RTCRtpReceiver, on_report: Callable[[RtcpSrPacket], None],
                           first_rtp: list[int]) -> None:
    """aiortc keeps a report's NTP time in its stats but not its RTP timestamp, and its decoded
    frames count RTP time from the first packet's: catch both (into `first_rtp`)."""
    original_rtcp, original_rtp = receiver._handle_rtcp_packet, receiver._handle_rtp_packet

    async def handle_rtcp(packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            on_report(packet)
        await original_rtcp(packet)

    async def handle_rtp(packet: Any, arrival_time_ms: int) -> None:
        if not first_rtp:
            first_rtp.append(packet.timestamp)
        await original_rtp(packet, arrival_time_ms)

    receiver._handle_rtcp_packet = handle_rtcp  # type: ignore[method-assign]
    receiver._handle_rtp_packet = handle_rtp  # type: ignore[method-assign]


def mapped_us(reports: list[SR], first_rtp: list[int], pts: int, clock_rate: int) -> float | None:
    """The Unix time (µs) of a decoded frame's `pts`, by the last report before it."""
    if not reports or not first_rtp:
        return None
    rtp = (first_rtp[0] + pts) % 2**32
    ntp_us, sr_rtp = reports[-1]
    delta = (rtp - sr_rtp + 2**31) % 2**32 - 2**31  # wrap-around safe
    return ntp_us + delta * 1_000_000 / clock_rate


async def test_sender_reports_pair_rtp_timestamps_with_capture_times(start_server: Any) -> None:
    server = start_server("--stamp", "--audio", "tone", "--adapt", "off")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    reports: dict[str, list[SR]] = {"video": [], "audio": []}
    first_rtp: dict[str, list[int]] = {"video": [], "audio": []}
    picture_errors_us: list[float] = []
    beep_errors_us: list[float] = []
    tasks: list[asyncio.Task[None]] = []

    async def pictures(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                at = mapped_us(reports["video"], first_rtp["video"], frame.pts, 90_000)
                if at is not None:
                    picture_errors_us.append(at - read_stamp(frame.to_ndarray(format="gray")))

    async def sound(track: MediaStreamTrack) -> None:
        quiet = 0  # samples since the last loud one
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0].astype(float)
                loud = np.flatnonzero(np.abs(samples) > 0.05 * 32768)
                if len(loud) and quiet > 0.5 * frame.sample_rate:
                    at = mapped_us(reports["audio"], first_rtp["audio"], frame.pts + int(loud[0]),
                                   frame.sample_rate)
                    if at is not None:
                        whole_second = round(at / 1e6) * 1e6
                        beep_errors_us.append(at - whole_second)
                quiet = len(samples) - 1 - int(loud[-1]) if len(loud) else quiet + len(samples)

    def on_track(track: MediaStreamTrack) -> None:
        tasks.append(asyncio.ensure_future(pictures(track) if track.kind == "video" else sound(track)))

    pc.on("track", on_track)
    for kind in ("video", "audio"):
        transceiver = pc.addTransceiver(kind, direction="recvonly")
        observe_sender_reports(transceiver.receiver, lambda sr, kind=kind: reports[kind].append(
            (ntp_to_unix_us(sr.sender_info.ntp_timestamp), sr.sender_info.rtp_timestamp)), first_rtp[kind])
    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http, http.post(
                server.url + "offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await eventually(lambda: len(picture_errors_us) >= 60 and len(beep_errors_us) >= 3, 30,
                         "60 pictures and 3 beeps after the first sender reports")
    finally:
        for task in tasks:
            task.cancel()
        await pc.close()
    # Exact but for the 90 kHz clock's rounding; sent times would be an encode later (milliseconds).
    assert abs(float(np.median(picture_errors_us))) < 500, sorted(picture_errors_us)[::10]
    # The tone starts at each whole second of the capture clock; Opus's own delay is 6.5 ms at most.
    assert all(abs(error) < 10_000 for error in beep_errors_us), beep_errors_us
