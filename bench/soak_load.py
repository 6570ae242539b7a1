"""Soak load: client processes that keep a number of viewers alive while churning them.

- A WebRTC churn worker keeps `rtc_peers` counting peers (bench.rtc_receivers "count": no decode);
  each lives a random lifetime, then closes and is replaced by a fresh one.
- An MJPEG churn worker does the same with raw-socket readers that skip every body, and also
  holds one measuring reader for the whole run that decodes a few stamps per second.
- An optional measuring WebRTC worker holds one decoding peer (marker-aware receiver) and
  reads every frame's stamp.

Every worker runs until one wall-clock deadline, so nothing needs to be told to stop; each
returns its counts and time-stamped latency samples (seconds since the start, ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.mjpeg_load import ClientStats, LoadPlan, _Reader, _request, _Sampler
from bench.workerpool import Job, Signals, WorkerPool, run_worker


@dataclass(frozen=True)
class SoakPlan:
    host: str
    port: int
    duration: float  # seconds of load from the start time
    rtc_peers: int
    mjpeg_clients: int
    min_life: float = 5.0
    max_life: float = 30.0
    rtc_measure: bool = True
    mjpeg_samples_per_second: float = 5.0
    connect_timeout: float = 20.0
    seed: int = 1

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"


@dataclass
class SoakResult:
    role: str
    connects: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)  # the first few
    latency: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, ms)

    def fail(self, message: str) -> None:
        self.failures += 1
        if len(self.errors) < 5:
            self.errors.append(message[:200])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


def _lifetime(plan: SoakPlan, rng: random.Random) -> float:
    return rng.uniform(plan.min_life, plan.max_life)


async def _rtc_slot(plan: SoakPlan, start: float, slot: int, rng: random.Random, http: Any,
                    result: SoakResult) -> None:
    from tests.support.webrtc_viewer import Viewer

    end = start + plan.duration
    await _sleep_until(start + slot * 0.3)  # stagger the first connects
    while time.time() < end - 1.0:
        viewer = Viewer(plan.url, codecs=("h264",), control=False, read_stamps=False)
        try:
            await asyncio.wait_for(viewer.connect(http), plan.connect_timeout)
            result.connects += 1
            await asyncio.sleep(min(_lifetime(plan, rng), max(0.0, end - time.time())))
        except Exception as exc:  # a failed peer is a result, not the worker's end
            result.fail(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(viewer.close(), 5.0)


async def _rtc_churn(plan: SoakPlan, start: float) -> SoakResult:
    import aiohttp

    result = SoakResult("rtc-churn")
    rng = random.Random(plan.seed)
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(_rtc_slot(plan, start, i, random.Random(rng.random()), http, result)
                               for i in range(plan.rtc_peers)))
    return result


async def _rtc_measure(plan: SoakPlan, start: float) -> SoakResult:
    import aiohttp
    from tests.support.webrtc_viewer import Viewer

    result = SoakResult("rtc-measure")
    wall_minus_mono = time.time() - time.monotonic()
    async with aiohttp.ClientSession() as http:
        await _sleep_until(start)
        viewer = Viewer(plan.url, codecs=("h264",), control=True, read_stamps=True)
        try:
            await asyncio.wait_for(viewer.connect(http), plan.connect_timeout)
            result.connects += 1
            await _sleep_until(start + plan.duration)
            result.latency = [(f.arrived + wall_minus_mono - start, f.latency_ms) for f in viewer.frames
                              if f.latency_ms is not None]
        except Exception as exc:
            result.fail(f"{type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(viewer.close(), 5.0)
    return result


class _TimedSampler(_Sampler):
    """A stamp sampler that keeps when each sample was taken."""

    def __init__(self, rate: float, t_window: float, t_end: float) -> None:
        super().__init__(rate, 1, t_window, t_end)
        self.timed: list[tuple[float, float]] = []

    def record(self, jpeg: bytes, received: float) -> None:
        before = len(self.latency_ms)
        super().record(jpeg, received)
        if len(self.latency_ms) > before:
            self.timed.append((received, self.latency_ms[-1]))


def _mjpeg_plan(plan: SoakPlan) -> LoadPlan:
    # Only what _Reader and _request read from it.
    return LoadPlan(plan.host, plan.port, "/video.mjpg", plan.mjpeg_clients, 1, 0.0, 0.0, 0.0, 0.0, 0.0, 0)


async def _mjpeg_open(plan: SoakPlan, reader: _Reader) -> asyncio.BaseTransport:
    loop = asyncio.get_running_loop()
    transport, _ = await asyncio.wait_for(loop.create_connection(lambda: reader, plan.host, plan.port),
                                          plan.connect_timeout)
    return transport


async def _mjpeg_slot(plan: SoakPlan, start: float, slot: int, rng: random.Random,
                      result: SoakResult) -> None:
    request = _request(_mjpeg_plan(plan))
    end = start + plan.duration
    await _sleep_until(start + slot * 0.15)
    while time.time() < end - 1.0:
        reader = _Reader(ClientStats(slot), request, None, (0.0, 0.0))
        transport = None
        try:
            transport = await _mjpeg_open(plan, reader)
            result.connects += 1
            await asyncio.sleep(min(_lifetime(plan, rng), max(0.0, end - time.time())))
            if reader.stats.error:
                result.fail(reader.stats.error)
        except (OSError, TimeoutError) as exc:
            result.fail(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(1.0)
        finally:
            if transport is not None:
                transport.close()


async def _mjpeg_churn(plan: SoakPlan, start: float) -> SoakResult:
    result = SoakResult("mjpeg-churn")
    end = start + plan.duration
    sampler = _TimedSampler(plan.mjpeg_samples_per_second, start, end)
    await _sleep_until(start)
    measuring = _Reader(ClientStats(-1), _request(_mjpeg_plan(plan)), sampler, (start, end))
    transport = None
    try:
        transport = await _mjpeg_open(plan, measuring)
    except (OSError, TimeoutError) as exc:
        result.fail(f"measuring reader: {type(exc).__name__}: {exc}")
    rng = random.Random(plan.seed + 1)
    await asyncio.gather(*(_mjpeg_slot(plan, start, i, random.Random(rng.random()), result)
                           for i in range(plan.mjpeg_clients)))
    await _sleep_until(end)
    if transport is not None:
        transport.close()
    if measuring.stats.error:
        result.fail(f"measuring reader: {measuring.stats.error}")
    result.latency = [(t - start, ms) for t, ms in sampler.timed]
    return result


def _prepare(role: str) -> None:
    if role.startswith("rtc"):
        from bench.rtc_receivers import install, loopback_only

        loopback_only()
        install("count" if role == "rtc-churn" else "marker")
        import tests.support.webrtc_viewer  # noqa: F401 - pay for aiortc's import before the start


def _worker_entry(role: str, plan: SoakPlan, signals: Signals) -> None:
    main = {"rtc-churn": _rtc_churn, "rtc-measure": _rtc_measure, "mjpeg-churn": _mjpeg_churn}[role]
    run_worker(signals, role, functools.partial(_prepare, role),
               lambda start: asyncio.run(main(plan, start)).to_dict())


class SoakLoad(WorkerPool):
    """Start the workers; `start()` once they are ready; `results()` after the duration."""

    def __init__(self, plan: SoakPlan) -> None:
        self.plan = plan
        roles = ["mjpeg-churn"]
        if plan.rtc_peers:
            roles.append("rtc-churn")
        if plan.rtc_measure:
            roles.append("rtc-measure")
        super().__init__("soak workers", [Job(f"soak-{role}", _worker_entry, (role, plan)) for role in roles],
                         within=plan.duration + plan.connect_timeout + 30.0)
