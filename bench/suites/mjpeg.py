"""MJPEG suite: camcast's shared-encode MJPEG against the classic one-encode-per-client Flask design.

For each point (server, size, clients) and each repeat: start the server fresh, connect the
clients from separate worker processes, let them settle, then measure over a window the
server's CPU seconds and RSS, every client's delivered fps, capture-to-receipt latency from the
frame stamp, and time to first frame of new viewers arriving while the load runs.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from bench.mjpeg_load import LoadPlan, LoadRun, usage_of
from bench.plots import Samples, Series, cdf_plot, line_plot
from bench.report import Check, Figure, Section, Table
from bench.runner import RunContext, Suite
from bench.serverproc import ServerProcess, ServerSpec, WindowMeter, python_module
from bench.stats import Repeats, percentile

_READY = r"at http://127\.0\.0\.1:(\d+)/"
_MB = 1024 * 1024


@dataclass(frozen=True)
class MjpegSettings:
    size: str = "640x480"
    fps: float = 30.0
    quality: int = 80
    clients: tuple[int, ...] = (1, 16, 64, 128, 200)
    baseline_clients: tuple[int, ...] = (1, 16, 64)
    hd_size: str = "1280x720"
    hd_clients: tuple[int, ...] = (1, 64, 200)
    hd_baseline_clients: tuple[int, ...] = (1, 16)
    window: float = 10.0  # seconds measured
    warmup: float = 2.0  # seconds between the last client connecting and the window
    probes: int = 10  # new viewers timed (first frame) after each window
    samples_per_second: float = 30.0  # stamp decodes per load worker (every frame of one client)
    clients_per_worker: int = 50


FULL = MjpegSettings()
QUICK = MjpegSettings(clients=(1, 16), baseline_clients=(16,), hd_clients=(16,), hd_baseline_clients=(),
                      window=2.0, warmup=1.0, probes=3)


@dataclass(frozen=True)
class Point:
    server: str  # camcast | flask
    size: str
    clients: int

    @property
    def series(self) -> str:
        return f"{self.server} {self.size}"


def server_spec(server: str, size: str, s: MjpegSettings, recordings: str) -> ServerSpec:
    if server == "camcast":
        argv = python_module("camcast", "--source", "testpattern", "--host", "127.0.0.1", "--port", "0",
                             "--size", size, "--fps", f"{s.fps:g}", "--jpeg-quality", str(s.quality),
                             "--recordings", recordings, "--log-level", "warning")
    elif server == "flask":
        argv = python_module("bench.baselines.flask_mjpeg", "--port", "0", "--size", size,
                             "--fps", f"{s.fps:g}", "--quality", str(s.quality))
    else:
        raise ValueError(server)
    return ServerSpec(server, argv, _READY)


def points_of(s: MjpegSettings) -> list[Point]:
    points = [Point("camcast", s.size, n) for n in s.clients]
    points += [Point("flask", s.size, n) for n in s.baseline_clients]
    points += [Point("camcast", s.hd_size, n) for n in s.hd_clients]
    points += [Point("flask", s.hd_size, n) for n in s.hd_baseline_clients]
    return points


def _machine_busy() -> tuple[float, float]:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle, time.monotonic()


def measure(ctx: RunContext, s: MjpegSettings, point: Point, rep: int) -> dict[str, Any]:
    """One repeat of one point, with a fresh server."""
    tag = f"{point.server}-{point.size}-{point.clients}c-r{rep}"
    log = ctx.raw_dir / f"{tag}.log"
    with tempfile.TemporaryDirectory(prefix="camcast-bench-") as tmp, \
            ServerProcess(server_spec(point.server, point.size, s, tmp), log) as server:
        time.sleep(0.5)  # capture running
        idle_rss = server.usage().rss_bytes
        workers = max(1, math.ceil(point.clients / s.clients_per_worker))
        ramp = min(2.0, 0.01 * point.clients)
        t_connect = time.time() + 1.0 + 0.2 * workers  # after the workers have started
        t_window = t_connect + ramp + s.warmup
        plan = LoadPlan("127.0.0.1", server.port, "/video.mjpg", point.clients, workers, t_connect, ramp,
                        t_window, t_window + s.window, s.samples_per_second, s.probes)
        load = LoadRun(plan)
        meter = WindowMeter(server)
        time.sleep(max(0.0, t_window - time.time()))
        meter.begin()
        load_cpu0 = usage_of(load.pids)
        busy0, mono0 = _machine_busy()
        time.sleep(max(0.0, plan.t_end - time.time()))
        window = meter.end()
        load_cpu = usage_of(load.pids) - load_cpu0
        busy1, mono1 = _machine_busy()
        results = load.results()
        if not server.alive():
            raise RuntimeError(f"{tag}: the server died; see {log}")
    clients = [c for r in results for c in r["clients"]]
    frames = [c["frames"] for c in clients]
    fps = [f / s.window for f in frames]
    latency = [x for r in results for x in r["latency_ms"]]
    probes = [x for r in results for x in r["probe_ttff_ms"]]
    total_frames = sum(frames)
    return {
        "point": asdict(point), "rep": rep, "window_s": window.seconds,
        "cores": window.cores, "cpu_s": window.cpu_seconds,
        "cpu_ms_per_client_frame": window.cpu_seconds * 1000 / total_frames if total_frames else math.nan,
        "fps_min": min(fps), "fps_median": percentile(fps, 50),
        "max_gap_ms": max(c["max_gap_ms"] for c in clients),
        "latency_ms": latency, "bad_stamps": sum(r["bad_stamps"] for r in results),
        "ttff_ramp_ms": [c["ttff_ms"] for c in clients], "ttff_probe_ms": probes,
        "rss_idle_mb": idle_rss / _MB, "rss_mb": window.rss_end / _MB, "rss_peak_mb": window.rss_peak / _MB,
        "load_cores": load_cpu / window.seconds,
        "machine_cores": (busy1 - busy0) / (mono1 - mono0),
        # Everything else on this shared machine: it competes with the server for the 2 cores.
        "other_cores": max(0.0, (busy1 - busy0) / (mono1 - mono0) - window.cores - load_cpu / window.seconds),
        "errors": [c["error"] for c in clients if c["error"]],
    }


class PointSummary(Repeats):
    def __init__(self, point: Point, runs: list[dict[str, Any]]) -> None:
        super().__init__(runs)
        self.point = point


def _ttff(p: PointSummary) -> str:
    probes = p.pooled("ttff_probe_ms")
    if not probes:
        return "-"
    return f"{percentile(probes, 50):.1f} / {percentile(probes, 95):.1f} / {max(probes):.1f}"


def _table(summaries: list[PointSummary], size: str, fps: float) -> Table:
    headers = ["server", "clients", "server cores", "CPU ms per client-frame", "fps/client min",
               "fps/client median", "latency p50 ms", "latency p95 ms", "latency p99 ms",
               "TTFF ms (p50 / p95 / max)", "RSS MB", "load-gen cores", "other processes' cores"]
    rows = []
    for p in summaries:
        if p.point.size != size:
            continue
        rows.append([
            p.point.server, str(p.point.clients), p.spread("cores").fmt(3),
            p.spread("cpu_ms_per_client_frame").fmt(3), p.spread("fps_min").fmt(1),
            p.spread("fps_median").fmt(1), p.latency(50).fmt(1), p.latency(95).fmt(1), p.latency(99).fmt(1),
            _ttff(p), p.spread("rss_mb").fmt(0), p.spread("load_cores").fmt(2),
            p.spread("other_cores").fmt(2),
        ])
    return Table(f"{size} @ {fps:g} fps", headers, rows,
                 "Each cell: median over repeats (min-max). Latency percentiles are per repeat. TTFF pools "
                 "the new viewers timed while the load ran. Other processes' cores: the rest of this shared "
                 "machine's CPU use during the window (it competes with the server for the 2 cores).")


def _ratio_table(by_point: dict[Point, PointSummary]) -> Table:
    rows = []
    for point, flask in sorted(by_point.items(), key=lambda kv: (kv[0].size, kv[0].clients)):
        if point.server != "flask":
            continue
        cam = by_point.get(Point("camcast", point.size, point.clients))
        if cam is None:
            continue
        per_frame = (flask.spread("cpu_ms_per_client_frame").median
                     / cam.spread("cpu_ms_per_client_frame").median)
        cores = flask.spread("cores").median / cam.spread("cores").median
        rows.append([point.size, str(point.clients), f"{per_frame:.1f}x", f"{cores:.1f}x",
                     flask.spread("fps_min").fmt(1, False), cam.spread("fps_min").fmt(1, False)])
    return Table("camcast against the one-encode-per-client Flask baseline",
                 ["size", "clients", "CPU per client-frame, flask / camcast", "server cores, flask / camcast",
                  "flask fps/client min", "camcast fps/client min"], rows)


def _busy(p: PointSummary) -> str:
    """Say so when other work on the shared machine took a good share of the 2 cores."""
    other = p.spread("other_cores")
    return f"; other processes used {other.fmt(2)} cores" if other.high >= 0.5 else ""


def _checks(by_point: dict[Point, PointSummary], s: MjpegSettings) -> list[Check]:
    top = max(s.clients) if s.clients else 0
    cam = {n: by_point.get(Point("camcast", s.size, n)) for n in (1, top, 64)}
    checks: list[Check] = []
    hi = cam[top]
    if hi is not None:
        fps_min = hi.spread("fps_min")
        checks.append(Check(f"fps per client at {top} clients", "every client >= 29 fps",
                            f"slowest client {fps_min.fmt(1)} fps{_busy(hi)}", fps_min.median >= 29.0))
        cores = hi.spread("cores")
        checks.append(Check(f"server CPU at {top} clients", "< 0.3 cores", f"{cores.fmt(3)} cores",
                            cores.median < 0.3))
        if cam[1] is not None and top != 1:
            ratio = cores.median / cam[1].spread("cores").median
            checks.append(Check(f"CPU growth 1 -> {top} clients", "<= 5x", f"{ratio:.2f}x", ratio <= 5.0))
    for n in sorted({1, top}):
        p = cam.get(n)
        if p is None:
            continue
        p50, p99 = p.latency(50), p.latency(99)
        checks.append(Check(f"latency at {n} client(s)", "median <= 10 ms, p99 <= 40 ms",
                            f"median {p50.fmt(1)} ms, p99 {p99.fmt(1)} ms{_busy(p)}",
                            p50.median <= 10.0 and p99.median <= 40.0))
        probes = p.pooled("ttff_probe_ms")
        if probes:
            p95 = percentile(probes, 95)
            checks.append(Check(f"time to first frame at {n} client(s)", "<= 100 ms (p95 of new viewers)",
                                f"median {percentile(probes, 50):.1f} ms, p95 {p95:.1f} ms, max "
                                f"{max(probes):.1f} ms (n={len(probes)}){_busy(p)}", p95 <= 100.0))
    flask64, cam64 = by_point.get(Point("flask", s.size, 64)), cam[64]
    if flask64 is not None and cam64 is not None:
        ratio = (flask64.spread("cpu_ms_per_client_frame").median
                 / cam64.spread("cpu_ms_per_client_frame").median)
        checks.append(Check("CPU-seconds per client-frame at 64 clients vs Flask", ">= 15x fewer",
                            f"{ratio:.1f}x fewer", ratio >= 15.0))
    return checks


_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _colors(by_point: dict[Point, PointSummary]) -> dict[str, str]:
    names = sorted(_by_series(by_point))
    return {name: _COLORS[i % len(_COLORS)] for i, name in enumerate(names)}


def _series(by_point: dict[Point, PointSummary], key: str, scale: float = 1.0) -> list[Series]:
    colors = _colors(by_point)
    out = []
    for label, ps in sorted(_by_series(by_point).items()):
        sp = [p.spread(key) for p in ps]
        out.append(Series(label, [p.point.clients for p in ps], [v.median * scale for v in sp],
                          [v.low * scale for v in sp], [v.high * scale for v in sp], colors[label]))
    return out


def _figures(ctx: RunContext, by_point: dict[Point, PointSummary], s: MjpegSettings) -> list[Figure]:
    out = ctx.out_dir
    figures = []
    line_plot(out / "mjpeg_cpu.png", "MJPEG server CPU vs clients", "clients", "server CPU (cores)",
              _series(by_point, "cores"), hlines=[(0.3, "target at 200 clients: 0.3 cores")])
    figures.append(Figure("mjpeg_cpu.png", "Server CPU (cores) vs clients, camcast and the Flask baseline "
                          "(median, bars: min-max over repeats)."))
    line_plot(out / "mjpeg_fps.png", "Slowest client's fps vs clients", "clients", "fps (slowest client)",
              _series(by_point, "fps_min"), hlines=[(29.0, "29 fps")])
    figures.append(Figure("mjpeg_fps.png", "Delivered fps of the slowest client vs clients."))
    samples = []
    colors = _colors(by_point)
    for label, ps in sorted(_by_series(by_point).items()):
        for p in (ps[0], ps[-1]) if len(ps) > 1 else ps:
            samples.append(Samples(f"{label}, {p.point.clients} clients", p.pooled("latency_ms"),
                                   colors[label], dotted=len(ps) > 1 and p is ps[0]))
    cdf_plot(out / "mjpeg_latency_cdf.png", "Capture-to-client latency (from the frame stamp)",
             "latency (ms)", samples, vlines=[(10.0, "10 ms"), (40.0, "40 ms")],
             xmax=max(60.0, min(300.0, max((percentile(x.values, 99.5) for x in samples if x.values),
                                           default=60.0))))
    figures.append(Figure("mjpeg_latency_cdf.png", "Latency CDF, fewest and most clients of each series "
                          "(all repeats pooled)."))
    line_plot(out / "mjpeg_rss.png", "Server memory vs clients", "clients", "RSS (MB)",
              _series(by_point, "rss_mb"))
    figures.append(Figure("mjpeg_rss.png", "Server RSS at the end of the window vs clients."))
    return figures


def _by_series(by_point: dict[Point, PointSummary]) -> dict[str, list[PointSummary]]:
    groups: dict[str, list[PointSummary]] = defaultdict(list)
    for p in by_point.values():
        groups[p.point.series].append(p)
    for ps in groups.values():
        ps.sort(key=lambda p: p.point.clients)
    return groups


def run(ctx: RunContext) -> Section:
    s = ctx.settings("mjpeg", FULL, QUICK)
    points = points_of(s)
    runs: dict[Point, list[dict[str, Any]]] = defaultdict(list)
    total = len(points) * ctx.repeats
    for i, (rep, point) in enumerate(ctx.schedule(points), 1):
        ctx.log(f"mjpeg {i}/{total}: {point.server} {point.size} {point.clients} clients (repeat {rep + 1})")
        result = measure(ctx, s, point, rep)
        ctx.log(f"  cores {result['cores']:.3f}, fps min {result['fps_min']:.1f}, latency p50 "
                f"{percentile(result['latency_ms'], 50):.1f} ms, load-gen {result['load_cores']:.2f} cores")
        runs[point].append(result)
    ctx.save_raw("mjpeg.json", {"settings": asdict(s), "repeats": ctx.repeats,
                                "runs": [r for rs in runs.values() for r in rs]})
    return build_section(ctx, s, points, runs)


def rebuild(ctx: RunContext) -> Section:
    """The section again from raw/mjpeg.json (new tables or plots without measuring again)."""
    raw = json.loads((ctx.raw_dir / "mjpeg.json").read_text())
    s = MjpegSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw["settings"].items()})
    runs: dict[Point, list[dict[str, Any]]] = defaultdict(list)
    for r in raw["runs"]:
        runs[Point(**r["point"])].append(r)
    return build_section(ctx, s, points_of(s), runs)


def build_section(ctx: RunContext, s: MjpegSettings, points: list[Point],
                  runs: dict[Point, list[dict[str, Any]]]) -> Section:
    by_point = {p: PointSummary(p, rs) for p, rs in runs.items()}
    ordered = [by_point[p] for p in points if p in by_point]
    errors = sum(len(r["errors"]) for rs in runs.values() for r in rs)
    bad = sum(r["bad_stamps"] for rs in runs.values() for r in rs)
    section = Section("mjpeg", f"MJPEG ({s.fps:g} fps, JPEG quality {s.quality})")
    section.intro = (
        f"`GET /video.mjpg`, camcast (one shared JPEG per frame) and the classic Flask tutorial design "
        f"(every client encodes its own JPEG; Werkzeug threaded server), both drawing camcast's test "
        f"pattern with the frame stamp. {max(len(rs) for rs in runs.values())} repeats per point, each with "
        f"a fresh server, "
        f"a {s.window:g} s window after a {s.warmup:g} s settle; clients in "
        f"{s.clients_per_worker}-client asyncio worker processes.")
    section.checks = _checks(by_point, s)
    sizes = list(dict.fromkeys(p.point.size for p in ordered))
    section.tables = [_table(ordered, size, s.fps) for size in sizes]
    ratios = _ratio_table(by_point)
    if ratios.rows:
        section.tables.append(ratios)
    section.figures = _figures(ctx, by_point, s)
    section.notes = [
        "Server cores = the server process's CPU seconds (user + system, children included) over the "
        "window / window seconds; CPU per client-frame divides those CPU seconds by the frames delivered "
        "to all clients in the window.",
        "Latency = receipt time of a part's last byte (time.time() in the client) - the capture time read "
        "from the frame stamp, both on this machine's clock; each load worker decodes "
        f"{s.samples_per_second:g} stamps per second, taking turns over its clients.",
        "TTFF = connect to the last byte of the first part, for new viewers arriving while the load runs.",
        "Verdicts use the median over repeats; the tables show the spread. The machine is shared with "
        "other work, shown as other processes' cores; the load generator's own CPU is shown so that it "
        "can be seen not to be the bottleneck.",
        f"Client errors: {errors}; unreadable stamps: {bad}.",
    ]
    return section


SUITE = Suite("mjpeg", "MJPEG", run)
