"""WebRTC peers pinned to renditions (`?rendition=NAME` on POST /offer), counting frames and bytes.

The coordinator is bench.webrtc_load's (ready, one shared start time, results); only the workers
differ: every peer asks for one rendition, and its receiver (bench.rtc_receivers' counting one,
nothing reassembled or decoded) also adds up the RTP payload bytes of each complete frame, so the
report can say which rendition a peer really got (its bitrate) and at what rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from bench.webrtc_load import PeerStats, WebrtcPlan, WorkerResult
from bench.workerpool import Job, Signals, WorkerPool, run_worker


def _byte_counting_buffer() -> Any:
    """A CountingJitterBuffer that also keeps (wall time, payload bytes, packets) of every complete frame."""
    from aiortc.rtp import RtpPacket

    from bench.rtc_receivers import CountingJitterBuffer

    class ByteCountingJitterBuffer(CountingJitterBuffer):
        def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
            super().__init__(capacity, prefetch, is_video)
            self.frame_bytes: list[tuple[float, int, int]] = []
            self._bytes = 0
            self._packets = 0

        def add(self, packet: RtpPacket) -> tuple[bool, Any]:
            self._bytes += len(packet.payload)
            self._packets += 1
            counted = len(self.frame_times)
            out = super().add(packet)
            if packet.marker:
                if len(self.frame_times) > counted:  # a whole frame (no packet of it missing)
                    self.frame_bytes.append((self.frame_times[-1], self._bytes, self._packets))
                self._bytes = self._packets = 0
            return out

    return ByteCountingJitterBuffer


def install_byte_counting() -> None:
    """Every video receiver of this process counts frames and bytes (rtc_receivers' "count")."""
    import aiortc.rtcrtpreceiver as rtcrtpreceiver
    from aiortc.jitterbuffer import JitterBuffer

    from bench.rtc_receivers import install

    install("count")  # also skips depayloading: nothing reads the bytes
    video = _byte_counting_buffer()

    def make(capacity: int, prefetch: int = 0, is_video: bool = False) -> JitterBuffer:
        return (video if is_video else JitterBuffer)(capacity, prefetch, is_video)

    rtcrtpreceiver.JitterBuffer = make  # type: ignore[misc,assignment]


@dataclass
class _Peer:
    stats: PeerStats
    rendition: str
    viewer: Any
    offered: float = math.nan
    buffer: Any = None


async def _run_peer(plan: WebrtcPlan, start: float, peer: _Peer, http: Any) -> None:
    from bench.rtc_receivers import jitter_buffer_of

    await asyncio.sleep(max(0.0, start + plan.ramp * peer.stats.index / max(1, plan.peers) - time.time()))
    try:
        await asyncio.wait_for(peer.viewer.connect(http), plan.connect_timeout)
        peer.offered = time.time() - (time.monotonic() - peer.viewer.offer_sent_at)
    except Exception as exc:  # any failure is this peer's result, not the worker's
        peer.stats.error = f"connect: {type(exc).__name__}: {exc}"[:200]
        return
    peer.buffer = jitter_buffer_of(peer.viewer.transceiver.receiver)


async def _main(plan: WebrtcPlan, peers: list[tuple[int, str]], start: float) -> dict[str, Any]:
    import aiohttp
    from tests.support.webrtc_viewer import Viewer

    result = WorkerResult("count")
    me = psutil.Process()
    t0, t1 = start + plan.t_window, start + plan.t_end
    rows: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        group = [_Peer(PeerStats(i), name, Viewer(plan.url, codecs=(plan.codec,), control=False,
                                                  read_stamps=False, query=f"?rendition={name}"))
                 for i, name in peers]
        tasks = [asyncio.create_task(_run_peer(plan, start, p, http)) for p in group]
        await asyncio.sleep(max(0.0, t0 - time.time()))
        cpu0 = sum(me.cpu_times()[:2])
        await asyncio.sleep(max(0.0, t1 - time.time()))
        result.cpu_seconds = sum(me.cpu_times()[:2]) - cpu0
        await asyncio.gather(*tasks, return_exceptions=True)
        for p in group:
            s = p.stats
            inside: list[float] = []
            nbytes = npackets = 0
            if p.buffer is not None:
                times = p.buffer.frame_times
                if times:
                    s.ttff_ms = (times[0] - p.offered) * 1000.0
                s.lost_packets = p.buffer.lost
                inside = [t for t in times if t0 <= t < t1]
                nbytes = sum(b for t, b, _ in p.buffer.frame_bytes if t0 <= t < t1)
                npackets = sum(n for t, _, n in p.buffer.frame_bytes if t0 <= t < t1)
            s.frames = len(inside)
            edges = [t0, *inside, t1]
            s.max_gap_ms = max(b - a for a, b in itertools.pairwise(edges)) * 1000.0
            rows.append({**asdict(s), "rendition": p.rendition, "bytes": nbytes,
                         "packets": npackets})
        for p in group:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.viewer.close(), 5.0)
    return {"role": "count", "peers": rows, "cpu_seconds": result.cpu_seconds}


def _prepare() -> None:
    from bench.rtc_receivers import loopback_only

    loopback_only()
    install_byte_counting()
    import tests.support.webrtc_viewer  # noqa: F401 - import (and pay for) aiortc before the start


def _worker_entry(plan: WebrtcPlan, peers: list[tuple[int, str]], signals: Signals) -> None:
    run_worker(signals, "count", _prepare, lambda start: asyncio.run(_main(plan, peers, start)))


def plan_peers(renditions: list[str], peers_per_worker: int) -> list[list[tuple[int, str]]]:
    """(index, rendition) of every peer, dealt round-robin to as few workers as hold them."""
    indexed = list(enumerate(renditions))
    workers = max(1, math.ceil(len(indexed) / peers_per_worker))
    return [indexed[w::workers] for w in range(workers)]


class RenditionLoad(WorkerPool):
    """Counting peers, each pinned to its rendition; `start()` and `results()` as WebrtcLoad's."""

    def __init__(self, plan: WebrtcPlan, renditions: list[str]) -> None:
        assert not plan.measure and plan.peers == len(renditions)
        self.plan = plan
        jobs = [Job(f"renditions-count-{w}", _worker_entry, (plan, share))
                for w, share in enumerate(plan_peers(renditions, plan.peers_per_worker))]
        super().__init__("rendition load workers", jobs, within=plan.t_end + plan.connect_timeout + 30.0)
