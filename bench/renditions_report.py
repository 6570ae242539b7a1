"""The renditions section: targets, tables and plots from the runs of bench.suites.renditions."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.plots import Series, line_plot
from bench.report import Check, Figure, Section, Table
from bench.runner import RunContext
from bench.stats import Spread, percentile

if TYPE_CHECKING:
    from bench.suites.renditions import Camera, RenditionsSettings

Run = dict[str, Any]
Runs = dict[str, list[Run]]
# An extra rendition: the ladder point without it, the point with it, the one-encode camera.
EXTRA = {"medium": ("high", "high+medium", "medium-only"),
         "low": ("high+medium", "high+medium+low", "low-only")}
LADDER_POINTS = ("high", "high+medium", "high+medium+low")


def _spread(rs: list[Run], fn: Callable[[Run], float]) -> Spread:
    return Spread.of([fn(r) for r in rs])


def _cores(rs: list[Run]) -> Spread:
    return _spread(rs, lambda r: r["cores"])


def _encode(rs: list[Run]) -> Spread:
    """Cores with the peers minus cores capturing alone, within each run (same server)."""
    return _spread(rs, lambda r: r["cores"] - r["idle_cores"])


def _paired(a: list[Run], b: list[Run], fn: Callable[[Run, Run], float]) -> Spread:
    """fn over the repeats of both points taken in the same round (the round-robin pairs them)."""
    by_rep = {r["rep"]: r for r in a}
    return Spread.of([fn(by_rep[x["rep"]], x) for x in b if x["rep"] in by_rep])


def _fps(rs: list[Run], rendition: str, how: Callable[[list[float]], float]) -> Spread:
    return _spread(rs, lambda r: how([p["fps"] for p in r["peers"] if p["rendition"] == rendition]))


def _kbps(rs: list[Run], rendition: str) -> Spread:
    return _spread(rs, lambda r: _median([p["kbps"] for p in r["peers"] if p["rendition"] == rendition]))


def _renditions_of(rs: list[Run]) -> list[str]:
    names = {p["rendition"] for r in rs for p in r["peers"]}
    return [n for n in ("high", "medium", "low") if n in names]


def _describe(camera: Camera) -> str:
    width, height = camera.size
    what = "ladder" if camera.adapt else "one encode"
    return f"{width}x{height} @ {camera.fps:g} fps, {camera.bitrate // 1000} kbit/s ({what})"


def _rendition_label(name: str, cameras: dict[str, Camera]) -> str:
    c = cameras.get(name)
    return f"{name} ({_describe(c).split(' (')[0]})" if c else name


def _sent_short(r: Run) -> float:
    """Sessions the server sent under their rendition's rate over the window (then it did less work)."""
    if "sent_short" in r:
        return float(r["sent_short"])
    return float(sum(1 for x in r["peers"] if x["fps"] < x["rate"] - 1.0))  # runs from before it was kept


def _short(runs: Runs, points: tuple[str, ...]) -> str:
    """Empty when the server sent every peer of these points its rendition's rate (median over repeats),
    else why not: less CPU for fewer frames is no saving, so such figures do not count."""
    slow = [p for p in points if _spread(runs[p], _sent_short).median > 0]
    return f"; not comparable: the server sent peers of {', '.join(slow)} under their rate" if slow else ""


def _extra_checks(runs: Runs, cameras: dict[str, Camera]) -> list[Check]:
    checks = []
    for name, points in EXTRA.items():
        without, with_, alone = points
        if not all(runs.get(p) for p in points):
            continue
        extra = _cores(runs[with_]).median - _cores(runs[without]).median
        pairs = _paired(runs[without], runs[with_], lambda a, b: b["cores"] - a["cores"])
        camera, encode = _cores(runs[alone]), _encode(runs[alone])
        label = _rendition_label(name, cameras)
        short = _short(runs, points)
        measured = f"+{extra:.3f} cores (per round {pairs.fmt(3)}){short}"
        checks.append(Check(f"extra rendition {label}: {without} -> {with_}",
                            f"<= a camera whose only encode is it: {camera.fmt(3)} cores", measured,
                            not short and extra <= camera.median))
        checks.append(Check(f"extra rendition {name}, against that camera's encode alone",
                            f"<= its cores minus its capture-only cores: {encode.fmt(3)}", measured,
                            not short and extra <= encode.median))
    return checks


def _peer_points(runs: Runs) -> list[str]:
    points = [p for p in runs if p.endswith("-peers") and runs[p]]
    return sorted(points, key=lambda p: len(runs[p][0]["peers"]))


def _many_checks(s: RenditionsSettings, runs: Runs) -> list[Check]:
    checks = []
    two = runs.get("high+medium")
    for point in _peer_points(runs):
        many = runs[point]
        n = len(many[0]["peers"])
        if two:
            marginal = (_cores(many).median - _cores(two).median) / (n - 2)
            pairs = _paired(two, many, lambda a, b, n=n: (b["cores"] - a["cores"]) / (n - 2))
            short = _short(runs, ("high+medium", point))
            if short:  # what the added peers would cost at their full rate, from the cost of a packet
                per_peer_pps = _spread(two, lambda r: _sum(r, "pps") / len(r["peers"])).median
                full = _per_packet_us(two, many) * per_peer_pps / 1e6
                short += (f" (at the full rate, from the event loop's CPU per packet: about {full:.4f} cores "
                          "a peer)")
            loop = (_loop(many).median - _loop(two).median) / (n - 2)
            checks.append(Check(f"marginal CPU per peer, {n} peers (half high, half medium) vs 1 + 1",
                                f"<= {s.per_peer_target:g} cores",
                                f"{marginal:.4f} cores (({_cores(many).fmt(3, False)} - "
                                f"{_cores(two).fmt(3, False)}) / {n - 2}; per round {pairs.fmt(4)}; "
                                f"the event loop's alone {loop:.4f}, {_per_packet_us(two, many):.0f} us per "
                                f"added RTP packet){short}",
                                not short and marginal <= s.per_peer_target))
        parts, ok = [], True
        for name in _renditions_of(many):
            low = _fps(many, name, min)
            rate = next(p["rate"] for p in many[0]["peers"] if p["rendition"] == name)
            ok = ok and low.median >= rate - 1.0
            parts.append(f"{name}: slowest {low.fmt(1)} fps, median {_fps(many, name, _median).fmt(1)} fps, "
                         f"{_kbps(many, name).fmt(0)} kbit/s")
        errors = sum(len(r["errors"]) for r in many)
        checks.append(Check(f"frames received at {n} peers (counted at the receivers)",
                            "every peer at its rendition's rate (>= rate - 1 fps)",
                            "; ".join(parts) + (f"; {errors} peers failed to connect" if errors else ""),
                            ok and errors == 0))
    return checks


def _median(values: list[float]) -> float:
    return percentile(values, 50)


def _point_table(runs: Runs, cameras: dict[str, Camera], order: list[str]) -> Table:
    headers = ["point", "camera", "peers", "encoders (fps)", "server cores, capture only",
               "server cores with peers", "of which the event loop",
               "received fps per peer (slowest / median)", "kbit/s per peer (median)", "load-gen cores",
               "other processes' cores", "RSS MB"]
    rows = []
    for point in order:
        rs = runs.get(point)
        if not rs:
            continue
        camera = cameras.get(rs[0]["camera"])
        names = _renditions_of(rs)
        encoders = sorted({e for r in rs for e in r["encoder_fps"]})
        enc = ", ".join(f"{e} {_spread(rs, lambda r, e=e: r['encoder_fps'].get(e, 0.0)).fmt(1, False)}"
                        for e in encoders)
        count = {n: sum(1 for p in rs[0]["peers"] if p["rendition"] == n) for n in names}
        rows.append([
            point, _describe(camera) if camera else "-", " + ".join(f"{c} {n}" for n, c in count.items()),
            enc or "-", _spread(rs, lambda r: r["idle_cores"]).fmt(3), _cores(rs).fmt(3),
            _spread(rs, lambda r: r["loop_cores"]).fmt(2),
            "; ".join(f"{n} {_fps(rs, n, min).fmt(1, False)} / {_fps(rs, n, _median).fmt(1, False)}"
                      for n in names),
            "; ".join(f"{n} {_kbps(rs, n).fmt(0, False)}" for n in names),
            _spread(rs, lambda r: r["load_cores"]).fmt(2), _spread(rs, lambda r: r["other_cores"]).fmt(2),
            _spread(rs, lambda r: r["rss_mb"]).fmt(0),
        ])
    return Table("Server CPU at every point", headers, rows,
                 "Each cell: median over repeats (min-max). Capture only: the same server over a window "
                 "before any peer connected (no encoder runs). Encoders: frames encoded a second by each "
                 "running encoder over the window (h264 is the top rendition, or a one-encode camera's only "
                 "one). Peers count complete frames (RTP marker packet, none of its packets missing) and "
                 "RTP payload bytes; they decode nothing.")


def _extra_table(runs: Runs, cameras: dict[str, Camera]) -> Table:
    rows = []
    for name, (without, with_, alone) in EXTRA.items():
        if not (runs.get(without) and runs.get(with_) and runs.get(alone)):
            continue
        extra = _cores(runs[with_]).median - _cores(runs[without]).median
        pairs = _paired(runs[without], runs[with_], lambda a, b: b["cores"] - a["cores"])
        camera, encode = _cores(runs[alone]), _encode(runs[alone])
        rows.append([_rendition_label(name, cameras), f"{without} -> {with_}", f"{extra:.3f}", pairs.fmt(3),
                     camera.fmt(3), _spread(runs[alone], lambda r: r["idle_cores"]).fmt(3), encode.fmt(3),
                     f"{extra / camera.median:.2f}", f"{extra / encode.median:.2f}"])
    return Table("What one more active rendition costs", [
        "rendition", "ladder points", "extra server cores (difference of medians)", "extra, per round",
        "one-encode camera: cores (1 peer)", "its capture only", "its encode (cores - capture only)",
        "extra / that camera", "extra / its encode"], rows,
        "The extra rendition's cost includes its scaling (OpenCV INTER_AREA from the capture) and its one "
        "peer's sending; the one-encode camera's includes its one peer too, and its capture reads a file "
        "already at that size (the same video, scaled the same way).")


def _sum(r: Run, key: str) -> float:
    return float(sum(p[key] for p in r["peers"]))


def _loop(rs: list[Run]) -> Spread:
    return _spread(rs, lambda r: r["loop_cores"])


def _per_packet_us(two: list[Run], many: list[Run]) -> float:
    """The event loop's CPU per RTP packet the added peers received (medians). A peer's work is all on
    the loop (packetize, encrypt, send) and scales with its packets; the loop's share, unlike the
    server's, holds when a starved server also encodes fewer frames."""
    added = _spread(many, lambda r: _sum(r, "pps")).median - _spread(two, lambda r: _sum(r, "pps")).median
    return (_loop(many).median - _loop(two).median) / added * 1e6 if added > 0 else math.nan


def _peers_table(runs: Runs) -> Table:
    rows = []
    two = runs.get("high+medium")
    for point in ["high+medium", *_peer_points(runs)]:
        rs = runs.get(point)
        if not rs:
            continue
        n = len(rs[0]["peers"])
        per_frame = _spread(rs, lambda r: r["cores"] * 1000.0 / max(1e-9, _sum(r, "fps")))
        marginal = loop = per_packet = "-"
        if point != "high+medium" and two:
            marginal = f"{(_cores(rs).median - _cores(two).median) / (n - 2):.4f}"
            loop = f"{(_loop(rs).median - _loop(two).median) / (n - 2):.4f}"
            per_packet = f"{_per_packet_us(two, rs):.0f}"
        rows.append([str(n), _cores(rs).fmt(3), _loop(rs).fmt(2),
                     _encode(rs).fmt(3), _spread(rs, lambda r: min(r.get("sent_fps") or [math.nan])).fmt(1),
                     _spread(rs, _sent_short).fmt(0), _fps(rs, "high", min).fmt(1),
                     _fps(rs, "medium", min).fmt(1),
                     _spread(rs, lambda r: _sum(r, "pps")).fmt(0), per_frame.fmt(3), marginal, loop,
                     per_packet,
                     _spread(rs, lambda r: r["load_cores"]).fmt(2)])
    return Table("Peers on two renditions (high + medium, half the peers each)", [
        "peers", "server cores", "of which the event loop", "server cores - capture only",
        "slowest session, fps sent by the server", "sessions sent under their rate",
        "slowest high peer fps received", "slowest medium peer fps received",
        "RTP packets a second, all peers",
        "CPU ms per peer-frame", "marginal cores per added peer", "the event loop's, per added peer",
        "event loop us per added packet", "load-gen cores"], rows,
        "Marginal: (cores at the larger point - cores at 1 + 1 peers) / the peers added (medians); the same "
        "for the event loop (the server's main thread: it packetizes, encrypts and sends every peer's "
        "packets), and the loop's difference over the packets a second the added peers received.")


def _figures(ctx: RunContext, s: RenditionsSettings, runs: Runs) -> list[Figure]:
    figures = []
    ladder = [p for p in LADDER_POINTS if runs.get(p)]
    if ladder:
        x = list(range(1, len(ladder) + 1))
        sp = [_cores(runs[p]) for p in ladder]
        series = [Series("ladder camera, one peer per rendition", x, [v.median for v in sp],
                         [v.low for v in sp], [v.high for v in sp], "tab:blue")]
        bound, encodes = [sp[0].median], [sp[0].median]
        for name in ("medium", "low")[: len(ladder) - 1]:
            alone = runs.get(EXTRA[name][2])
            if not alone:
                break
            bound.append(bound[-1] + _cores(alone).median)
            encodes.append(encodes[-1] + _encode(alone).median)
        series.append(Series("high alone + the one-encode cameras (the bound)", x[: len(bound)], bound,
                             color="tab:orange"))
        series.append(Series("high alone + those cameras' encodes (capture subtracted)", x[: len(encodes)],
                             encodes, color="tab:green"))
        idle = _spread([r for p in ladder for r in runs[p]], lambda r: r["idle_cores"]).median
        line_plot(ctx.out_dir / "renditions_cpu.png", f"Server CPU vs active renditions ({s.size})",
                  "renditions active (high, + medium, + low)", "server CPU (cores)", series,
                  hlines=[(idle, "ladder camera capturing, no peer")])
        figures.append(Figure("renditions_cpu.png", "Server CPU with 1, 2 and 3 renditions of one camera "
                              "active (median, bars: min-max over repeats), against the bound: the top "
                              "rendition alone plus a camera whose only encode is each added rendition's."))
    two, points = runs.get("high+medium"), _peer_points(runs)
    if two and points:
        rs = [two, *(runs[p] for p in points)]
        x = [len(r[0]["peers"]) for r in rs]
        sp = [_cores(r) for r in rs]
        loop = [_loop(r) for r in rs]
        target = [sp[0].median + s.per_peer_target * (n - 2) for n in x]
        series = [Series("server", x, [v.median for v in sp], [v.low for v in sp], [v.high for v in sp],
                         "tab:blue"),
                  Series("its event loop (main thread)", x, [v.median for v in loop], [v.low for v in loop],
                         [v.high for v in loop], "tab:purple"),
                  Series(f"target: +{s.per_peer_target:g} cores per peer", x, target, color="tab:grey")]
        behind = [p for p in points if _spread(runs[p], _sent_short).median > 0]
        caption = ("Server CPU (and its event loop's) with 1 + 1 and more peers (half on each rendition) "
                   "against the per-peer target; median, bars: min-max.")
        if behind:
            # Where the server fell behind its CPU says little: add what the peers cost at the full rate.
            largest = runs[points[-1]]
            per_peer = _per_packet_us(two, largest) * _spread(two, lambda r: _sum(r, "pps") / 2).median / 1e6
            series.append(Series("at the full rate, from the event loop's CPU per packet", x,
                                 [sp[0].median + per_peer * (n - 2) for n in x], color="tab:cyan"))
            sent = "; ".join(f"{len(runs[p][0]['peers'])} peers: "
                             f"{_spread(runs[p], lambda r: _median(r['sent_fps'])).fmt(1, False)} fps"
                             for p in behind)
            caption += (f" The server sent under the full rate at {sent} (median session): there its CPU "
                        "is that of fewer frames.")
        line_plot(ctx.out_dir / "renditions_peers.png", "Server CPU vs peers on high + medium", "peers",
                  "server CPU (cores)", series, hlines=[(1.0, "one core: the event loop's ceiling")])
        figures.append(Figure("renditions_peers.png", caption))
    return figures


def build_section(ctx: RunContext, s: RenditionsSettings, cameras: dict[str, Camera], runs: Runs,
                  loads: list[str]) -> Section:
    from bench.suites.renditions import all_points

    order = [p for p in all_points(s) if runs.get(p)]
    content = "a generated textured, noisy, moving video (bench/network_content.py) played with --stamp"
    if s.content != "textured":
        content = "the test pattern"
    section = Section("renditions", f"Renditions: the cost of the ladder ({s.size} @ {s.fps:g} fps)")
    section.intro = (
        f"One camera showing {content}, its ladder at {s.bitrate // 1000} kbit/s on top; every point is a "
        f"fresh server measured over {s.idle_window:g} s capturing alone, then over {s.window:g} s with "
        f"WebRTC peers each pinned to one rendition (`?rendition=NAME`); {ctx.repeats} repeat(s), "
        "round-robin. Baselines in the same run: a camera `--adapt off` whose only encode is the medium "
        "(low) rendition's size, bitrate and rate, shown the same video scaled the same way.")
    section.checks = _extra_checks(runs, cameras) + _many_checks(s, runs)
    section.tables = [_point_table(runs, cameras, order), _extra_table(runs, cameras), _peers_table(runs)]
    section.figures = _figures(ctx, s, runs)
    all_runs = [r for rs in runs.values() for r in rs]
    disturbed = sum(len(r.get("disturbed_attempts", [])) for r in all_runs)
    still = sum(1 for r in all_runs if r.get("disturbed"))
    errors = sum(len(r["errors"]) for r in all_runs)
    lost = sum(p["lost_packets"] for r in all_runs for p in r["peers"])
    mismatch = [f"{r['point']} r{r['rep']}" for r in all_runs
                if r["server_peers"] != len(r["peers"])
                or r["server_renditions"] != Counter(p["rendition"] for p in r["peers"])]
    section.notes = [
        f"Cameras: {'; '.join(f'{k}: {_describe(c)}' for k, c in cameras.items())}.",
        f"Peer errors: {errors}; RTP packets lost at the receivers: {lost}. Server sessions on another "
        f"rendition than pinned (from /api/status): {', '.join(mismatch) or 'none'}.",
        f"Repeats run again because other processes took the machine: {disturbed}; still disturbed after the "
        f"retries: {still}; waited {sum(r.get('quiet_wait_s', 0.0) for r in all_runs):.0f} s in all for a "
        f"quieter machine before attempts. Load average at start and end: {loads[0]} / {loads[-1]}.",
    ]
    if math.isnan(_cores(runs.get("high", [])).median):
        section.notes.append("The high point did not run: no extra-rendition figures.")
    return section
