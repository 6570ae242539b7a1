"""WebRTC suite: camcast's one-encode-for-all-peers against aiortc's per-peer-encoder relay design.

For each point (server, size, peers, measuring receiver) and each repeat: start the server fresh,
connect the peers from client processes (bench.webrtc_load: counting peers that never decode,
and one measuring peer that decodes every frame and reads its stamp), let them settle, then
measure over a window the server's CPU seconds and RSS, every peer's received fps, and the
measuring peer's capture-to-decode latency; after the window, fresh peers are timed from offer
to first decoded frame while the load still runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
import urllib.request
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from bench.machine import CAMCAST_READY, BusyMeter, camcast_spec, load_average
from bench.plots import Samples, Series, cdf_plot, line_plot
from bench.report import Check, Figure, Section, Table
from bench.runner import RunContext, Suite
from bench.serverproc import ServerProcess, ServerSpec, WindowMeter, python_module
from bench.stats import Repeats, percentile
from bench.webrtc_load import WebrtcLoad, WebrtcPlan, usage_of

_MB = 1024 * 1024
LABELS = {"camcast": "camcast", "relay": "aiortc relay (per-peer encoder)"}


SATURATED_OTHER_CORES = 0.3
KEEPS_UP_MS = 60.0  # a point counts as sustained only while p99 latency stays this low (the target)


@dataclass(frozen=True)
class WebrtcSettings:
    size: str = "640x480"
    fps: float = 30.0
    peers: tuple[int, ...] = (1, 5, 10, 20, 50)
    stock_peers: tuple[int, ...] = (1, 20)  # also measured with aiortc's stock receiver
    baseline_peers: tuple[int, ...] = (1, 2, 4, 8, 12, 16)
    baseline_collapse_fps: float = 25.0  # median peer below this in the first repeat: no larger points
    hd_size: str = "1280x720"
    hd_peers: tuple[int, ...] = (1, 20, 50)
    window: float = 10.0  # seconds measured
    settle: float = 3.0  # seconds between the last peer connecting and the window
    ramp_per_peer: float = 0.1  # seconds between peers connecting
    max_ramp: float = 5.0
    probes: int = 5  # fresh peers timed (offer to first decoded frame) after each window
    peers_per_worker: int = 25
    # A repeat is run again (after a pause) when the rest of the machine used more than this many
    # cores during its window, or kept the 2 cores nearly saturated.
    max_other_cores: float = 0.8
    max_machine_cores: float = 1.85
    retries: int = 3
    retry_pause: float = 5.0


FULL = WebrtcSettings()
QUICK = WebrtcSettings(peers=(1, 10), stock_peers=(), baseline_peers=(1,), hd_peers=(), window=2.0,
                       settle=1.0, probes=2, retries=0)


@dataclass(frozen=True)
class Point:
    server: str  # camcast | relay
    size: str
    peers: int
    receiver: str = "marker"  # the measuring peer's: marker | stock

    @property
    def series(self) -> str:
        label = f"{LABELS[self.server]} {self.size}"
        return label if self.receiver == "marker" else f"{label}, stock aiortc receiver"


def server_spec(point: Point, s: WebrtcSettings, recordings: str) -> ServerSpec:
    if point.server == "camcast":
        return camcast_spec(point.size, s.fps, recordings)
    argv = python_module("bench.baselines.aiortc_relay", "--port", "0", "--size", point.size,
                         "--fps", f"{s.fps:g}")
    return ServerSpec("aiortc-relay", argv, CAMCAST_READY)


def points_of(s: WebrtcSettings) -> list[Point]:
    points = [Point("camcast", s.size, n) for n in s.peers]
    points += [Point("camcast", s.size, n, "stock") for n in s.stock_peers]
    points += [Point("relay", s.size, n) for n in sorted(s.baseline_peers)]
    points += [Point("camcast", s.hd_size, n) for n in s.hd_peers]
    return points


def _tree_pids(pid: int) -> set[int]:
    with contextlib.suppress(psutil.Error):
        return {pid} | {c.pid for c in psutil.Process(pid).children(recursive=True)}
    return {pid}


def _status(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(server.url("/api/status"), timeout=5) as response:
        return json.load(response)  # type: ignore[no-any-return]


def _session_totals(status: dict[str, Any]) -> dict[str, int]:
    sessions = (status.get("webrtc") or {}).get("sessions") or []
    return {key: sum(int(p.get(key) or 0) for p in sessions)
            for key in ("dropped", "resyncs", "skipped", "pli", "keyframes_sent")}


def measure(ctx: RunContext, s: WebrtcSettings, point: Point, rep: int, attempt: int) -> dict[str, Any]:
    """One repeat of one point, with a fresh server."""
    tag = f"webrtc-{point.server}-{point.size}-{point.peers}p-{point.receiver}-r{rep}-a{attempt}"
    log = ctx.raw_dir / f"{tag}.log"
    with tempfile.TemporaryDirectory(prefix="camcast-bench-") as tmp, \
            ServerProcess(server_spec(point, s, tmp), log) as server:
        time.sleep(0.5)  # capture running
        idle_rss = server.usage().rss_bytes
        plan = WebrtcPlan(server.url("/"), point.peers, point.receiver,
                          ramp=min(s.max_ramp, s.ramp_per_peer * point.peers), settle=s.settle,
                          window=s.window, probes=s.probes, peers_per_worker=s.peers_per_worker)
        load = WebrtcLoad(plan)
        start = load.start()
        meter, busy = WindowMeter(server), BusyMeter()
        time.sleep(max(0.0, start + plan.t_window - time.time()))
        meter.begin()
        busy.begin()
        load_cpu0 = usage_of(load.pids)
        time.sleep(max(0.0, start + plan.t_end - time.time()))
        window = meter.end()
        machine = busy.end()
        load_cores = (usage_of(load.pids) - load_cpu0) / window.seconds
        others = busy.top_others(_tree_pids(server.pid) | set(load.pids))
        totals = _session_totals(_status(server)) if point.server == "camcast" else {}
        results = load.results()
        if not server.alive():
            raise RuntimeError(f"{tag}: the server died; see {log}")
    peers = [p for r in results for p in r["peers"]]
    fps = [p["frames"] / s.window for p in peers]
    measuring = next((r for r in results if r["role"] == "measure"), None)
    total_frames = sum(p["frames"] for p in peers)
    return {
        "point": asdict(point), "rep": rep, "attempt": attempt, "window_s": window.seconds,
        "cores": window.cores, "cpu_s": window.cpu_seconds,
        "cpu_ms_per_peer_frame": window.cpu_seconds * 1000 / total_frames if total_frames else math.nan,
        "fps_min": min(fps), "fps_median": percentile(fps, 50),
        "max_gap_ms": max(p["max_gap_ms"] for p in peers),
        "lost_packets": sum(p["lost_packets"] for p in peers),
        "ttff_ramp_ms": [p["ttff_ms"] for p in peers],
        "latency_ms": measuring["latency_ms"] if measuring else [],
        "stock_hold_ms": measuring["stock_hold_ms"] if measuring else [],
        "ttff_probe_ms": measuring["probe_ttff_ms"] if measuring else [],
        "probe_errors": measuring["probe_errors"] if measuring else [],
        "rss_idle_mb": idle_rss / _MB, "rss_mb": window.rss_end / _MB, "rss_peak_mb": window.rss_peak / _MB,
        "load_cores": load_cores, "machine_cores": machine,
        # Everything else on this shared machine: it competes with the server for the 2 cores.
        "other_cores": max(0.0, machine - window.cores - load_cores),
        "top_other_processes": others,
        "server_sessions": totals,
        "errors": [p["error"] for p in peers if p["error"]],
    }


class PointSummary(Repeats):
    def __init__(self, point: Point, runs: list[dict[str, Any]]) -> None:
        super().__init__(runs)
        self.point = point

    def sustained(self, fps: float) -> bool:
        """Every peer got `fps` and the stream kept up (no queue growing behind a busy encoder)."""
        return self.spread("fps_min").median >= fps and self.latency(99).median <= KEEPS_UP_MS


def _ttff(p: PointSummary) -> str:
    probes = p.pooled("ttff_probe_ms")
    if not probes:
        return "-"
    return f"{percentile(probes, 50):.0f} / {percentile(probes, 95):.0f} / {max(probes):.0f}"


def _table(summaries: list[PointSummary], size: str, fps: float) -> Table:
    headers = ["server", "measuring receiver", "peers", "server cores", "CPU ms per peer-frame",
               "fps/peer min", "fps/peer median", "longest gap ms", "latency p50 ms", "latency p99 ms",
               "TTFF ms (p50 / p95 / max)", "RSS MB", "load-gen cores", "other processes' cores"]
    rows = []
    for p in summaries:
        if p.point.size != size:
            continue
        rows.append([
            LABELS[p.point.server], p.point.receiver, str(p.point.peers), p.spread("cores").fmt(3),
            p.spread("cpu_ms_per_peer_frame").fmt(3), p.spread("fps_min").fmt(1),
            p.spread("fps_median").fmt(1), p.spread("max_gap_ms").fmt(0), p.latency(50).fmt(1),
            p.latency(99).fmt(1), _ttff(p), p.spread("rss_mb").fmt(0), p.spread("load_cores").fmt(2),
            p.spread("other_cores").fmt(2),
        ])
    return Table(f"{size} @ {fps:g} fps", headers, rows,
                 "Each cell: median over repeats (min-max). fps/peer min: the slowest peer of a repeat. "
                 "Latency: capture (stamp) to decoded frame in the measuring peer, percentiles per repeat. "
                 "TTFF pools the fresh peers timed from offer to first decoded frame after each window. "
                 "Load-gen cores: all client processes, the decoding peer included.")


def _memory_table(summaries: list[PointSummary]) -> Table:
    rows = []
    for p in summaries:
        if p.point.receiver != "marker":
            continue
        idle, end = p.spread("rss_idle_mb"), p.spread("rss_mb")
        per_peer = p.spread_of(lambda r: (r["rss_mb"] - r["rss_idle_mb"]) / r["point"]["peers"])
        rows.append([LABELS[p.point.server], p.point.size, str(p.point.peers), idle.fmt(0), end.fmt(0),
                     p.spread("rss_peak_mb").fmt(0), per_peer.fmt(2)])
    return Table("Server memory (RSS) vs peers", ["server", "size", "peers", "RSS idle MB",
                                                   "RSS at window end MB", "RSS peak MB", "MB per peer"],
                 rows, "Idle: after start, before any peer (camcast's encoder starts with the first peer). "
                       "MB per peer: (window end - idle) / peers.")


def _peers_per_core(by_point: dict[Point, PointSummary], server: str, size: str,
                    fps: float) -> tuple[PointSummary | None, float]:
    """The sustained point with the most peers per server core."""
    best: tuple[PointSummary | None, float] = (None, math.nan)
    for point, p in by_point.items():
        if (point.server, point.size, point.receiver) != (server, size, "marker") or not p.sustained(fps):
            continue
        per_core = point.peers / p.spread("cores").median
        if best[0] is None or per_core > best[1]:
            best = (p, per_core)
    return best


def _ratio_table(by_point: dict[Point, PointSummary], s: WebrtcSettings, good_fps: float) -> Table:
    rows = []
    for server in ("camcast", "relay"):
        p, per_core = _peers_per_core(by_point, server, s.size, good_fps)
        if p is None:
            rows.append([LABELS[server], "-", "-", "-"])
            continue
        rows.append([LABELS[server], str(p.point.peers), p.spread("cores").fmt(3, False), f"{per_core:.1f}"])
    return Table(f"Peers per server core ({s.size}, every peer >= {good_fps:g} fps, latency kept low)",
                 ["server", "peers at that point", "server cores", "peers per core"], rows,
                 "The point with the most peers per core among those where the slowest peer got "
                 f">= {good_fps:g} fps and the measuring peer's p99 latency stayed <= {KEEPS_UP_MS:g} ms "
                 "(medians over repeats); past that the relay's per-peer queues grow (MediaRelay buffers "
                 "without bound) and latency runs into seconds before its fps drops.")


def _busy(p: PointSummary) -> str:
    other = p.spread("other_cores")
    return f"; other processes used {other.fmt(2)} cores" if other.high >= 0.5 else ""


def _checks(by_point: dict[Point, PointSummary], s: WebrtcSettings) -> list[Check]:
    good_fps = s.fps - 1.0
    top = max(s.peers) if s.peers else 0
    cam = {n: by_point.get(Point("camcast", s.size, n)) for n in {1, top, 20}}
    checks: list[Check] = []
    hi = cam.get(top)
    if hi is not None:
        fps_min = hi.spread("fps_min")
        checks.append(Check(f"fps per peer at {top} peers", f"every peer >= {good_fps:g} fps",
                            f"slowest peer {fps_min.fmt(1)} fps{_busy(hi)}", fps_min.median >= good_fps))
        cores = hi.spread("cores")
        checks.append(Check(f"server CPU at {top} peers", "< 1 core", f"{cores.fmt(3)} cores",
                            cores.median < 1.0))
    mid = cam.get(20) or hi
    if mid is not None and cam.get(1) is not None and mid.point.peers != 1:
        assert cam[1] is not None
        ratio = mid.spread("cores").median / cam[1].spread("cores").median
        checks.append(Check(f"CPU growth 1 -> {mid.point.peers} peers", "<= 4x", f"{ratio:.2f}x",
                            ratio <= 4.0))
    cam_best, cam_per_core = _peers_per_core(by_point, "camcast", s.size, good_fps)
    relay_best, relay_per_core = _peers_per_core(by_point, "relay", s.size, good_fps)
    if cam_best is not None and relay_best is not None:
        ratio = cam_per_core / relay_per_core
        checks.append(Check("peers per core vs the per-peer-encoder relay", ">= 10x",
                            f"{ratio:.1f}x ({cam_per_core:.0f} at {cam_best.point.peers} peers vs "
                            f"{relay_per_core:.1f} at {relay_best.point.peers})", ratio >= 10.0))
    for n in sorted({1, 20} & set(s.peers)):
        p = cam.get(n)
        if p is None:
            continue
        p50, p99 = p.latency(50), p.latency(99)
        stock = by_point.get(Point("camcast", s.size, n, "stock"))
        stock_text = ""
        if stock is not None:
            stock_text = (f"; stock aiortc receiver: median {stock.latency(50).fmt(1)} ms, "
                          f"p99 {stock.latency(99).fmt(1)} ms")
        hold = p.pooled("stock_hold_ms")
        hold_text = (f" (the stock buffer would hold each frame {percentile(hold, 50):.1f} ms more)"
                     if hold else "")
        checks.append(Check(f"capture-to-decode latency at {n} peer(s)", "median <= 25 ms, p99 <= 60 ms",
                            f"marker-aware receiver: median {p50.fmt(1)} ms, p99 {p99.fmt(1)} ms"
                            f"{hold_text}{stock_text}{_busy(p)}",
                            p50.median <= 25.0 and p99.median <= 60.0))
        probes = p.pooled("ttff_probe_ms")
        if probes:
            p95 = percentile(probes, 95)
            checks.append(Check(f"offer to first decoded frame at {n} peer(s)",
                                "<= 300 ms (p95 of new peers)",
                                f"median {percentile(probes, 50):.0f} ms, p95 {p95:.0f} ms, max "
                                f"{max(probes):.0f} ms (n={len(probes)}){_busy(p)}", p95 <= 300.0))
    return checks


_COLORS = {"camcast": "tab:blue", "relay": "tab:orange"}
_HD_COLOR = "tab:green"


def _color(point: Point, s: WebrtcSettings) -> str:
    return _HD_COLOR if point.size != s.size else _COLORS[point.server]


def _series(by_point: dict[Point, PointSummary], key: str, s: WebrtcSettings) -> list[Series]:
    out = []
    for label, ps in _by_series(by_point).items():
        if ps[0].point.receiver != "marker":
            continue
        sp = [p.spread(key) for p in ps]
        out.append(Series(label, [p.point.peers for p in ps], [v.median for v in sp], [v.low for v in sp],
                          [v.high for v in sp], _color(ps[0].point, s)))
    return out


def _by_series(by_point: dict[Point, PointSummary]) -> dict[str, list[PointSummary]]:
    groups: dict[str, list[PointSummary]] = defaultdict(list)
    for p in by_point.values():
        groups[p.point.series].append(p)
    for ps in groups.values():
        ps.sort(key=lambda p: p.point.peers)
    return dict(sorted(groups.items()))


def _figures(ctx: RunContext, by_point: dict[Point, PointSummary], s: WebrtcSettings) -> list[Figure]:
    out = ctx.out_dir
    figures = []
    line_plot(out / "webrtc_cpu.png", "WebRTC server CPU vs peers", "peers", "server CPU (cores)",
              _series(by_point, "cores", s), hlines=[(1.0, "target at 50 peers: < 1 core")])
    figures.append(Figure("webrtc_cpu.png", "Server CPU (cores) vs peers: camcast (one shared encoder) "
                          "and aiortc's relay design (one encoder per peer); median, bars: min-max over "
                          "repeats."))
    line_plot(out / "webrtc_fps.png", "Slowest peer's fps vs peers", "peers", "fps (slowest peer)",
              _series(by_point, "fps_min", s), hlines=[(s.fps - 1.0, f"{s.fps - 1.0:g} fps")])
    figures.append(Figure("webrtc_fps.png", "Received fps of the slowest peer vs peers."))
    samples: list[Samples] = []
    shades = {1: "tab:blue", 20: "tab:purple"}
    for n in sorted({1, 20} | {min(s.peers, default=1)}):
        for receiver in ("marker", "stock"):
            p = by_point.get(Point("camcast", s.size, n, receiver))
            if p is not None:
                name = "marker-aware" if receiver == "marker" else "stock aiortc"
                samples.append(Samples(f"camcast {s.size}, {n} peer(s), {name} receiver",
                                       p.pooled("latency_ms"), shades.get(n), dotted=receiver == "stock"))
    for ps in _by_series(by_point).values():
        if ps[0].point.server == "relay":
            # Its largest point that kept up (beyond it, latency runs into seconds, off this chart).
            kept = [p for p in ps if p.sustained(s.fps - 1.0)] or ps[:1]
            samples.append(Samples(f"{kept[-1].point.series}, {kept[-1].point.peers} peers",
                                   kept[-1].pooled("latency_ms"), _COLORS["relay"]))
    xmax = max(80.0, min(200.0, max((percentile(x.values, 99.5) for x in samples if x.values), default=80.0)))
    cdf_plot(out / "webrtc_latency_cdf.png",
             "Capture-to-decode latency, aiortc client (from the frame stamp)", "latency (ms)", samples,
             vlines=[(25.0, "25 ms"), (60.0, "60 ms")], xmax=xmax)
    figures.append(Figure("webrtc_latency_cdf.png", "Latency CDF of the measuring peer (all repeats pooled): "
                          "the marker-aware receiver against aiortc's stock one, which holds every frame "
                          "until the next frame's first packet arrives."))
    line_plot(out / "webrtc_rss.png", "Server memory vs peers", "peers", "RSS (MB)",
              _series(by_point, "rss_mb", s))
    figures.append(Figure("webrtc_rss.png", "Server RSS at the end of the window vs peers."))
    return figures


def _run_point(ctx: RunContext, s: WebrtcSettings, point: Point, rep: int) -> dict[str, Any]:
    """Measure; run again (up to `retries` times) when the rest of the machine took too much CPU."""
    disturbed = []
    for attempt in range(s.retries + 1):
        result = measure(ctx, s, point, rep, attempt)
        # Saturated by the server under test itself is no disturbance: others must have a share.
        result["disturbed"] = (result["other_cores"] > s.max_other_cores
                               or (result["machine_cores"] > s.max_machine_cores
                                   and result["other_cores"] > SATURATED_OTHER_CORES))
        if not result["disturbed"] or attempt == s.retries:
            result["disturbed_attempts"] = disturbed
            return result
        ctx.log(f"  disturbed: machine {result['machine_cores']:.2f} cores busy, other processes "
                f"{result['other_cores']:.2f} (busiest: {', '.join(result['top_other_processes']) or '-'}; "
                f"load average {load_average()}); again")
        disturbed.append({k: result[k] for k in ("cores", "fps_min", "other_cores", "machine_cores",
                                                 "top_other_processes")})
        time.sleep(s.retry_pause)
    raise AssertionError("unreachable")


def run(ctx: RunContext) -> Section:
    s = ctx.settings("webrtc", FULL, QUICK)
    points = points_of(s)
    load_start = load_average()
    runs: dict[Point, list[dict[str, Any]]] = defaultdict(list)
    collapsed: dict[str, int] = {}  # size -> fewest relay peers at which its fps collapsed
    total = len(points) * ctx.repeats
    for i, (rep, point) in enumerate(ctx.schedule(points), 1):
        if point.server == "relay" and point.peers > collapsed.get(point.size, math.inf):
            continue
        ctx.log(f"webrtc {i}/{total}: {point.server} {point.size} {point.peers} peers, {point.receiver} "
                f"receiver (repeat {rep + 1})")
        result = _run_point(ctx, s, point, rep)
        ctx.log(f"  cores {result['cores']:.3f}, fps min {result['fps_min']:.1f}, latency p50 "
                f"{percentile(result['latency_ms'], 50):.1f} ms, load-gen {result['load_cores']:.2f} cores, "
                f"other {result['other_cores']:.2f}")
        runs[point].append(result)
        if point.server == "relay" and rep == 0 and result["fps_median"] < s.baseline_collapse_fps:
            collapsed[point.size] = min(point.peers, collapsed.get(point.size, point.peers))
    ctx.save_raw("webrtc.json", {"settings": asdict(s), "repeats": ctx.repeats, "collapsed": collapsed,
                                 "load_average": [load_start, load_average()],
                                 "runs": [r for rs in runs.values() for r in rs]})
    return build_section(ctx, s, points, runs, collapsed, (load_start, load_average()))


def rebuild(ctx: RunContext) -> Section:
    """The section again from raw/webrtc.json (new tables or plots without measuring again)."""
    raw = json.loads((ctx.raw_dir / "webrtc.json").read_text())
    s = WebrtcSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw["settings"].items()})
    runs: dict[Point, list[dict[str, Any]]] = defaultdict(list)
    for r in raw["runs"]:
        runs[Point(**r["point"])].append(r)
    return build_section(ctx, s, points_of(s), runs, raw["collapsed"], tuple(raw["load_average"]))


def build_section(ctx: RunContext, s: WebrtcSettings, points: list[Point],
                  runs: dict[Point, list[dict[str, Any]]], collapsed: dict[str, int],
                  loads: tuple[str, str]) -> Section:
    load_start, load_end = loads
    by_point = {p: PointSummary(p, rs) for p, rs in runs.items()}
    ordered = [by_point[p] for p in points if p in by_point]
    all_runs = [r for rs in runs.values() for r in rs]
    errors = sum(len(r["errors"]) + len(r["probe_errors"]) for r in all_runs)
    lost = sum(r["lost_packets"] for r in all_runs)
    reruns = sum(len(r["disturbed_attempts"]) for r in all_runs)
    still = sum(1 for r in all_runs if r["disturbed"])
    section = Section("webrtc", f"WebRTC ({s.fps:g} fps, H.264)")
    repeats = max(len(rs) for rs in runs.values())
    section.intro = (
        "`POST /offer` peers (aiortc, H.264 only, loopback), against aiortc's webcam example design "
        "(`bench/baselines/aiortc_relay.py`: one source track relayed with `MediaRelay`, so every peer's "
        "sender runs its own libx264 encoder) on the same test pattern and stamp. Each point: a fresh "
        f"server, peers connecting {s.ramp_per_peer:g} s apart, a {s.settle:g} s settle, a {s.window:g} s "
        f"window; {repeats} repeats, round-robin over the points. Peers live in client processes of up to "
        f"{s.peers_per_worker} peers; all but one only count frames, one decodes every frame and reads its "
        "stamp. A repeat that the rest of this shared machine disturbed (other processes above "
        f"{s.max_other_cores:g} cores, or the whole machine above {s.max_machine_cores:g} of its 2 cores, "
        f"during the window) was run again, up to {s.retries} times.")
    section.checks = _checks(by_point, s)
    sizes = list(dict.fromkeys(p.point.size for p in ordered))
    section.tables = [_table(ordered, size, s.fps) for size in sizes]
    section.tables.append(_ratio_table(by_point, s, s.fps - 1.0))
    section.tables.append(_memory_table(ordered))
    section.figures = _figures(ctx, by_point, s)
    collapse_note = (", ".join(f"{size}: from {n} peers on" for size, n in collapsed.items())
                     or "not within the points run")
    section.notes = [
        "Counting peers: aiortc peers whose RTCRtpReceiver keeps everything the server's work depends on "
        "(ICE, DTLS, SRTP decryption, RTCP receiver reports, NACKs, bitrate estimates) but whose jitter "
        "buffer is replaced by a counter: a frame counts when the packet with the RTP marker bit (its last "
        "packet) arrives and no packet of it was missing; nothing is reassembled, depayloaded or decoded "
        "(`bench/rtc_receivers.py`). fps/peer = counted frames in the window / window seconds.",
        "Measuring peer: decodes every frame (aiortc/PyAV) and reads the stamp as soon as the frame leaves "
        "the decoder; latency = that time - the capture time in the stamp, same clock. aiortc's stock "
        "JitterBuffer releases a frame only when the first packet of the next frame arrives (one frame "
        "interval later, which a browser does not add: Chromium completes a frame on the marker bit), so "
        "the figures that count use a marker-aware jitter buffer; the stock receiver is measured at some "
        "points too, and the marker-aware buffer also records how much longer the stock one would have held "
        "each frame.",
        "TTFF: a fresh measuring peer's POST /offer to its first decoded frame, while the other peers of "
        "the point keep watching (at 1 peer, nobody else watches: the shared encoder starts for it).",
        "Server cores = the server process's CPU seconds (user + system, children included) over the "
        "window / window seconds. CPU per peer-frame divides them by the frames all peers received.",
        f"The relay baseline stops early once its median peer gets under {s.baseline_collapse_fps:g} fps "
        f"in the first repeat: {collapse_note}.",
        f"Load average at the start of this suite {load_start}, at its end {load_end}. Repeats run again "
        f"for disturbance: {reruns}; still disturbed after {s.retries} retries: {still}.",
        f"Peer errors (connect or probe): {errors}; packets missing at the counting peers: {lost}.",
    ]
    return section


SUITE = Suite("webrtc", "WebRTC", run)
