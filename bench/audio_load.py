"""Listener load for the audio suite: client processes of aiortc peers that offer video recvonly (H.264)
plus audio recvonly (Opus) and count what arrives, decoding nothing.

Both receivers' jitter buffers are bench.rtc_receivers' counting one (it keeps no packet, so no frame
reaches a decoder): the server's work per peer is that of a real listener (SRTP, RTCP, the sender's
pacing), the client's stays a few attribute reads per packet, so 50 peers share 2 cores with the server.
Every worker connects its peers over a ramp from one start time shared by all, then counts video frames
(marker packets) and audio packets over the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any

from bench.workerpool import Job, Signals, WorkerPool, run_worker


@dataclass(frozen=True)
class AudioPlan:
    url: str  # http://127.0.0.1:PORT/ (POST url + "offer")
    peers: int
    ramp: float  # seconds over which the peers connect
    settle: float  # seconds from the last connect to the window
    window: float
    peers_per_worker: int = 25
    connect_timeout: float = 20.0

    @property
    def t_window(self) -> float:
        return self.ramp + self.settle

    @property
    def t_end(self) -> float:
        return self.t_window + self.window

    def shares(self) -> list[list[int]]:
        workers = max(1, math.ceil(self.peers / self.peers_per_worker))
        return [list(range(self.peers))[w::workers] for w in range(workers)]


def _install_counting() -> None:
    """Every receiver (audio too) counts packets and keeps none: nothing is depayloaded or decoded."""
    import aiortc.rtcrtpreceiver as rtcrtpreceiver

    from bench.rtc_receivers import CountingJitterBuffer, loopback_only

    loopback_only()
    rtcrtpreceiver.JitterBuffer = CountingJitterBuffer  # type: ignore[misc]
    rtcrtpreceiver.depayload = lambda codec, payload: b""  # type: ignore[assignment]


class _Peer:
    def __init__(self, index: int) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver

        self.index = index
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video = self.pc.addTransceiver("video", direction="recvonly")
        caps = RTCRtpReceiver.getCapabilities("video").codecs
        self.video.setCodecPreferences([c for c in caps if c.mimeType.lower() in ("video/h264", "video/rtx")])
        self.audio = self.pc.addTransceiver("audio", direction="recvonly")
        self.error = ""
        self.audio_answered = False  # the answer's audio m-line sends
        self.audio_at_start = 0
        self.audio_packets = 0  # inside the window
        self.video_frames = 0
        self.first_audio_ms = math.nan

    async def connect(self, http: Any, url: str, timeout: float) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setLocalDescription(await self.pc.createOffer())
        payload = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with asyncio.timeout(timeout):
            async with http.post(url + "offer", json=payload) as r:
                if r.status != 200:
                    raise RuntimeError(f"offer rejected: {r.status} {(await r.text())[:100]}")
                answer = await r.json()
            self.audio_answered = any(
                line.startswith("a=sendonly") or line.startswith("a=sendrecv")
                for line in answer["sdp"].split("m=audio", 1)[-1].split("m=video", 1)[0].splitlines())
            await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))

    def buffer(self, kind: str) -> Any:
        from bench.rtc_receivers import jitter_buffer_of

        return jitter_buffer_of((self.audio if kind == "audio" else self.video).receiver)


async def _sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _main(plan: AudioPlan, indices: list[int], start: float) -> dict[str, Any]:
    import aiohttp
    import psutil

    peers = [_Peer(i) for i in indices]
    me = psutil.Process()

    async def one(peer: _Peer) -> None:
        await _sleep_until(start + plan.ramp * peer.index / max(1, plan.peers))
        try:
            await peer.connect(http, plan.url, plan.connect_timeout)
        except Exception as exc:  # this peer's result, not the worker's
            peer.error = f"connect: {type(exc).__name__}: {exc}"[:200]

    async with aiohttp.ClientSession() as http:
        tasks = [asyncio.create_task(one(p)) for p in peers]
        await _sleep_until(start + plan.t_window)
        t0 = time.time()
        cpu0 = sum(me.cpu_times()[:2])
        for p in peers:
            p.audio_at_start = p.buffer("audio").packets
        await _sleep_until(start + plan.t_end)
        t1 = time.time()
        cpu = sum(me.cpu_times()[:2]) - cpu0
        await asyncio.gather(*tasks, return_exceptions=True)
        for p in peers:
            p.audio_packets = p.buffer("audio").packets - p.audio_at_start
            p.video_frames = sum(1 for t in p.buffer("video").frame_times if t0 <= t < t1)
        for p in peers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.pc.close(), 5.0)
    return {"cpu_seconds": cpu, "window_s": t1 - t0, "peers": [
        {"index": p.index, "error": p.error, "audio_answered": p.audio_answered,
         "audio_pps": p.audio_packets / (t1 - t0), "video_fps": p.video_frames / (t1 - t0)} for p in peers]}


def _prepare() -> None:
    _install_counting()
    import aiohttp  # noqa: F401 - import (and pay for) everything before the start
    import aiortc  # noqa: F401


def _worker(plan: AudioPlan, indices: list[int], signals: Signals) -> None:
    run_worker(signals, "listen", _prepare, lambda start: asyncio.run(_main(plan, indices, start)))


class AudioLoad(WorkerPool):
    """Start the workers; `start()` once they are ready; `results()` after the window."""

    def __init__(self, plan: AudioPlan) -> None:
        self.plan = plan
        jobs = [Job(f"audio-peers-{w}", _worker, (plan, share)) for w, share in enumerate(plan.shares())]
        super().__init__("audio load workers", jobs, within=plan.t_end + plan.connect_timeout + 30.0)
