"""MJPEG load generator: worker processes, each running many asyncio raw-socket readers.

Readers parse parts cheaply (bench.mjpeg_parse); each worker decodes the stamp of only a few
frames per second, taking turns over its clients so every client's latency is sampled. All
workers share one plan with wall-clock deadlines, so they need no messages while they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import queue
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
import psutil

from bench.mjpeg_parse import MjpegParseError, MjpegParser
from camcast.stamp import STAMP_ROWS, read_stamp

_DECODE_SCALE = 2  # IMREAD_REDUCED_GRAYSCALE_2: the stamp band is 8 rows, cells >= 5 px at 640 wide
_RECV_BUFFER = 256 * 1024


@dataclass(frozen=True)
class LoadPlan:
    host: str
    port: int
    path: str
    clients: int
    workers: int
    t_connect: float  # wall clock: the first client connects
    ramp: float  # seconds over which the clients connect, evenly spread
    t_window: float  # wall clock: the measurement window starts
    t_end: float  # wall clock: it ends
    samples_per_second: float  # stamp decodes per worker
    probes: int  # fresh connections after the window (time to first frame under load)
    timeout: float = 10.0


@dataclass
class ClientStats:
    index: int
    ttff_ms: float = math.nan
    frames: int = 0  # parts completed inside the window
    max_gap_ms: float = 0.0  # longest wait between parts inside the window
    error: str = ""


@dataclass
class WorkerResult:
    clients: list[ClientStats] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)  # stamp to receipt, window only
    bad_stamps: int = 0
    probe_ttff_ms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0  # this worker's CPU over the window

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decode_stamp_us(jpeg: bytes) -> int:
    """The capture time stamped into a JPEG's top band, decoding at half size in gray."""
    small = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_2)
    if small is None:
        raise ValueError("undecodable JPEG")
    band = np.repeat(small[: STAMP_ROWS // _DECODE_SCALE], _DECODE_SCALE, axis=0)
    return read_stamp(band)


class _Sampler:
    """Hands out stamp decodes at a fixed rate, taking turns over the clients."""

    def __init__(self, rate: float, clients: int, t_window: float, t_end: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else math.inf
        self._clients = max(1, clients)
        self._turn = 0
        self._next = t_window
        self._t_end = t_end
        self.latency_ms: list[float] = []
        self.bad = 0

    def wants(self, index: int, now: float) -> bool:
        if now < self._next or now >= self._t_end:
            return False
        # The client whose turn it is; anyone once that turn is a second overdue (a stalled client).
        return index == self._turn or now > self._next + 1.0

    def took(self, now: float) -> None:
        self._turn = (self._turn + 1) % self._clients
        self._next = max(self._next + self._interval, now)

    def record(self, jpeg: bytes, received: float) -> None:
        try:
            latency = (received * 1e6 - decode_stamp_us(jpeg)) / 1000.0
        except ValueError:
            self.bad += 1
            return
        if -500.0 < latency < 10_000.0:
            self.latency_ms.append(latency)
        else:
            self.bad += 1


class _Reader(asyncio.BufferedProtocol):
    def __init__(self, stats: ClientStats, request: bytes, sampler: _Sampler | None,
                 window: tuple[float, float], turn: int = 0) -> None:
        self.stats = stats
        self._turn = turn
        self._request = request
        self._sampler = sampler
        self._t0, self._t1 = window
        self._buffer = memoryview(bytearray(_RECV_BUFFER))
        self._parser = MjpegParser(self._on_part, self._want_body)
        self._now = 0.0
        self._started = time.monotonic()
        self._last_part = 0.0
        self._sampling = False
        self.transport: asyncio.Transport | None = None
        self.first_part = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._now = time.time()  # the receipt time of every part that ends in these bytes
        try:
            self._parser.feed(self._buffer[:nbytes])
        except (MjpegParseError, ValueError) as exc:
            self.stats.error = str(exc)[:200]
            if self.transport is not None:
                self.transport.close()

    def _want_body(self) -> bool:
        sampler = self._sampler
        self._sampling = sampler is not None and sampler.wants(self._turn, time.time())
        return self._sampling

    def _on_part(self, jpeg: bytes | None) -> None:
        now = self._now
        if not self.first_part.done():
            self.stats.ttff_ms = (time.monotonic() - self._started) * 1000.0
            self.first_part.set_result(None)
        if self._t0 <= now < self._t1:
            self.stats.frames += 1
            if self._last_part >= self._t0:
                self.stats.max_gap_ms = max(self.stats.max_gap_ms, (now - self._last_part) * 1000.0)
        self._last_part = now
        if jpeg is not None and self._sampling and self._sampler is not None:
            self._sampler.took(now)
            self._sampler.record(jpeg, now)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.stats.error:
            self.stats.error = f"{type(exc).__name__}: {exc}"[:200]
        if not self.first_part.done():
            self.first_part.set_result(None)  # ttff_ms stays NaN: no frame came
        if not self.closed.done():
            self.closed.set_result(None)


def _request(plan: LoadPlan) -> bytes:
    return (f"GET {plan.path} HTTP/1.1\r\nHost: {plan.host}:{plan.port}\r\n"
            "User-Agent: camcast-bench\r\nAccept: */*\r\n\r\n").encode()


async def _sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _probe(plan: LoadPlan) -> float:
    """Time from connect to the last byte of the first part, for a fresh viewer."""
    loop = asyncio.get_running_loop()
    stats = ClientStats(index=-1)
    reader = _Reader(stats, _request(plan), None, (0.0, 0.0))
    transport, _ = await asyncio.wait_for(
        loop.create_connection(lambda: reader, plan.host, plan.port), plan.timeout)
    try:
        await asyncio.wait_for(reader.first_part, plan.timeout)
    finally:
        transport.close()
    if math.isnan(stats.ttff_ms):
        raise ConnectionError(stats.error or "closed before a frame")
    return stats.ttff_ms


async def _connect_at(plan: LoadPlan, stats: ClientStats, turn: int, sampler: _Sampler,
                      readers: list[_Reader]) -> None:
    loop = asyncio.get_running_loop()
    await _sleep_until(plan.t_connect + plan.ramp * stats.index / max(1, plan.clients))
    reader = _Reader(stats, _request(plan), sampler, (plan.t_window, plan.t_end), turn)
    readers.append(reader)
    try:
        await asyncio.wait_for(loop.create_connection(lambda: reader, plan.host, plan.port), plan.timeout)
    except (OSError, TimeoutError) as exc:
        stats.error = f"connect: {exc}"[:200]


async def _worker_main(plan: LoadPlan, indices: list[int], do_probes: bool) -> WorkerResult:
    result = WorkerResult(clients=[ClientStats(index=i) for i in indices])
    sampler = _Sampler(plan.samples_per_second, len(indices), plan.t_window, plan.t_end)
    readers: list[_Reader] = []
    me = psutil.Process()
    tasks = [asyncio.create_task(_connect_at(plan, stats, turn, sampler, readers))
             for turn, stats in enumerate(result.clients)]
    await _sleep_until(plan.t_window)
    cpu0 = sum(me.cpu_times()[:2])
    await _sleep_until(plan.t_end)
    result.cpu_seconds = sum(me.cpu_times()[:2]) - cpu0
    await asyncio.gather(*tasks, return_exceptions=True)
    if do_probes:
        for _ in range(plan.probes):
            try:
                result.probe_ttff_ms.append(await _probe(plan))
            except (OSError, TimeoutError, ConnectionError):
                result.probe_ttff_ms.append(math.nan)
            await asyncio.sleep(0.137)  # land at varied phases of the frame clock
    for reader in readers:
        if reader.transport is not None:
            reader.transport.close()
    result.latency_ms = sampler.latency_ms
    result.bad_stamps = sampler.bad
    return result


def _worker_entry(plan: LoadPlan, indices: list[int], do_probes: bool, out: Any) -> None:
    try:
        result = asyncio.run(_worker_main(plan, indices, do_probes))
        out.put(result.to_dict())
    except BaseException as exc:  # report, never hang the coordinator
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def worker_count(clients: int) -> int:
    """Enough processes that no single event loop is the bottleneck, few enough for 2 cores."""
    return max(1, min(4, math.ceil(clients / 50)))


class LoadRun:
    """Start the worker processes for a plan (they wait for its deadlines); collect their results."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        ctx = mp.get_context("spawn")
        self._queue = ctx.Queue()
        shares = [list(range(w, plan.clients, plan.workers)) for w in range(plan.workers)]
        self._procs = [
            ctx.Process(target=_worker_entry, args=(plan, share, w == 0, self._queue), daemon=True,
                        name=f"mjpeg-load-{w}")
            for w, share in enumerate(shares)
        ]
        for proc in self._procs:
            proc.start()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def results(self) -> list[dict[str, Any]]:
        deadline = self.plan.t_end + self.plan.probes * (self.plan.timeout + 0.2) + 30.0
        out: list[dict[str, Any]] = []
        try:
            while len(out) < len(self._procs):
                try:
                    out.append(self._queue.get(timeout=0.5))
                except queue.Empty:
                    dead = [p for p in self._procs if p.exitcode not in (None, 0)]
                    if dead or time.time() > deadline:
                        raise RuntimeError(f"load workers failed or hung: {dead or 'timeout'}") from None
        finally:
            for proc in self._procs:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
        errors = [r["error"] for r in out if "error" in r]
        if errors:
            raise RuntimeError("load worker failed: " + "; ".join(errors))
        return out


def usage_of(pids: list[int]) -> float:
    """CPU seconds of some processes (gone ones count as 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total
