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
import itertools
import math
import multiprocessing as mp
import queue
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

READY_TIMEOUT = 60.0


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


def _worker_entry(role: str, plan: WebrtcPlan, indices: list[int], out: Any, go: Any, t0: Any,
                  stop: Any) -> None:
    try:
        from bench.rtc_receivers import install, loopback_only

        loopback_only()
        install("count" if role == "count" else plan.measure)
        import tests.support.webrtc_viewer  # noqa: F401 - import (and pay for) aiortc before the start

        out.put({"ready": role})
        if not go.wait(READY_TIMEOUT * 2):
            raise TimeoutError("no start signal")
        start = t0.value
        if role == "count":
            result = asyncio.run(_count_main(plan, indices, start, stop))
        else:
            result = asyncio.run(_measure_main(plan, start))
        out.put(result.to_dict())
    except BaseException as exc:  # report, never hang the coordinator
        out.put({"error": f"{role}: {type(exc).__name__}: {exc}"})


class WebrtcLoad:
    """Start the workers of a plan; `start()` once they are ready; `results()` when the window is over."""

    def __init__(self, plan: WebrtcPlan) -> None:
        self.plan = plan
        ctx = mp.get_context("spawn")
        self._queue = ctx.Queue()
        self._go = ctx.Event()
        self._stop = ctx.Event()
        self._t0 = ctx.Value("d", 0.0)
        jobs = [("count", share) for share in plan.shares()]
        if plan.measure:
            jobs.insert(0, ("measure", [0]))
        self._procs = [
            ctx.Process(target=_worker_entry, name=f"webrtc-{role}-{w}", daemon=True,
                        args=(role, plan, share, self._queue, self._go, self._t0, self._stop))
            for w, (role, share) in enumerate(jobs)
        ]
        for proc in self._procs:
            proc.start()
        self.start_time = math.nan
        self._early: list[dict[str, Any]] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def start(self, lead: float = 0.3) -> float:
        """Wait until every worker is ready, then start the plan `lead` seconds from now (wall)."""
        ready = 0
        deadline = time.monotonic() + READY_TIMEOUT
        while ready < len(self._procs):
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in self._procs):
                    self.close()
                    raise RuntimeError("webrtc load workers did not start") from None
                continue
            if "ready" in item:
                ready += 1
            else:
                self._early.append(item)
                if "error" in item:
                    self.close()
                    raise RuntimeError(item["error"])
        self.start_time = time.time() + lead
        self._t0.value = self.start_time
        self._go.set()
        return self.start_time

    def results(self) -> list[dict[str, Any]]:
        """Every worker's result; the counting workers let go once the measuring one is done."""
        plan = self.plan
        deadline = (self.start_time + plan.t_end + plan.probes * (plan.probe_timeout + 1.5)
                    + plan.connect_timeout + 30.0)
        out = list(self._early)
        try:
            while len(out) < len(self._procs):
                try:
                    item = self._queue.get(timeout=0.5)
                except queue.Empty:
                    dead = [p.name for p in self._procs if p.exitcode not in (None, 0)]
                    if dead or time.time() > deadline:
                        raise RuntimeError(f"webrtc load workers failed or hung: {dead or 'timeout'}") \
                            from None
                    continue
                out.append(item)
                if item.get("role") == "measure":
                    self._stop.set()
                if "error" in item:
                    raise RuntimeError("webrtc load worker failed: " + item["error"])
        finally:
            self.close()
        return out

    def close(self) -> None:
        self._stop.set()
        if not self._go.is_set():  # never started: nothing to wind down
            for proc in self._procs:
                proc.terminate()
        for proc in self._procs:
            proc.join(15)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def usage_of(pids: list[int]) -> float:
    """CPU seconds of some processes (gone ones count as 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total
