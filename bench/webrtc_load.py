"""WebRTC load generator: client processes, each with many aiortc peers, plus one measuring peer.

- Counting workers hold many peers whose receivers count frames without decoding them
  (bench.rtc_receivers "count"): the server's work per peer is the same as for a real viewer.
- The measuring worker holds one peer that decodes every frame and reads its stamp
  (capture-to-decode latency), with aiortc's stock receiver or the marker-aware one; after the
  window it times fresh peers from offer to first decoded frame while the load still runs.

Workers import aiortc first and say they are ready; the coordinator then sets one start time
(wall clock) that every deadline of the plan is relative to, so a slow start on a busy machine
cannot eat into the ramp or the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from bench.workerpool import Job, Signals, WorkerPool, run_worker


@dataclass(frozen=True)
class WebrtcPlan:
    url: str  # http://127.0.0.1:PORT/
    peers: int  # in all, the measuring peer included when there is one
    measure: str  # receiver of the measuring peer: "marker", "stock", or "" (counting peers only)
    ramp: float  # seconds over which the peers connect, evenly spread, from the start time
    settle: float  # seconds from the last connect to the window
    window: float  # seconds measured
    probes: int = 0  # fresh measuring peers timed after the window
    peers_per_worker: int = 25
    codec: str = "h264"
    connect_timeout: float = 20.0
    probe_timeout: float = 10.0

    @property
    def t_window(self) -> float:  # seconds after the start time
        return self.ramp + self.settle

    @property
    def t_end(self) -> float:
        return self.t_window + self.window

    @property
    def counting_peers(self) -> int:
        return self.peers - (1 if self.measure else 0)

    def shares(self) -> list[list[int]]:
        """Peer indices of each counting worker (index 0 is the measuring peer when there is one)."""
        first = 1 if self.measure else 0
        indices = list(range(first, self.peers))
        workers = max(1, math.ceil(len(indices) / self.peers_per_worker)) if indices else 0
        return [indices[w::workers] for w in range(workers)]


@dataclass
class PeerStats:
    index: int
    ttff_ms: float = math.nan  # offer sent to first frame (counted or decoded)
    frames: int = 0  # inside the window
    max_gap_ms: float = math.nan  # longest wait between frames inside the window
    lost_packets: int = 0
    error: str = ""


@dataclass
class WorkerResult:
    role: str  # "count" or "measure"
    peers: list[PeerStats] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)  # measuring peer: stamp to decoded, window
    stock_hold_ms: list[float] = field(default_factory=list)  # marker-aware: what stock aiortc adds
    probe_ttff_ms: list[float] = field(default_factory=list)
    probe_errors: list[str] = field(default_factory=list)
    decode_errors: int = 0
    cpu_seconds: float = 0.0  # this worker over the window

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _window_stats(stats: PeerStats, times: list[float], t0: float, t1: float) -> None:
    inside = [t for t in times if t0 <= t < t1]
    stats.frames = len(inside)
    edges = [t0, *inside, t1]
    stats.max_gap_ms = max(b - a for a, b in itertools.pairwise(edges)) * 1000.0


async def _sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


def _viewer(url: str, plan: WebrtcPlan, measuring: bool) -> Any:
    from tests.support.webrtc_viewer import Viewer

    # The measuring peer is a player: control channel, decodes and reads stamps. Counting peers
    # skip the data channel (it is not what is being measured and costs SCTP timers).
    return Viewer(url, codecs=(plan.codec,), control=measuring, read_stamps=measuring)


async def _connect(viewer: Any, http: Any, timeout: float) -> float:
    """Offer and apply the answer; returns the wall time the offer was sent."""
    await asyncio.wait_for(viewer.connect(http), timeout)
    return time.time() - (time.monotonic() - viewer.offer_sent_at)


@dataclass
class _Counted:
    viewer: Any
    offered: float = math.nan  # wall time the offer went
    buffer: Any = None  # its CountingJitterBuffer once connected


async def _count_peer(plan: WebrtcPlan, start: float, stats: PeerStats, http: Any, peer: _Counted) -> None:
    from bench.rtc_receivers import CountingJitterBuffer, jitter_buffer_of

    await _sleep_until(start + plan.ramp * stats.index / max(1, plan.peers))
    try:
        peer.offered = await _connect(peer.viewer, http, plan.connect_timeout)
    except Exception as exc:  # any failure is this peer's result, not the worker's
        stats.error = f"connect: {type(exc).__name__}: {exc}"[:200]
        return
    buffer = jitter_buffer_of(peer.viewer.transceiver.receiver)
    assert isinstance(buffer, CountingJitterBuffer), "the counting receiver is not installed"
    peer.buffer = buffer


async def _count_main(plan: WebrtcPlan, indices: list[int], start: float, stop: Any) -> WorkerResult:
    import aiohttp

    result = WorkerResult("count", [PeerStats(i) for i in indices])
    me = psutil.Process()
    async with aiohttp.ClientSession() as http:
        peers = [_Counted(_viewer(plan.url, plan, measuring=False)) for _ in indices]
        tasks = [asyncio.create_task(_count_peer(plan, start, s, http, p))
                 for s, p in zip(result.peers, peers, strict=True)]
        await _sleep_until(start + plan.t_window)
        cpu0 = sum(me.cpu_times()[:2])
        await _sleep_until(start + plan.t_end)
        result.cpu_seconds = sum(me.cpu_times()[:2]) - cpu0
        await asyncio.gather(*tasks, return_exceptions=True)
        if plan.measure and plan.probes:
            # Stay connected while the measuring worker times new peers under this load.
            hold_until = time.monotonic() + plan.probes * (plan.probe_timeout + 1.0) + 10.0
            while not stop.is_set() and time.monotonic() < hold_until:
                await asyncio.sleep(0.1)
        for s, p in zip(result.peers, peers, strict=True):
            if p.buffer is None:
                continue
            times = p.buffer.frame_times
            if times:
                s.ttff_ms = (times[0] - p.offered) * 1000.0
            s.lost_packets = p.buffer.lost
            _window_stats(s, times, start + plan.t_window, start + plan.t_end)
        for p in peers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.viewer.close(), 5.0)
    return result


async def _first_decoded(plan: WebrtcPlan, http: Any) -> tuple[Any, float, float]:
    """Connect a measuring peer; returns it, the wall time its offer went and the ms to its first frame."""
    viewer = _viewer(plan.url, plan, measuring=True)
    offered = await _connect(viewer, http, plan.connect_timeout)
    await viewer.wait_frames(1, plan.probe_timeout)
    return viewer, offered, (viewer.frames[0].arrived - viewer.offer_sent_at) * 1000.0


async def _measure_main(plan: WebrtcPlan, start: float) -> WorkerResult:
    import aiohttp

    from bench.rtc_receivers import MarkerJitterBuffer, jitter_buffer_of

    result = WorkerResult("measure", [PeerStats(0)])
    stats = result.peers[0]
    me = psutil.Process()
    wall_minus_mono = time.time() - time.monotonic()
    async with aiohttp.ClientSession() as http:
        await _sleep_until(start)
        viewer = None
        try:
            viewer, _offered, stats.ttff_ms = await _first_decoded(plan, http)
        except Exception as exc:
            stats.error = f"connect: {type(exc).__name__}: {exc}"[:200]
        await _sleep_until(start + plan.t_window)
        cpu0 = sum(me.cpu_times()[:2])
        await _sleep_until(start + plan.t_end)
        result.cpu_seconds = sum(me.cpu_times()[:2]) - cpu0
        if viewer is not None:
            t0, t1 = start + plan.t_window, start + plan.t_end
            inside = [f for f in viewer.frames if t0 <= f.arrived + wall_minus_mono < t1]
            result.latency_ms = [f.latency_ms for f in inside if f.latency_ms is not None]
            _window_stats(stats, [f.arrived + wall_minus_mono for f in viewer.frames], t0, t1)
            result.decode_errors = viewer.decode_errors
            buffer = jitter_buffer_of(viewer.transceiver.receiver)
            if isinstance(buffer, MarkerJitterBuffer):
                result.stock_hold_ms = buffer.stock_hold_ms[30:]  # past the start-up
            await viewer.close()
        for _ in range(plan.probes):
            await asyncio.sleep(0.37)  # land at varied phases of the frame clock
            probe = None
            try:
                probe, _, ttff = await _first_decoded(plan, http)
                result.probe_ttff_ms.append(ttff)
            except Exception as exc:
                result.probe_errors.append(f"{type(exc).__name__}: {exc}"[:200])
            finally:
                if probe is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(probe.close(), 5.0)
    return result


def _prepare(role: str, plan: WebrtcPlan) -> None:
    from bench.rtc_receivers import install, loopback_only

    loopback_only()
    install("count" if role == "count" else plan.measure)
    import tests.support.webrtc_viewer  # noqa: F401 - import (and pay for) aiortc before the start


def _run(role: str, plan: WebrtcPlan, indices: list[int], stop: Any, start: float) -> dict[str, Any]:
    if role == "count":
        return asyncio.run(_count_main(plan, indices, start, stop)).to_dict()
    return asyncio.run(_measure_main(plan, start)).to_dict()


def _worker_entry(role: str, plan: WebrtcPlan, indices: list[int], signals: Signals) -> None:
    run_worker(signals, role, functools.partial(_prepare, role, plan),
               functools.partial(_run, role, plan, indices, signals.stop))


class WebrtcLoad(WorkerPool):
    """Start the workers of a plan; `start()` once they are ready; `results()` when the window is over:
    the counting workers let go once the measuring one is done."""

    def __init__(self, plan: WebrtcPlan) -> None:
        self.plan = plan
        jobs = [Job(f"webrtc-count-{w}", _worker_entry, ("count", plan, share))
                for w, share in enumerate(plan.shares(), start=1 if plan.measure else 0)]
        if plan.measure:
            jobs.insert(0, Job("webrtc-measure-0", _worker_entry, ("measure", plan, [0])))
        within = plan.t_end + plan.probes * (plan.probe_timeout + 1.5) + plan.connect_timeout + 30.0
        super().__init__("webrtc load workers", jobs, within, on_result=self._measured)

    def _measured(self, result: dict[str, Any]) -> None:
        if result.get("role") == "measure":
            self.signals.stop.set()


def usage_of(pids: list[int]) -> float:
    """CPU seconds of some processes (gone ones count as 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total
