"""The network suite's section: figures per phase, the issue's targets, and plots over time."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

import bench.plots  # noqa: F401 - selects matplotlib's Agg backend before pyplot loads
from bench.report import Check, Figure, Section, Table
from bench.runner import RunContext
from bench.stats import percentile

MIN_FPS, MAX_FREEZE, STEP_DOWN_S, BACK_UP_S, ISOLATION = 25.0, 0.02, 3.0, 15.0, 0.10
COLORS = {"adapt": "tab:blue", "single": "tab:red", "relay": "tab:orange"}
LEVELS = {"high": 0, "medium": 1, "low": 2}


def _fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}{unit}"


def _bounds(run: dict[str, Any]) -> list[tuple[float, float, int, int | None]]:
    """(begin, end, kbps, previous kbps) of each phase, in seconds since the first phase began."""
    out, begin, previous = [], 0.0, None
    for phase in run["phases"]:
        out.append((begin, begin + phase["seconds"], phase["kbps"], previous))
        begin, previous = begin + phase["seconds"], phase["kbps"]
    return out


def _below_top(sample: dict[str, Any], top: str) -> bool:
    target = sample.get("switching_to")
    return (sample.get("rendition") not in (None, top)) or (target is not None and target != top)


def _at_top(sample: dict[str, Any], top: str) -> bool:
    return sample.get("rendition") == top and sample.get("switching_to") in (None, top)


def _freeze_at(viewer: list[dict[str, Any]], t: float) -> float:
    """Chromium's cumulative freeze time as of `t` (its last line at or before it)."""
    earlier = [r.get("freeze_s") or 0.0 for r in viewer if r["t"] <= t]
    return earlier[-1] if earlier else 0.0


def phase_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    samples, viewer = run["samples"], run["viewer"]
    top = next((x["rendition"] for x in samples if x.get("rendition")), None)
    rows = []
    for begin, end, kbps, previous in _bounds(run):
        # A viewer line counts the second before it: it belongs to the phase it ends in.
        lines = [r for r in viewer if begin < r["t"] <= end + 0.5 and r["t"] - 1.0 >= begin - 0.5]
        fps = [r["fps"] for r in lines if r.get("fps") is not None]
        latency = [r["latency_ms"] for r in lines if r.get("latency_ms") and 0 < r["latency_ms"] < 60_000]
        inside = [x for x in samples if begin < x["t"] <= end]
        step_down = back_up = None
        if top is not None and run["config"] == "adapt" and previous is not None:
            if kbps < previous:
                step_down = next((x["t"] - begin for x in inside if _below_top(x, top)), None)
            elif kbps > previous and any(_below_top(x, top) for x in samples if x["t"] <= begin):
                back_up = next((x["t"] - begin for x in inside if _at_top(x, top)), None)
        frames = sum(fps)
        rows.append({
            "kbps": kbps, "seconds": end - begin, "fps_mean": frames / (end - begin) if fps else None,
            "fps_median": statistics.median(fps) if fps else None, "fps_min": min(fps) if fps else None,
            "freeze_s": _freeze_at(viewer, end) - _freeze_at(viewer, begin),
            "latency_p50": percentile(latency, 50), "latency_p95": percentile(latency, 95),
            "renditions": list(dict.fromkeys(x["rendition"] for x in inside if x.get("rendition"))),
            "sizes": list(dict.fromkeys(r["size"] for r in lines if r.get("size"))),
            "link_kbps": statistics.fmean(x["link_kbps"] for x in inside) if inside else None,
            "step_down_s": step_down, "back_up_s": back_up,
            "stepped_down": previous is not None and kbps < previous,
            "recovered": previous is not None and kbps > previous,
        })
    return rows


def _stepping_table(run: dict[str, Any], rows: list[dict[str, Any]]) -> Table:
    body = []
    for i, r in enumerate(rows):
        timing = ("step-down " + _fmt(r["step_down_s"], 1, " s") if r["stepped_down"]
                  else "back to top " + _fmt(r["back_up_s"], 1, " s") if r["recovered"] else "")
        if run["config"] != "adapt":
            timing = "n/a (one rendition)" if (r["stepped_down"] or r["recovered"]) else ""
        body.append([f"{i + 1}: {r['kbps']} kbit/s, {r['seconds']:g} s", _fmt(r["link_kbps"], 0),
                     _fmt(r["fps_mean"]), _fmt(r["fps_median"], 0), _fmt(r["fps_min"], 0),
                     _fmt(r["freeze_s"], 2), _fmt(r["latency_p50"], 0), _fmt(r["latency_p95"], 0),
                     " -> ".join(r["renditions"]) or "-", " -> ".join(r["sizes"]) or "-", timing])
    run_s = sum(r["seconds"] for r in rows)
    freeze = sum(r["freeze_s"] for r in rows)
    return Table(f"{run['label']}", ["phase (link)", "through link kbit/s", "fps mean", "fps median/s",
                                     "fps min/s", "freeze s", "latency p50 ms", "latency p95 ms",
                                     "rendition(s)", "decoded size(s)", "switch timing"], body,
                 note=f"Freezes over the run: {freeze:.2f} s of {run_s:g} s ({100 * freeze / run_s:.1f} %); "
                      f"first frame {_fmt(run['first_frame_s'], 1, ' s')} after the page opened; "
                      f"page errors: {len(run['page_errors'])}.")


def _stepping_checks(run: dict[str, Any], rows: list[dict[str, Any]]) -> list[Check]:
    label = run["label"]
    fps = [r["fps_mean"] for r in rows]
    run_s = sum(r["seconds"] for r in rows)
    freeze = sum(r["freeze_s"] for r in rows) / run_s
    checks = [
        Check(f"decoded fps in every phase ({label})", f">= {MIN_FPS:g} fps",
              ", ".join(f"{r['kbps']}k: {_fmt(r['fps_mean'])}" for r in rows),
              all(f is not None and f >= MIN_FPS for f in fps)),
        Check(f"freeze time ({label})", f"<= {100 * MAX_FREEZE:g} % of the run", f"{100 * freeze:.1f} %",
              freeze <= MAX_FREEZE),
    ]
    if run["config"] == "adapt":
        downs = [r["step_down_s"] for r in rows if r["stepped_down"]]
        ups = [r["back_up_s"] for r in rows if r["recovered"]]
        checks.append(Check(f"step-down after the drop ({label})", f"<= {STEP_DOWN_S:g} s",
                            ", ".join(_fmt(d, 1, " s") if d is not None else "never" for d in downs),
                            bool(downs) and all(d is not None and d <= STEP_DOWN_S for d in downs)))
        checks.append(Check(f"back to the top rendition ({label})", f"<= {BACK_UP_S:g} s after recovery",
                            ", ".join(_fmt(u, 1, " s") if u is not None else "not within the phase"
                                      for u in ups) or "never left it",
                            bool(ups) and all(u is not None and u <= BACK_UP_S for u in ups)))
    return checks


def _isolation(raw: dict[str, Any]) -> tuple[Table, list[Check]]:
    runs = raw["isolation"]
    alone = next((r for r in runs if r["kind"] == "alone"), None)
    s = raw["settings"]
    body, checks = [], []
    for r in runs:
        troubled = {"alone": "none", "shaped": f"{s['isolation_kbps']} kbit/s link",
                    "lossy": f"{100 * s['isolation_loss']:g} % media loss"}[r["kind"]]
        body.append([troubled, _fmt(r["clean_keyframes_per_s"], 2), _fmt(r["clean_kbps"], 0),
                     _fmt(r["clean_fps"]), _fmt(r.get("clean_fps_min"), 0),
                     " -> ".join(r["clean_renditions"]) or "-",
                     _fmt(r.get("troubled_fps")), " -> ".join(r.get("troubled_renditions") or []) or "-",
                     _fmt(r.get("troubled_kbps"), 0), str(r.get("troubled_pli", "-"))])
        if alone is not None and r is not alone:
            key = (r["clean_keyframes_per_s"] / alone["clean_keyframes_per_s"] - 1
                   if alone["clean_keyframes_per_s"] else float("nan"))
            rate = r["clean_kbps"] / alone["clean_kbps"] - 1 if alone["clean_kbps"] else float("nan")
            checks.append(Check(f"clean viewer beside a viewer with {troubled}",
                                f"keyframe rate and bitrate within {100 * ISOLATION:g} % of alone",
                                f"keyframes {r['clean_keyframes_per_s']:.2f}/s vs "
                                f"{alone['clean_keyframes_per_s']:.2f} ({100 * key:+.0f} %), "
                                f"{r['clean_kbps']:.0f} vs {alone['clean_kbps']:.0f} kbit/s "
                                f"({100 * rate:+.0f} %)",
                                abs(key) <= ISOLATION and abs(rate) <= ISOLATION))
    window = s["window"]
    table = Table("A clean viewer beside a troubled one (camcast, adaptation on)",
                  ["troubled neighbour", "clean: keyframes/s sent", "clean: kbit/s sent", "clean: fps",
                   "clean: fps min/s", "clean: rendition", "troubled: fps", "troubled: rendition",
                   "troubled: kbit/s sent", "troubled: PLIs received"], body,
                  note=f"Window {s['window']:g} s after a {s['settle']:g} s settle; keyframes and bytes "
                       "are what the server's /api/status says it sent the clean viewer's session (one "
                       f"keyframe more or less is {100 / (0.5 * window):.0f} % at 0.5 keyframes/s over "
                       f"{window:g} s).")
    return table, checks


def _size_level(size: str | None, capture: int) -> int | None:
    """The ladder level a decoded picture's height stands for (full, half, quarter of the capture)."""
    if not size:
        return None
    height = int(size.split("x")[1])
    return 0 if height > capture * 0.75 else 1 if height > capture * 0.375 else 2


def _timeline(path: Path, runs: list[dict[str, Any]], capture: int) -> None:
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), dpi=100, sharex=True)
    link, fps, level, latency = axes
    first = runs[0]
    edges = [0.0]
    rate = []
    for _, end, kbps, _ in _bounds(first):
        edges.append(end)
        rate.append(kbps)
    link.stairs(rate, edges, color="black", linestyle="--", label="tbf rate")
    for run in runs:
        color, label = COLORS.get(run["config"]), run["label"]
        t = [x["t"] for x in run["samples"]]
        link.plot(t, [x["link_kbps"] for x in run["samples"]], color=color, label=f"{label}: through link",
                  linewidth=1)
        vt = [r["t"] for r in run["viewer"] if r["t"] >= -1]
        fps.plot(vt, [r["fps"] for r in run["viewer"] if r["t"] >= -1], color=color, label=label)
        if run["config"] == "adapt":
            level.step(t, [LEVELS.get(x.get("rendition") or "") for x in run["samples"]], where="post",
                       color=color, label=f"{label}: rendition")
        lat = [(r["t"], r["latency_ms"]) for r in run["viewer"]
               if r["t"] >= -1 and r.get("latency_ms") and 0 < r["latency_ms"] < 60_000]
        latency.plot([a for a, _ in lat], [b for _, b in lat], color=color, label=label)
        level.plot(vt, [_size_level(r.get("size"), capture) for r in run["viewer"] if r["t"] >= -1],
                   color=color, linestyle=":", label=f"{label}: decoded size")
    link.set(ylabel="kbit/s", title="Link rate and what went through it")
    fps.set(ylabel="decoded fps", title="Chromium: frames decoded per second")
    fps.axhline(MIN_FPS, color="grey", linestyle="--", linewidth=1)
    level.set(ylabel="level", title="Rendition (server) and decoded size (viewer)", yticks=[0, 1, 2],
              yticklabels=["high / 480p", "medium / 240p", "low / 120p"])
    level.invert_yaxis()
    latency.set(ylabel="ms", xlabel="seconds since the first phase began",
                title="Capture-to-display latency (frame stamp)", yscale="log")
    for ax in axes:
        for x in edges[1:-1]:
            ax.axvline(x, color="grey", linewidth=0.8, alpha=0.6)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def build_section(ctx: RunContext, raw: dict[str, Any]) -> Section:
    s = raw["settings"]
    section = Section("network", "Emulated networks (per-viewer adaptation)")
    content = ("a generated textured, noisy, moving video (`bench/network_content.py`, served with "
               "`--source FILE --stamp`)" if s["content"] == "textured" else "the test pattern")
    section.intro = (
        "The emulated network of `tests/support/netlab.py`: the server in one network namespace, the viewer "
        "in another, joined by a veth whose server side is shaped with `tc tbf` (iptables random loss for "
        f"the lossy viewer). Content: {content}, {s['size']} at {s['fps']:g} fps. Stepping: a Chromium "
        "viewer (a bare WHEP page; the relay has no WHEP, so its page uses the example's `POST /offer`) "
        f"while the link steps {' -> '.join(p.split(':')[0] + ' kbit/s' for p in s['phases'])} "
        f"({', '.join(p.split(':')[1] + ' s' for p in s['phases'])}), one run per server design after the "
        "viewer's first frame; every design in the same bench run. "
        "Isolation: a clean Chromium viewer (WHEP page) inside the server's namespace, over its loopback, "
        "and a troubled aiortc viewer (`tests/support/netviewer.py`) across the link.")
    runs = raw["stepping"]
    capture = int(s["size"].split("x")[1])
    for run in runs:
        rows = phase_rows(run)
        section.tables.append(_stepping_table(run, rows))
        section.checks += _stepping_checks(run, rows)
    if raw["isolation"]:
        table, checks = _isolation(raw)
        section.tables.append(table)
        section.checks += checks
    if runs:
        _timeline(ctx.out_dir / "network_timeline.png", [r for r in runs if r["rep"] == 0], capture)
        section.figures.append(Figure(
            "network_timeline.png", "Over time, each server design in its own colour: the link's tbf rate "
            "(dashed) and what went through it; frames Chromium decoded each second; the rendition camcast "
            "had the viewer on (solid) and the size Chromium decoded (dotted); capture-to-display latency "
            "read from the frame stamp (log scale)."))
    start, end = raw["load_average"][0], raw["load_average"][-1]
    section.notes = [
        "fps mean = frames decoded in the phase / phase seconds; median and min are over Chromium's "
        "once-a-second getStats() (framesDecoded deltas). Freeze time is the growth of Chromium's "
        "totalFreezesDuration, which grows when a freeze ends: a freeze counts in the phase it ends in. "
        "Latency = the time the page read the stamp of the picture on screen - its "
        "capture time (one sample a second; same clock, both namespaces share it).",
        "Step-down time: from the drop to the first sample (every "
        f"{s['interval']:g} s) of /api/status where the session's rendition or switching_to is below the top "
        "rendition. Back to top: from the recovery to the first sample on the top rendition with no switch "
        "pending. Neither applies to one encode (`--adapt off`) nor to the relay, whose per-peer encoder "
        "follows REMB in bitrate at an unchanged size.",
        "The cost target of the issue (CPU per extra rendition, per peer at 50 peers) is not measured here: "
        "the webrtc and cameras suites measure CPU on loopback.",
        f"Load average at the start of this suite {start}, at its end {end} (a shared 2-core machine: "
        "Chromium, the server and its encodes share it with other work). One run per design "
        f"(repeats: {s['repeats']}); the suite took {raw['seconds']:.0f} s.",
    ]
    return section
