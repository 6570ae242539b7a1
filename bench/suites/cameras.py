"""Many-cameras suite: N test-pattern cameras in one server against one camera, and idle on-demand cameras.

Three points, round-robin over the repeats, each on a fresh server started from a generated
`--config` file:
- "one": one camera with P WebRTC peers (the reference);
- "many": N cameras with P peers each (bench.webrtc_load, one load per camera at
  /cameras/<name>/: a decoding, stamp-reading peer and P-1 counting peers), cameras' peers
  connecting one camera after the other and measured over one common window;
- "idle": K on-demand cameras and no viewer: server CPU and threads over a window, then each
  camera woken in turn by an MJPEG request (timed to its first frame) once it is idle again, then
  all of them held awake for a moment (so the thread census shows what capture threads look like).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.cameras_report import build_section
from bench.cameras_server import (
    ThreadCpu,
    camera_names,
    camera_states,
    cameras_spec,
    get_json,
    scrape,
    wait_states,
    write_config,
)
from bench.cameras_wake import hold_awake, wake_samples
from bench.machine import BusyMeter, load_average
from bench.report import Section
from bench.runner import RunContext, Suite
from bench.serverproc import ServerProcess, WindowMeter
from bench.stats import percentile
from bench.suites.webrtc import SATURATED_OTHER_CORES
from bench.webrtc_load import WebrtcLoad, WebrtcPlan, usage_of

_MB = 1024 * 1024


@dataclass(frozen=True)
class CamerasSettings:
    size: str = "640x480"
    fps: float = 30.0
    cameras: int = 8  # the "many" point
    peers_per_camera: int = 5  # at the "one" and the "many" point
    window: float = 10.0  # seconds measured
    settle: float = 3.0  # seconds between the last peer connecting and the window
    ramp_per_peer: float = 0.1  # seconds between peers connecting (over all cameras)
    # Each camera's peers get a window this much longer: a camera whose client processes were ready
    # late (a busy machine) starts late, and the server's window is where all of them overlap.
    start_slack: float = 15.0
    on_demand_cameras: int = 16  # the "idle" point
    idle_timeout: float = 1.0  # the on-demand cameras' idle_timeout: idle again soon after a sample
    idle_settle: float = 3.0  # seconds after every camera reads idle before the idle window
    idle_window: float = 20.0
    wake_rounds: int = 3  # samples per repeat: wake_rounds x on_demand_cameras
    wake_timeout: float = 10.0
    awake_window: float = 2.0  # every on-demand camera held awake, for the thread census's control
    cpu_ratio_target: float = 1.15
    # A WebRTC repeat is run again (after a pause) when the rest of the machine used more than this
    # many cores during its window, or kept the 2 cores nearly saturated (as in the webrtc suite).
    max_other_cores: float = 0.8
    max_machine_cores: float = 1.85
    retries: int = 3
    retry_pause: float = 5.0


FULL = CamerasSettings()
QUICK = CamerasSettings(cameras=2, peers_per_camera=2, window=2.0, settle=1.0, start_slack=1.0,
                        on_demand_cameras=4,
                        idle_settle=1.0, idle_window=3.0, wake_rounds=1, awake_window=1.0, retries=0)


@dataclass(frozen=True)
class Point:
    kind: str  # one | many | idle
    cameras: int


def points_of(s: CamerasSettings) -> list[Point]:
    return [Point("one", 1), Point("many", s.cameras), Point("idle", s.on_demand_cameras)]


def _plans(base: str, names: list[str], s: CamerasSettings) -> list[WebrtcPlan]:
    """One plan per camera; camera i starts i ramps after the first and settles that much less, so
    every camera's window is the same stretch of time."""
    ramp = s.ramp_per_peer * s.peers_per_camera
    last = len(names) - 1
    return [WebrtcPlan(f"{base}/cameras/{name}/", s.peers_per_camera, "marker", ramp=ramp,
                       settle=s.settle + (last - i) * ramp, window=s.window + s.start_slack, probes=0)
            for i, name in enumerate(names)]


def _start(loads: list[WebrtcLoad], ramp: float) -> None:
    first = loads[0].start()
    for i, load in enumerate(loads[1:], 1):
        load.start(lead=max(0.0, first + i * ramp - time.time()))


def _camera_result(name: str, results: list[dict[str, Any]], window: float) -> dict[str, Any]:
    peers = [p for r in results for p in r["peers"]]
    measuring = next((r for r in results if r["role"] == "measure"), None)
    stamps = measuring["latency_ms"] if measuring else []
    # A frame decoded from a damaged picture reads a random stamp: outside this range it is no latency.
    latency = [x for x in stamps if -500.0 < x < 10_000.0]
    return {"name": name, "fps": [p["frames"] / window for p in peers],
            "max_gap_ms": max(p["max_gap_ms"] for p in peers),
            "latency_p50_ms": percentile(latency, 50), "latency_p99_ms": percentile(latency, 99),
            "latency_n": len(latency), "bad_stamps": len(stamps) - len(latency),
            "lost_packets": sum(p["lost_packets"] for p in peers),
            "errors": [p["error"] for p in peers if p["error"]]}


def _sleep_until(wall: float) -> None:
    time.sleep(max(0.0, wall - time.time()))


def measure_webrtc(ctx: RunContext, s: CamerasSettings, point: Point, rep: int,
                   attempt: int) -> dict[str, Any]:
    """One repeat of the one or many point, with a fresh server."""
    tag = f"cameras-{point.kind}-{point.cameras}c-r{rep}-a{attempt}"
    log = ctx.raw_dir / f"{tag}.log"
    names = camera_names(point.cameras)
    with tempfile.TemporaryDirectory(prefix="camcast-bench-") as tmp, contextlib.ExitStack() as stack:
        config = write_config(Path(tmp) / "cameras.toml", names, s.size, s.fps)
        server = stack.enter_context(ServerProcess(cameras_spec(config, tmp), log))
        wait_states(server, "up")
        time.sleep(1.0)  # every capture running a while: the idle RSS is the capture's
        idle_rss = server.usage().rss_bytes
        plans = _plans(server.url("").rstrip("/"), names, s)
        loads = []
        for plan in plans:
            loads.append(WebrtcLoad(plan))
            stack.callback(loads[-1].close)
        _start(loads, plans[0].ramp)
        _sleep_until(max(load.start_time + load.plan.t_window for load in loads))
        # Settled, just before the meters start: how many encoders each camera's peers share. (A busy
        # server answers slowly, so the window is timed from after these.)
        statuses = {n: get_json(server, f"/cameras/{n}/api/status")["webrtc"] for n in names}
        pids = [pid for load in loads for pid in load.pids]
        meter, busy = WindowMeter(server), BusyMeter()
        w0 = time.time()
        w1 = min(w0 + s.window, *(load.start_time + load.plan.t_end for load in loads))
        w1 = max(w1, w0 + 0.5)  # started too far apart: a short window, run again (see _disturbed)
        meter.begin()
        busy.begin()
        load_cpu0 = usage_of(pids)
        threads0 = ThreadCpu.of(server.pid)
        _sleep_until(w1)
        window = meter.end()
        machine = busy.end()
        loop_cores = ThreadCpu.of(server.pid).main_since(threads0) / window.seconds
        load_cores = (usage_of(pids) - load_cpu0) / window.seconds
        others = busy.top_others({server.pid, *pids})
        results = [load.results() for load in loads]
        if not server.alive():
            raise RuntimeError(f"{tag}: the server died; see {log}")
    cameras = [_camera_result(n, r, plans[0].window) for n, r in zip(names, results, strict=True)]
    fps = [f for c in cameras for f in c["fps"]]
    return {
        "point": asdict(point), "rep": rep, "attempt": attempt, "window_s": window.seconds,
        "peer_window_s": plans[0].window, "cores": window.cores, "cpu_s": window.cpu_seconds,
        "loop_cores": loop_cores,
        "fps_min": min(fps), "fps_median": percentile(fps, 50), "peers": len(fps),
        "latency_p50_ms": percentile([c["latency_p50_ms"] for c in cameras], 50),
        "latency_p99_ms": max(c["latency_p99_ms"] for c in cameras),
        "cameras": cameras,
        "encoders_running": [statuses[n].get("running_encoders") for n in names],
        "server_peers": [statuses[n].get("peers") for n in names],
        "rss_idle_mb": idle_rss / _MB, "rss_mb": window.rss_end / _MB, "rss_peak_mb": window.rss_peak / _MB,
        "load_cores": load_cores, "machine_cores": machine,
        "other_cores": max(0.0, machine - window.cores - load_cores),
        "top_other_processes": others,
        "errors": [e for c in cameras for e in c["errors"]],
    }


def _awake_census(server: ServerProcess) -> Any:
    return ThreadCpu.of(server.pid), server.usage(), time.monotonic()


def measure_idle(ctx: RunContext, s: CamerasSettings, point: Point, rep: int) -> dict[str, Any]:
    """One repeat of the idle point: K on-demand cameras, nobody watching, then woken one by one."""
    tag = f"cameras-idle-{point.cameras}c-r{rep}"
    log = ctx.raw_dir / f"{tag}.log"
    names = camera_names(point.cameras)
    with tempfile.TemporaryDirectory(prefix="camcast-bench-") as tmp:
        config = write_config(Path(tmp) / "cameras.toml", names, s.size, s.fps, on_demand=True,
                              idle_timeout=s.idle_timeout)
        with ServerProcess(cameras_spec(config, tmp), log) as server:
            wait_states(server, "idle")
            time.sleep(s.idle_settle)
            metrics0 = scrape(server)
            threads0 = ThreadCpu.of(server.pid)
            meter, busy = WindowMeter(server), BusyMeter()
            meter.begin()
            busy.begin()
            time.sleep(s.idle_window)  # nothing may happen here: no request, no viewer
            window = meter.end()
            machine = busy.end()
            threads1 = ThreadCpu.of(server.pid)
            others = busy.top_others({server.pid})
            metrics1 = scrape(server)
            states = camera_states(server)
            host, port = "127.0.0.1", server.port
            wake_busy = BusyMeter()
            wake_busy.begin()
            samples = asyncio.run(wake_samples(host, port, names, s.wake_rounds,
                                               idle_wait=s.idle_timeout + 15.0, timeout=s.wake_timeout))
            wake_machine = wake_busy.end()
            (t0, u0, m0), (t1, u1, m1), awake = asyncio.run(
                hold_awake(host, port, names, s.awake_window, lambda: _awake_census(server), s.wake_timeout))
            awake_metrics = scrape(server)
            if not server.alive():
                raise RuntimeError(f"{tag}: the server died; see {log}")
    return {
        "point": asdict(point), "rep": rep, "window_s": window.seconds, "cores": window.cores,
        "cpu_s": window.cpu_seconds, "rss_mb": window.rss_end / _MB,
        "os_threads": len(threads1.seconds), "threads_ran": len(threads1.ran_since(threads0)),
        "main_thread_cpu_s": threads1.main_since(threads0),
        "python_threads": [metrics0.get("camcast_threads"), metrics1.get("camcast_threads")],
        "source_opens": metrics1.get("camcast_source_opens_total", 0.0)
        - metrics0.get("camcast_source_opens_total", 0.0),
        "idle_cameras": sum(1 for v in states.values() if v == "idle"),
        "machine_cores": machine, "other_cores": max(0.0, machine - window.cores),
        "top_other_processes": others,
        "wake": [x.to_dict() for x in samples], "wake_machine_cores": wake_machine,
        "awake_cameras": awake, "awake_cores": (u1.cpu_seconds - u0.cpu_seconds) / (m1 - m0),
        "awake_os_threads": len(t1.seconds), "awake_threads_ran": len(t1.ran_since(t0)),
        "awake_python_threads": awake_metrics.get("camcast_threads"),
    }


def _disturbed(result: dict[str, Any], s: CamerasSettings) -> bool:
    # Saturated by the server under test and its peers is no disturbance: others must have a share.
    return bool(result["window_s"] < 0.9 * s.window  # the cameras' peers started too far apart
                or result["other_cores"] > s.max_other_cores
                or (result["machine_cores"] > s.max_machine_cores
                    and result["other_cores"] > SATURATED_OTHER_CORES))


def _run_webrtc(ctx: RunContext, s: CamerasSettings, point: Point, rep: int) -> dict[str, Any]:
    """Measure; run again (up to `retries` times) when the rest of the machine took too much CPU."""
    disturbed = []
    for attempt in range(s.retries + 1):
        result = measure_webrtc(ctx, s, point, rep, attempt)
        result["disturbed"] = _disturbed(result, s)
        if not result["disturbed"] or attempt == s.retries:
            result["disturbed_attempts"] = disturbed
            return result
        ctx.log(f"  disturbed: window {result['window_s']:.1f} s, machine {result['machine_cores']:.2f} "
                f"cores busy, other processes "
                f"{result['other_cores']:.2f} (busiest: {', '.join(result['top_other_processes']) or '-'}; "
                f"load average {load_average()}); again")
        disturbed.append({k: result[k] for k in ("cores", "fps_min", "other_cores", "machine_cores",
                                                 "top_other_processes")})
        time.sleep(s.retry_pause)
    raise AssertionError("unreachable")


def run(ctx: RunContext) -> Section:
    s = ctx.settings("cameras", FULL, QUICK)
    points = points_of(s)
    load_start = load_average()
    runs: dict[Point, list[dict[str, Any]]] = defaultdict(list)
    total = len(points) * ctx.repeats
    for i, (rep, point) in enumerate(ctx.schedule(points), 1):
        ctx.log(f"cameras {i}/{total}: {point.kind}, {point.cameras} camera(s) (repeat {rep + 1})")
        if point.kind == "idle":
            result = measure_idle(ctx, s, point, rep)
            wake = [w["ms"] for w in result["wake"] if not w["error"]]
            ctx.log(f"  idle cores {result['cores']:.4f}, threads ran {result['threads_ran']}, wake p50 "
                    f"{percentile(wake, 50):.0f} ms, p95 {percentile(wake, 95):.0f} ms")
        else:
            result = _run_webrtc(ctx, s, point, rep)
            ctx.log(f"  cores {result['cores']:.3f}, fps min {result['fps_min']:.1f}, load-gen "
                    f"{result['load_cores']:.2f} cores, other {result['other_cores']:.2f}")
        runs[point].append(result)
    loads = (load_start, load_average())
    ctx.save_raw("cameras.json", {"settings": asdict(s), "repeats": ctx.repeats, "load_average": loads,
                                  "runs": [r for rs in runs.values() for r in rs]})
    return build_section(ctx, s, runs, loads)


def rebuild(ctx: RunContext) -> Section:
    """The section again from raw/cameras.json (new tables or plots without measuring again)."""
    raw = json.loads((ctx.raw_dir / "cameras.json").read_text())
    s = CamerasSettings(**raw["settings"])
    runs: dict[Point, list[dict[str, Any]]] = defaultdict(list)
    for r in raw["runs"]:
        runs[Point(**r["point"])].append(r)
    return build_section(ctx, s, runs, tuple(raw["load_average"]))


SUITE = Suite("cameras", "Many cameras", run)
