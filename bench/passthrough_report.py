"""The passthrough section: targets, tables and plots from the runs of bench.suites.passthrough."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from bench.plots import Samples, cdf_plot
from bench.report import Check, Figure, Section, Table
from bench.runner import RunContext
from bench.stats import Spread, percentile

if TYPE_CHECKING:
    from bench.suites.passthrough import PassthroughSettings, Point

Run = dict[str, Any]
Runs = dict[str, list[Run]]
MODES = ("passthrough", "transcode")
COLORS = {"passthrough": "tab:green", "transcode": "tab:red", "relay": "tab:grey", "direct": "tab:blue"}
JOIN_SPAN = 3.0  # s after a join's offer in which a watching viewer's pictures are checked for a stall


# -- small helpers ----------------------------------------------------------------------------------
def _name(kind: str, mode: str, viewers: int = 0) -> str:
    return f"{kind}-{mode}" + (f"-{viewers}" if viewers else "")


def _finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if v == v]


def _p(values: Iterable[float], q: float) -> float:
    return percentile(_finite(values), q)


def _fmt(value: float, digits: int = 0) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def _spread(rs: list[Run], fn: Callable[[Run], float]) -> Spread:
    return Spread.of([fn(r) for r in rs])


def _pooled(rs: list[Run], fn: Callable[[Run], list[float]]) -> list[float]:
    return _finite(x for r in rs for x in fn(r))


def _cores(rs: list[Run]) -> Spread:
    return _spread(rs, lambda r: r["cores"])


def _pair(runs: Runs, kind: str, n: int) -> tuple[list[Run], list[Run]]:
    return runs.get(_name(kind, "passthrough", n), []), runs.get(_name(kind, "transcode", n), [])


def _ratio(runs: Runs, kind: str, n: int) -> tuple[float, Spread]:
    """transcode cores / passthrough cores: of the medians, and within each round of repeats (the
    round-robin pairs them)."""
    ours, base = _pair(runs, kind, n)
    if not ours or not base:
        return math.nan, Spread.of([])
    mine = _cores(ours).median
    by_rep = {r["rep"]: r for r in ours}
    paired = Spread.of([b["cores"] / by_rep[b["rep"]]["cores"] for b in base
                        if b["rep"] in by_rep and by_rep[b["rep"]]["cores"] > 0])
    return (_cores(base).median / mine if mine > 0 else math.inf), paired


def _ratio_text(ratio: float, paired: Spread) -> str:
    text = f"{ratio:.1f}x"
    if paired.n > 1:
        text += f" (per round {paired.low:.1f}-{paired.high:.1f}x)"
    return text


def _joins(runs: Runs, mode: str) -> list[Run]:
    return runs.get(_name("joins", mode), [])


def _good_joins(rs: list[Run]) -> list[Run]:
    return [j for r in rs for j in r["joins"] if not j["error"]]


def _per_repeat(rs: list[Run], key: str, q: float) -> Spread:
    return _spread(rs, lambda r: _p((j[key] for j in r["joins"] if not j["error"]), q))


def _pair_text(values: list[float]) -> str:
    """p50 / p95 of the finite values."""
    return f"{_fmt(_p(values, 50))} / {_fmt(_p(values, 95))}"


def _placed(runs: Runs, mode: str) -> list[Run]:
    """The good joins of a mode whose place in the camera's GOP is known."""
    return [j for j in _good_joins(_joins(runs, mode)) if j["since_keyframe_s"] == j["since_keyframe_s"]]


def _latency_runs(runs: Runs, mode: str, s: PassthroughSettings) -> list[Run]:
    return [r for r in runs.get(_name("rtsp", mode, s.latency_peers), []) if r["latency"].get("transport_ms")]


def _latency_p50(rs: list[Run], key: str) -> Spread:
    return _spread(rs, lambda r: _p(r["latency"].get(key, []), 50))


# -- checks -------------------------------------------------------------------------------------
def _cpu_check(runs: Runs, kind: str, n: int, title: str, s: PassthroughSettings) -> Check | None:
    ours, base = _pair(runs, kind, n)
    if not ours or not base:
        return None
    ratio, paired = _ratio(runs, kind, n)
    measured = f"{_cores(ours).fmt(3)} vs {_cores(base).fmt(3)} cores: {_ratio_text(ratio, paired)}"
    return Check(title, f">= {s.ratio_target:g}x lower than --transcode", measured, ratio >= s.ratio_target)


def _ttff_check(runs: Runs, s: PassthroughSettings) -> Check | None:
    rs = _joins(runs, "passthrough")
    if not rs:
        return None
    p95 = _per_repeat(rs, "ttff_ms", 95)
    measured = (f"p95 {p95.fmt(0)} ms, p50 {_per_repeat(rs, 'ttff_ms', 50).fmt(0)} ms "
                f"({sum(len(r['joins']) for r in rs)} joins, {len(rs)} repeats); the first frame captured "
                f"after the offer: p95 {_per_repeat(rs, 'fresh_ms', 95).fmt(0)} ms; plain relay (computed): "
                f"p95 {_per_repeat(rs, 'relay_ms', 95).fmt(0)} ms")
    return Check(f"a new peer's first decoded frame, {s.gop / s.fps:g} s GOP camera (POST /offer to decoded)",
                 f"p95 <= {s.ttff_target_ms:g} ms", measured, p95.median <= s.ttff_target_ms)


def _latency_check(runs: Runs, s: PassthroughSettings) -> Check | None:
    rs = _latency_runs(runs, "passthrough", s)
    if not rs:
        return None
    before = _latency_p50(rs, "transport_ms")
    frames = sum(len(r["latency"]["transport_ms"]) for r in rs)
    return Check("latency camcast adds to the camera's own: a frame at a WebRTC peer (its last packet) vs at "
                 "a viewer of the camera (its access unit), the same frames",
                 f"p50 <= {s.added_latency_target_ms:g} ms",
                 f"p50 +{before.fmt(1)} ms ({frames} frames, {len(rs)} repeats)",
                 before.median <= s.added_latency_target_ms)


# -- tables ---------------------------------------------------------------------------------------
def _cpu_row(runs: Runs, point: Point, s: PassthroughSettings) -> list[str] | None:
    rs = runs.get(point.name, [])
    if not rs:
        return None
    if point.kind == "rtsp":
        what = f"RTSP H.264, {point.viewers} WebRTC peers" + (" + recording" if s.record else "")
        fps = _spread(rs, lambda r: min((p["fps"] for p in r["peers"]), default=math.nan))
        rate = _spread(rs, lambda r: _p(r["sent_kbps"], 50)).fmt(0)
        encoders = {", ".join(r["encoders_at_window"]) or "none" for r in rs}
    else:
        what = f"HTTP MJPEG, {point.viewers} MJPEG clients"
        fps = _spread(rs, lambda r: min(r["fps"], default=math.nan))
        rate = "-"
        encoders = {", ".join(r["encoders_at_end"]) or "none" for r in rs}
    ratio = _ratio_text(*_ratio(runs, point.kind, point.viewers)) if point.mode == "transcode" else ""
    return [what, point.mode, _cores(rs).fmt(3), _spread(rs, lambda r: r["idle_cores"]).fmt(3), ratio,
            fps.fmt(1), rate, "; ".join(sorted(encoders)), _spread(rs, lambda r: r["camera_cores"]).fmt(2),
            _spread(rs, lambda r: r["other_cores"]).fmt(2)]


def _cpu_table(runs: Runs, points: list[Point], s: PassthroughSettings) -> Table:
    rows = [row for p in points if p.kind != "joins" and (row := _cpu_row(runs, p, s)) is not None]
    return Table(
        f"Server CPU, the camera passed through against --transcode ({s.size} @ {s.fps} fps)",
        ["camera, viewers", "server", "server cores", "cores before any viewer", "transcode / passthrough",
         "fps to the slowest viewer", "peer kbit/s", "encoders running (window)", "camera process cores",
         "other processes' cores"], rows,
        f"Server cores: the camcast process alone (user + system CPU seconds over the {s.window:g} s window "
        "/ its length), median (min-max) of the repeats. Before any viewer: the same server over "
        f"{s.idle_window:g} s with nobody watching (the camera read all along; with --transcode it is "
        "decoded all along too). Fps: whole frames the slowest viewer received over the window; kbit/s: "
        "what the server sent a peer (median). The camera's own process (GStreamer's "
        "RTSP server with x264, or the upstream camcast encoding MJPEG) is measured apart; other "
        "processes: the rest of this shared machine, the camera and the clients left out.")


def _per_frame_ms(r: Run) -> float:
    """Server CPU ms per frame sent to a peer over the window."""
    sent = sum(r["sent_fps"]) * r["window_s"]
    return r["cpu_s"] * 1000 / sent if sent > 0 else math.nan


def _per_peer_table(runs: Runs, s: PassthroughSettings) -> Table | None:
    if len(s.peers) < 2:
        return None
    low, high = min(s.peers), max(s.peers)
    rows = []
    for mode in MODES:
        a, b = runs.get(_name("rtsp", mode, low), []), runs.get(_name("rtsp", mode, high), [])
        if not a or not b:
            continue
        ca, cb = _cores(a).median, _cores(b).median
        per_peer = (cb - ca) / (high - low)
        fps = _spread(b, lambda r: _p(r["sent_fps"], 50))
        rows.append([mode, f"{ca:.3f}", f"{cb:.3f}", f"{per_peer * 1000:.1f}",
                     _spread(a, _per_frame_ms).fmt(2), _spread(b, _per_frame_ms).fmt(2), fps.fmt(1),
                     str(sum(r["tracks"]["resyncs"] for r in b))])
    if not rows:
        return None
    return Table(
        f"What each WebRTC peer costs ({low} -> {high} peers, RTSP camera)",
        ["server", f"cores at {low} peers", f"cores at {high} peers", "ms CPU a second per added peer",
         f"ms CPU per frame sent, {low} peers", f"... {high} peers", f"fps sent per peer at {high} (median)",
         f"resyncs at {high} peers (all repeats)"], rows,
        "Per added peer: (the medians' difference) / the peers added. Per frame sent: the server's CPU over "
        "the window / the frames it sent all its peers then. A resync: a peer's queue overflowed and it "
        "waits for a keyframe; passed through, that is the camera's next one (up to a GOP), transcoded, "
        "one is made at once.")


def _first_frame_table(runs: Runs, s: PassthroughSettings) -> Table | None:
    rows = []
    for mode in MODES:
        rs = _joins(runs, mode)
        if not rs:
            continue
        ok = _good_joins(rs)
        ttff = [j["ttff_ms"] for j in ok]
        fresh = [j["fresh_ms"] for j in ok]
        never = sum(1 for f in fresh if f != f)
        rows.append([f"camcast {mode} (measured)", str(len(ok)), _fmt(_p(ttff, 50)), _fmt(_p(ttff, 95)),
                     _fmt(max(ttff, default=math.nan)), _per_repeat(rs, "ttff_ms", 95).fmt(0),
                     _pair_text(fresh) + (f" ({never} never)" if never else ""),
                     _pair_text([j["first_age_ms"] for j in ok])])
        if mode == "passthrough":
            relay = [j["relay_ms"] for j in ok]
            rows.append(["plain relay (computed: the camera's next IDR once connected)",
                         str(len(_finite(relay))), _fmt(_p(relay, 50)), _fmt(_p(relay, 95)),
                         _fmt(max(_finite(relay), default=math.nan)), _per_repeat(rs, "relay_ms", 95).fmt(0),
                         _pair_text(relay), "-"])
    if not rows:
        return None
    return Table(
        f"A new WebRTC peer's first frame on the {s.gop / s.fps:g} s GOP camera",
        ["design", "joins", "first frame p50 ms", "p95 ms", "max ms", "p95 (median of repeats)",
         "first frame captured after the offer: p50 / p95 ms", "the first frame's age: p50 / p95 ms"], rows,
        "Measured: a decoding aiortc peer (marker-aware jitter buffer), from POST /offer sent to its first "
        f"frame decoded; {s.joins} joins a repeat, each a fresh peer after a random pause of "
        f"{s.join_pause:g} s plus up to a GOP, so they fall all over the camera's GOP (plotted below). The "
        "first frame captured after the offer: the first decoded frame whose stamp is later than the offer "
        "(a picture older than the request is not what the viewer came to see). The first frame's age: its "
        "capture-to-decode latency by its stamp. The relay row is computed for the same joins: a relay "
        "(go2rtc, MediaMTX) can only start a viewer on the camera's next IDR once the viewer's connection "
        "is up (ICE and DTLS, when this peer's came up); the IDR times are their arrivals at a viewer of "
        "the camera itself; sending and decoding that IDR are not counted (a lower bound).")


def _join_effects_table(runs: Runs) -> Table | None:
    rows = []
    for mode in MODES:
        rs = _joins(runs, mode)
        if not rs:
            continue
        ok = _good_joins(rs)
        gaps = [j.get("watcher_gap_ms", math.nan) for j in ok]
        quiet = _pooled(rs, lambda r: r.get("watcher_quiet_gaps_ms", []))
        rows.append([mode, _fmt(_p((j["connected_ms"] for j in ok), 50)),
                     _fmt(_p((j["first_packet_ms"] for j in ok), 50)),
                     f"{sum(1 for j in ok if j['first_key'])}/{len(ok)}",
                     f"{_pair_text(gaps)} / {_fmt(max(_finite(gaps), default=math.nan))}",
                     f"{_fmt(_p(quiet, 99))} / {_fmt(max(quiet, default=math.nan))}",
                     str(sum(r.get("reconnects", 0) for r in rs))])
    if not rows:
        return None
    return Table(
        "What a join does: the new peer's start, and a viewer already watching",
        ["server", "connected after the offer p50 ms", "first RTP packet after the offer p50 ms",
         "first frame a keyframe", f"watching viewer's longest frame gap within {JOIN_SPAN:g} s of a join: "
         "p50 / p95 / max ms", "its frame gaps away from joins: p99 / max ms",
         "camera source lost and reopened"], rows,
        "The watching viewer connects before the joins and counts whole frames without decoding them. With "
        "nobody else watching, every passthrough join starts the source's decoder, which catches up from "
        "the camera's last keyframe in the capture thread; the server's watchdog reopens a source that "
        "delivers nothing for 2 s.")


LATENCY_ROWS = (
    ("direct_arrival_ms", "the camera's own viewer (PyAV on the RTSP URL): capture to the access unit"),
    ("camcast_arrival_ms", "through camcast {mode}: capture to the frame's last packet at the WebRTC peer"),
    ("camcast_ms", "through camcast {mode}: capture to decoded at the peer (aiortc)"),
    ("transport_ms", "added by camcast {mode}, per frame: last packet at the peer - access unit at the "
     "camera's viewer"),
)


def _latency_table(runs: Runs, s: PassthroughSettings) -> Table | None:
    rows = []
    for mode in MODES:
        rs = _latency_runs(runs, mode, s)
        for key, what in LATENCY_ROWS:
            pooled = _pooled(rs, lambda r, key=key: r["latency"].get(key, []))
            if pooled:
                rows.append([what.format(mode=mode) + f" ({mode} point)" * key.startswith("direct"),
                             _latency_p50(rs, key).fmt(1), _fmt(_p(pooled, 95), 1), str(len(pooled))])
    if not rows:
        return None
    return Table(
        "Capture-to-decode latency: the camera itself against through camcast",
        ["receiver", "p50 ms (median of repeats)", "p95 ms (pooled)", "frames"], rows,
        f"At the end of the {s.latency_peers}-peer point (its peers and the recording still on), over "
        f"{s.latency_window:g} s: one decoding WebRTC peer of camcast (aiortc, marker-aware jitter buffer), "
        "measured once /api/status shows it off the start-up bridge and the bridge's encoder stopped (while "
        "anything wants pictures the camera is decoded, each packet before it is passed on), and beside it a "
        "viewer of the camera "
        "itself (PyAV on the RTSP URL over TCP, as camcast's source reads it). Times are wall clock on one "
        "machine, from the stamp the camera drew into the picture before encoding it. Passed through, a "
        "frame has the same bytes at both viewers and is found by them (its capture time from the stamp "
        "the peer decoded); the camera's viewer does not decode then (it is the same work at any "
        "receiver, and on a busy machine it would only fall behind). Transcoded, frames are found by "
        "their stamps, which the camera's viewer decodes too (slice threads, in a thread of its own; its "
        "arrival times are noted before, so a decoder that falls behind does not move them). "
        "Both sides include the camera's own latency (its encoder, GStreamer's RTSP server): the added "
        "rows are per-frame differences, what camcast (RTSP in, relay or decode and encode, RTP "
        "packetization, SRTP, UDP on loopback) puts between the camera and a WebRTC viewer.")


# -- figures --------------------------------------------------------------------------------------
def _save(fig: Any, ax: Any, path: Path, title: str, xlabel: str, ylabel: str) -> None:
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _cpu_figure(path: Path, runs: Runs, points: list[Point], s: PassthroughSettings) -> bool:
    groups = [(f"RTSP, {p.viewers} peers" + (" + rec." if s.record else "") if p.kind == "rtsp"
               else f"MJPEG, {p.viewers} clients", p.kind, p.viewers)
              for p in points if p.kind != "joins" and p.mode == "passthrough" and runs.get(p.name)]
    if not groups:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    x = np.arange(len(groups))
    for i, mode in enumerate(MODES):
        spreads = [_cores(runs.get(_name(kind, mode, n), [])) for _, kind, n in groups]
        y = np.array([sp.median for sp in spreads])
        err = np.array([[sp.median - sp.low for sp in spreads], [sp.high - sp.median for sp in spreads]])
        label = "camcast, the camera passed through" if mode == "passthrough" else "camcast --transcode"
        bars = ax.bar(x + (i - 0.5) * 0.38, y, 0.38, yerr=err, capsize=3, color=COLORS[mode], label=label)
        for bar, value in zip(bars, y, strict=True):
            if value == value:
                ax.annotate(f"{value:.3f}", (bar.get_x() + bar.get_width() / 2, value), ha="center",
                            va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, [g[0] for g in groups])
    _save(fig, ax, path, f"Server CPU, camera {s.size} @ {s.fps} fps (median, min-max of repeats)", "",
          "server cores (the camcast process)")
    return True


def _joins_figure(path: Path, runs: Runs, s: PassthroughSettings) -> bool:
    joins = _placed(runs, "passthrough")
    if not joins:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    since = [j["since_keyframe_s"] for j in joins]
    ax.scatter(since, [j["relay_ms"] for j in joins], s=14, color=COLORS["relay"], marker="x",
               label="plain relay (computed: the camera's next IDR)")
    ax.scatter(since, [j["ttff_ms"] for j in joins], s=16, color=COLORS["passthrough"],
               label="camcast passthrough: first decoded frame")
    ax.scatter(since, [j["fresh_ms"] for j in joins], s=20, facecolors="none",
               edgecolors=COLORS["passthrough"],
               label="camcast passthrough: first frame captured after the offer")
    other = _placed(runs, "transcode")
    if other:
        ax.scatter([j["since_keyframe_s"] for j in other], [j["ttff_ms"] for j in other], s=14,
                   color=COLORS["transcode"], marker="^", label="camcast --transcode: first decoded frame")
    ax.axhline(s.ttff_target_ms, linestyle="--", color="grey", linewidth=1)
    ax.annotate(f"target p95 {s.ttff_target_ms:g} ms", (0.01, s.ttff_target_ms),
                xycoords=("axes fraction", "data"), va="bottom", fontsize=8, color="grey")
    _save(fig, ax, path, f"A new peer's first frame on a {s.gop / s.fps:g} s GOP camera",
          "the offer's time after the camera's last keyframe (s)", "after POST /offer (ms)")
    return True


def _latency_figure(path: Path, runs: Runs, s: PassthroughSettings) -> bool:
    samples = []
    for mode in MODES:
        rs = _latency_runs(runs, mode, s)
        if rs:
            samples.append(Samples(f"the camera's own viewer: access unit ({mode} point)",
                                   _pooled(rs, lambda r: r["latency"]["direct_arrival_ms"]), COLORS["direct"],
                                   dotted=mode == "transcode"))
            samples.append(Samples(f"through camcast {mode}: last packet at the WebRTC peer",
                                   _pooled(rs, lambda r: r["latency"]["camcast_arrival_ms"]), COLORS[mode]))
            decoded = _pooled(rs, lambda r: r["latency"]["camcast_ms"])
            samples.append(Samples(f"through camcast {mode}: decoded at the peer", decoded, COLORS[mode],
                                   dotted=True))
    if not samples:
        return False
    top = max(_p(sm.values, 95) for sm in samples)
    cdf_plot(path, "Capture-to-arrival and -decode latency of the camera's frames", "latency (ms)", samples,
             xmax=top * 1.2 if top == top else None)
    return True


# -- the section ----------------------------------------------------------------------------------
def build_section(ctx: RunContext, s: PassthroughSettings, points: list[Point], runs: Runs,
                  loads: list[str]) -> Section:
    section = Section("passthrough", f"Passthrough: cameras that already encode ({s.size} @ {s.fps} fps)")
    section.intro = (
        f"An RTSP camera (the tests' GStreamer RTSP server: x264 {s.profile} profile, no B-frames, "
        f"{s.camera_kbps} kbit/s, an IDR every {s.gop} frames = {s.gop / s.fps:g} s, the capture time "
        "stamped into every picture) and an HTTP MJPEG camera (another camcast's stamped test pattern at "
        "the same size and rate), each watched by a fresh camcast per point: the camera's own H.264 or "
        "JPEGs passed through, against `--transcode` (decode, and encode again: H.264 at `--bitrate` "
        f"{s.camera_kbps * 1000} with a keyframe every 2 s, or JPEG) as the baseline, side by side in one "
        f"run, {ctx.repeats} repeat(s) round-robin. WebRTC peers are aiortc receivers pinned to the top "
        "rendition (`?rendition=high`) that count frames without decoding them; the CPU window "
        f"({s.window:g} s) starts once every peer is on the camera's packets and no encoder runs (the "
        "start-up bridge stopped). Only the server under test is measured; the camera's process is another. "
        f"Load average at start / end: {loads[0]} / {loads[-1]} (2 cores, shared with other work).")
    low = min(s.peers, default=0)
    checks = [
        _cpu_check(runs, "rtsp", low, f"RTSP {s.size} @ {s.fps} camera, {low} WebRTC peers"
                   + (" + recording" if s.record else "") + ": server CPU", s),
        _cpu_check(runs, "mjpeg", s.mjpeg_clients,
                   f"HTTP MJPEG {s.size} @ {s.fps} camera, {s.mjpeg_clients} MJPEG clients: server CPU", s),
        _ttff_check(runs, s),
        _latency_check(runs, s),
    ]
    section.checks = [c for c in checks if c is not None]
    tables = [_cpu_table(runs, points, s), _per_peer_table(runs, s), _first_frame_table(runs, s),
              _join_effects_table(runs), _latency_table(runs, s)]
    section.tables = [t for t in tables if t is not None]
    out = ctx.out_dir
    out.mkdir(parents=True, exist_ok=True)
    figures = [
        (_cpu_figure(out / "passthrough_cpu.png", runs, points, s), "passthrough_cpu.png",
         "Server CPU with the camera passed through and with --transcode (the camcast process only)"),
        (_joins_figure(out / "passthrough_joins.png", runs, s), "passthrough_joins.png",
         "A new peer's first frame against where in the camera's GOP it joined; a plain relay waits for "
         "the next IDR"),
        (_latency_figure(out / "passthrough_latency_cdf.png", runs, s), "passthrough_latency_cdf.png",
         "Capture-to-decode latency of the same frames at a viewer of the camera itself and through camcast"),
    ]
    section.figures = [Figure(name, caption) for made, name, caption in figures if made]
    section.notes = _notes(runs, s)
    return section


def _notes(runs: Runs, s: PassthroughSettings) -> list[str]:
    every = [r for rs in runs.values() for r in rs]
    notes = []
    mjpeg = []
    for mode in MODES:
        rs = runs.get(_name("mjpeg", mode, s.mjpeg_clients), [])
        if rs:
            mjpeg.append(f"{mode} p50 {_spread(rs, lambda r: _p(r['latency_ms'], 50)).fmt(1)} ms, "
                         f"p95 {_spread(rs, lambda r: _p(r['latency_ms'], 95)).fmt(1)} ms")
    if mjpeg:
        notes.append("MJPEG clients' capture-to-receipt latency (the upstream camcast's stamp, read from "
                     "sampled JPEGs): " + "; ".join(mjpeg) + ".")
    rtsp = [r for r in every if r["point"]["kind"] == "rtsp"]
    ours = [r for r in rtsp if r["point"]["mode"] == "passthrough"]
    if ours:
        unsettled = [r for r in ours if r["encoders_at_window"] or set(r["sessions_at_window"]) != {"high"}
                     or r["switching_at_window"]]
        modes = sorted({r["passthrough"]["mode"] for r in ours})
        notes.append(f"Passthrough CPU windows that began with an encoder running or a peer not yet on the "
                     f"camera's packets: {len(unsettled)} of {len(ours)}; the server's passthrough mode: "
                     f"{modes}.")
    if rtsp and s.record:
        frames = [r["recording"].get("frames") or 0 for r in rtsp]
        notes.append(f"Recordings during the rtsp points: {sum(1 for f in frames if f > 0)} of {len(frames)} "
                     f"wrote frames (median {percentile(frames, 50):.0f} frames each).")
    for mode in MODES:
        rs = [r for r in every if r["point"]["mode"] == mode and r["point"]["kind"] != "mjpeg"]
        if rs:
            lost = {kind: sum(r.get("reconnects", 0) for r in rs if r["point"]["kind"] == kind)
                    for kind in ("rtsp", "joins")}
            streaming = [r["streaming_s"] for r in rs]
            notes.append(f"RTSP camera, {mode}: the server streamed {percentile(streaming, 50):.1f} s "
                         f"after it started (median; max {max(streaming):.1f} s: the camera's first "
                         f"IDR); its source was lost and reopened {lost['rtsp']} time(s) in the rtsp points, "
                         f"{lost['joins']} in the joins points.")
    early = {mode: [j["first_age_ms"] - j["ttff_ms"] for j in _good_joins(_joins(runs, mode))]
             for mode in MODES}
    if early["passthrough"]:
        def p50_p95(values: list[float]) -> str:
            return f"p50 {_fmt(_p(values, 50))} ms, p95 {_fmt(_p(values, 95))} ms"

        notes.append("How long before the offer a new peer's first frame was captured: passthrough "
                     + p50_p95(early["passthrough"])
                     + (f" (transcode {p50_p95(early['transcode'])})" if early["transcode"] else "")
                     + ": passed through, the bridge's first keyframe is of the last picture decoded, old "
                     "when nothing needed pictures just before; current ones follow once the decoder has "
                     "caught up from the camera's last keyframe.")
    high = max(s.peers, default=0)
    crowded = runs.get(_name("rtsp", "passthrough", high), [])
    if crowded and high > min(s.peers):
        bridged = sum(1 for r in crowded if "h264-bridge" in r["encoders_at_window"])
        dropped = sum(r["tracks"]["dropped"] for r in crowded)
        resyncs = sum(r["tracks"]["resyncs"] for r in crowded)
        notes.append(f"At {high} peers passed through, the server's tracks dropped {dropped} frames and "
                     f"resynced {resyncs} times over {len(crowded)} repeats (a resync waits for the "
                     f"camera's next keyframe); in {bridged} of them some peers were still on the bridge "
                     "when the window began (its encoder running), so the CPU at that point includes an "
                     "encode and buys fewer frames: see the fps and the CPU per frame sent.")
    gops = _finite(r["gop_measured_s"] for r in every if r["point"]["kind"] == "joins")
    if gops:
        notes.append(f"The camera's keyframe interval at its own viewer: median {percentile(gops, 50):.2f} s "
                     f"(its GOP is {s.gop} frames; a busy machine makes the camera skip frames, which "
                     "stretches it).")
    problems = [r["latency"][k] for r in rtsp for k in ("probe_error", "direct_error") if r["latency"].get(k)]
    problems += [str(e) for r in every for e in r["errors"]]
    notes.append(f"Errors (peer connects, joins, MJPEG clients, latency viewers): {len(problems)}"
                 + (f" ({'; '.join(sorted({p[:100] for p in problems})[:3])})" if problems else "") + ".")
    again = sum(len(r.get("disturbed_attempts", [])) for r in every)
    kept = sum(1 for r in every if r.get("disturbed"))
    notes.append(f"Repeats measured again because other processes took over {s.max_other_cores:g} cores: "
                 f"{again}; still disturbed after {s.retries} retries (kept): {kept}.")
    loads = sorted({r["load_average"] for r in every if "load_average" in r})
    if loads:
        notes.append("Load averages (1, 5, 15 min) at the end of the windows: " + "; ".join(loads[:12])
                     + ("; ..." if len(loads) > 12 else "") + ".")
    return notes
