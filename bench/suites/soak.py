"""Soak suite: one server for minutes under churning WebRTC and MJPEG viewers; RSS, fds and latency
should stay flat.

One fresh camcast server; client processes (bench.soak_load) keep about `rtc_peers` counting
WebRTC peers and `mjpeg_clients` MJPEG readers connected, each living a random 5-30 s before a
fresh one replaces it, plus one measuring MJPEG reader and one decoding WebRTC peer reading
stamps. Every `every` seconds the server's RSS, open fds, threads and asyncio tasks (/metrics)
are sampled along with the latency p50 over the interval; after the load stops, the fds are
watched until they return to their idle baseline.
"""

from __future__ import annotations

import contextlib
import math
import re
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import psutil

from bench.machine import camcast_spec, load_average
from bench.plots import Series, line_plot
from bench.report import Check, Figure, Section, Table
from bench.runner import RunContext, Suite
from bench.serverproc import ServerProcess
from bench.soak_load import SoakLoad, SoakPlan
from bench.stats import percentile

_MB = 1024 * 1024
RSS_GROWTH_LIMIT = 0.10  # growth allowed from the end of the first minute to the end
FD_TOLERANCE = 2  # fds above the idle baseline still counted as returned (a log rotation, a cache)


@dataclass(frozen=True)
class SoakSettings:
    size: str = "640x480"
    fps: float = 30.0
    duration: float = 600.0  # seconds of load
    rtc_peers: int = 10
    mjpeg_clients: int = 20
    min_life: float = 5.0
    max_life: float = 30.0
    every: float = 5.0  # seconds between samples
    warmup: float = 60.0  # RSS growth and slopes are taken from here (or a third of the run if shorter)
    drain: float = 45.0  # at most this long after the load for the fds to return to the baseline
    rtc_measure: bool = True


FULL = SoakSettings()
QUICK = SoakSettings(duration=20.0, every=2.0, min_life=3.0, max_life=8.0, drain=15.0)


@dataclass
class Sample:
    t: float  # seconds since the load started (negative: before, idle)
    rss_mb: float
    fds: int
    threads: int
    tasks: float  # camcast_asyncio_tasks, NaN when not scraped
    rtc_viewers: float
    mjpeg_viewers: float
    mjpeg_p50_ms: float = math.nan  # over the interval that ends at t
    rtc_p50_ms: float = math.nan


_METRIC = re.compile(r'^(camcast_asyncio_tasks|camcast_viewers)(\{[^}]*\})?\s+([0-9.eE+-]+|NaN)$', re.M)


def _scrape(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError):
        with urllib.request.urlopen(url, timeout=2.0) as response:
            text = response.read().decode()
        for name, labels, value in _METRIC.findall(text):
            kind = re.search(r'kind="([^"]+)"', labels or "")
            out[f"{name}:{kind.group(1)}" if kind else name] = float(value)
    return out


def _sample(server: ServerProcess, t: float) -> Sample:
    proc = psutil.Process(server.pid)
    with proc.oneshot():
        fds, threads = proc.num_fds(), proc.num_threads()
    metrics = _scrape(server.url("/metrics"))
    return Sample(t, server.usage().rss_bytes / _MB, fds, threads,
                  metrics.get("camcast_asyncio_tasks", math.nan),
                  metrics.get("camcast_viewers:webrtc", math.nan),
                  metrics.get("camcast_viewers:mjpeg", math.nan))


def _slope_per_minute(samples: list[Sample], attr: str) -> float:
    if len(samples) < 3:
        return math.nan
    x = np.array([s.t for s in samples]) / 60.0
    y = np.array([getattr(s, attr) for s in samples], dtype=float)
    return float(np.polyfit(x, y, 1)[0])


def _interval_p50(latency: list[list[float]], t0: float, t1: float) -> float:
    return percentile([ms for t, ms in latency if t0 < t <= t1], 50)


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def run(ctx: RunContext) -> Section:
    s = ctx.settings("soak", FULL, QUICK)
    recordings = tempfile.mkdtemp(prefix="camcast-bench-soak-")
    spec = camcast_spec(s.size, s.fps, recordings)
    samples: list[Sample] = []
    results: list[dict[str, Any]] = []
    after: list[Sample] = []
    ctx.log(f"soak: {s.duration:g} s, {s.rtc_peers} WebRTC + {s.mjpeg_clients} MJPEG churning "
            f"({s.min_life:g}-{s.max_life:g} s lives), load average {load_average()}")
    with ServerProcess(spec, ctx.raw_dir / "soak_server.log") as server:
        plan = SoakPlan("127.0.0.1", server.port, s.duration, s.rtc_peers, s.mjpeg_clients,
                        s.min_life, s.max_life, s.rtc_measure)
        load = SoakLoad(plan)
        try:
            time.sleep(1.0)  # the server idles a moment: the baseline
            baseline = _sample(server, -1.0)
            start = load.start()
            n = int(s.duration // s.every)
            for i in range(n + 1):
                t = i * s.every
                delay = start + t - time.time()
                if delay > 0:
                    time.sleep(delay)
                if not server.alive():
                    raise RuntimeError("the server died during the soak")
                samples.append(_sample(server, time.time() - start))
                if i and i % max(1, int(60 / s.every)) == 0:
                    last = samples[-1]
                    ctx.log(f"soak: t={last.t:.0f} s RSS {last.rss_mb:.1f} MB, {last.fds} fds, "
                            f"{last.threads} threads, {last.tasks:g} tasks")
            results = load.results()
        finally:
            load.close()
        # The load is gone: watch the fds come back to the idle baseline (peers time out, sockets close).
        drain_end = time.monotonic() + s.drain
        t_stop = time.time() - start
        while time.monotonic() < drain_end:
            after.append(_sample(server, time.time() - start))
            if after[-1].fds <= baseline.fds and after[-1].rtc_viewers in (0.0,) \
                    and after[-1].mjpeg_viewers in (0.0,):
                break
            time.sleep(1.0)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError("soak worker failed: " + "; ".join(errors))
    by_role = {r["role"]: r for r in results}
    mjpeg_lat = by_role.get("mjpeg-churn", {}).get("latency", [])
    rtc_lat = by_role.get("rtc-measure", {}).get("latency", [])
    for prev, cur in zip([None, *samples], samples, strict=False):
        t0 = prev.t if prev is not None else -math.inf
        cur.mjpeg_p50_ms = _interval_p50(mjpeg_lat, t0, cur.t)
        cur.rtc_p50_ms = _interval_p50(rtc_lat, t0, cur.t)
    ctx.save_raw("soak.json", {"settings": asdict(s), "baseline": asdict(baseline),
                               "samples": [asdict(x) for x in samples], "after": [asdict(x) for x in after],
                               "results": [{k: v for k, v in r.items() if k != "latency"} for r in results]})
    return _section(ctx, s, baseline, samples, after, t_stop, by_role, mjpeg_lat, rtc_lat)


def _section(ctx: RunContext, s: SoakSettings, baseline: Sample, samples: list[Sample], after: list[Sample],
             t_stop: float, by_role: dict[str, dict[str, Any]], mjpeg_lat: list[list[float]],
             rtc_lat: list[list[float]]) -> Section:
    warmup = min(s.warmup, s.duration / 3)
    steady = [x for x in samples if x.t >= warmup - 0.5] or samples
    ref, end, middle = steady[0], samples[-1], samples[len(samples) // 2]
    final = after[-1] if after else end
    growth = (end.rss_mb - ref.rss_mb) / ref.rss_mb
    rss_slope = _slope_per_minute(steady, "rss_mb")
    # A one-off rise that levels off (allocator pools, caches) has a near-zero slope in the second half.
    late_slope = _slope_per_minute([x for x in samples if x.t >= s.duration / 2], "rss_mb")
    fds_slope = _slope_per_minute(steady, "fds")
    fds_back = final.fds <= baseline.fds + FD_TOLERANCE
    peak_fds = max(x.fds for x in samples)

    def row(name: str, attr: str, digits: int, slope: bool) -> list[str]:
        values = [getattr(x, attr) for x in (baseline, ref, middle, end, final)]
        cells = [_fmt(float(v), digits) for v in values]
        return [name, *cells, _fmt(_slope_per_minute(steady, attr), 2) if slope else "-"]

    headers = ["", "idle (before)", f"start (t={ref.t:.0f} s)", f"middle (t={middle.t:.0f} s)",
               f"end (t={end.t:.0f} s)", f"after the load (t={final.t:.0f} s)", "slope per minute (steady)"]
    table = Table("Server over the run", headers, [
        row("RSS (MB, with children)", "rss_mb", 1, True),
        row("open fds", "fds", 0, True),
        row("threads", "threads", 0, True),
        row("asyncio tasks (/metrics)", "tasks", 0, True),
        row("WebRTC viewers (/metrics)", "rtc_viewers", 0, False),
        row("MJPEG viewers (/metrics)", "mjpeg_viewers", 0, False),
        row("MJPEG stamp latency p50 over the interval (ms)", "mjpeg_p50_ms", 1, True),
        row("WebRTC stamp latency p50 over the interval (ms)", "rtc_p50_ms", 1, True),
    ], note=f"\"start\" is the first sample after the warm-up ({warmup:.0f} s); slopes are least-squares "
            f"fits over the samples from there to the end of the load.")
    churn = by_role.get("mjpeg-churn", {}), by_role.get("rtc-churn", {})
    churn_table = Table("Churn", ["clients", "kept alive", "connections made", "failures", "first errors"], [
        ["MJPEG", str(s.mjpeg_clients), str(churn[0].get("connects", 0)), str(churn[0].get("failures", 0)),
         "; ".join(churn[0].get("errors", [])) or "-"],
        ["WebRTC (counting peers)", str(s.rtc_peers), str(churn[1].get("connects", 0)),
         str(churn[1].get("failures", 0)), "; ".join(churn[1].get("errors", [])) or "-"],
    ])
    lat_all = [ms for _, ms in mjpeg_lat]
    rtc_all = [ms for _, ms in rtc_lat]
    checks = [
        Check("RSS stays flat", f"growth < {RSS_GROWTH_LIMIT:.0%} from t={ref.t:.0f} s to the end",
              f"{ref.rss_mb:.1f} → {end.rss_mb:.1f} MB ({growth:+.1%}), slope {rss_slope:+.2f} MB/min "
              f"({late_slope:+.2f} MB/min over the second half)",
              growth < RSS_GROWTH_LIMIT),
        Check("fds return to the baseline", f"≤ idle baseline + {FD_TOLERANCE} after the load",
              f"idle {baseline.fds}, peak {peak_fds}, end of load {end.fds}, "
              f"{final.t - t_stop:.0f} s after the load {final.fds}; slope {fds_slope:+.2f}/min",
              fds_back),
        Check("latency stays flat", "p50 of the last minute within 2x of the first (after warm-up)",
              f"MJPEG p50 {percentile(lat_all, 50):.1f} ms, p99 {percentile(lat_all, 99):.1f} ms; "
              f"WebRTC p50 {percentile(rtc_all, 50):.1f} ms, p99 {percentile(rtc_all, 99):.1f} ms",
              _latency_flat(mjpeg_lat, warmup, s.duration)),
    ]
    figures = _plots(ctx, baseline, samples + after, t_stop)
    intro = (f"One camcast server ({s.size}@{s.fps:g}, test pattern) for {s.duration:g} s while "
             f"{s.rtc_peers} counting WebRTC peers and {s.mjpeg_clients} MJPEG readers churn (each lives "
             f"{s.min_life:g}-{s.max_life:g} s, then a fresh one replaces it), plus one measuring MJPEG "
             f"reader and one decoding WebRTC peer reading stamps. Sampled every {s.every:g} s.")
    notes = [f"load average at the end {load_average()}; the machine is shared, so latency spikes can "
             "come from other work."]
    return Section("soak", "Soak: churning viewers for minutes", intro, checks, [table, churn_table], figures,
                   notes)


def _latency_flat(latency: list[list[float]], warmup: float, duration: float) -> bool | None:
    span = min(60.0, (duration - warmup) / 2)
    first = [ms for t, ms in latency if warmup <= t < warmup + span]
    last = [ms for t, ms in latency if duration - span <= t <= duration]
    if not first or not last:
        return None
    return percentile(last, 50) <= 2 * percentile(first, 50) + 5.0


def _plots(ctx: RunContext, baseline: Sample, samples: list[Sample], t_stop: float) -> list[Figure]:
    xs = [x.t for x in samples]
    rss = line_plot(ctx.out_dir / "soak_rss.png", "Server RSS over the soak",
                    "seconds since the load started", "MB",
                    [Series("RSS (server and children)", xs, [x.rss_mb for x in samples], color="C0")],
                    hlines=[(baseline.rss_mb, "idle")])
    fds = line_plot(ctx.out_dir / "soak_fds.png", "Server fds, threads and asyncio tasks over the soak",
                    "seconds since the load started", "count",
                    [Series("open fds", xs, [x.fds for x in samples], color="C1"),
                     Series("threads", xs, [x.threads for x in samples], color="C2"),
                     Series("asyncio tasks", xs, [x.tasks for x in samples], color="C4")],
                    hlines=[(baseline.fds, "idle fds")])
    lat = line_plot(ctx.out_dir / "soak_latency.png", "Stamp latency p50 per interval over the soak",
                    "seconds since the load started", "ms",
                    [Series("MJPEG (measuring reader)", xs, [x.mjpeg_p50_ms for x in samples], color="C0"),
                     Series("WebRTC (decoding peer)", xs, [x.rtc_p50_ms for x in samples], color="C3")])
    after = f"the load stops at t={t_stop:.0f} s; later points are the drain"
    return [Figure(rss.name, f"Server RSS every sample ({after})"),
            Figure(fds.name, f"Open fds, threads and asyncio tasks ({after})"),
            Figure(lat.name, "Capture-to-receipt (MJPEG) and capture-to-decode (WebRTC) p50 per interval")]


SUITE = Suite("soak", "Soak", run)
