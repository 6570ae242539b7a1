"""The motion suite's report section: targets, tables per settings variant, misses, cost, plots."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bench.motion_accuracy import (
    AFTER_END_S,
    BEFORE_ONSET_S,
    SWITCH_WINDOW_S,
    QuietResult,
    SegmentResult,
    Variant,
    score_objects,
    score_quiet,
)
from bench.motion_clips import BUCKETS, NOISE_LEVELS, SPEEDS
from bench.plots import Samples, Series, cdf_plot, line_plot
from bench.report import Check, Figure, Section, Table
from bench.runner import RunContext
from bench.stats import Spread, percentile

if TYPE_CHECKING:
    from bench.suites.motion import MotionBenchSettings

RECALL_TARGET = 0.98
FALSE_PER_HOUR_TARGET = 1.0
DELAY_P95_TARGET_MS = 500.0
COST_TARGETS = {"640x480": 0.02, "1920x1080": 0.05}
CONTRASTS = ((0.0, 10.0), (10.0, 20.0), (20.0, 40.0), (40.0, 256.0))
BUCKET_NAMES = [f"{lo:g}-{hi:g} %" for lo, hi in BUCKETS]


def _recall(segments: Sequence[SegmentResult]) -> tuple[int, int]:
    return sum(s.detected for s in segments), len(segments)


def _fmt_recall(segments: Sequence[SegmentResult]) -> str:
    hit, n = _recall(segments)
    return f"{hit / n:.3f} ({hit}/{n})" if n else "-"


def _ms(values: Sequence[float], q: float) -> float:
    return percentile([v * 1000.0 for v in values], q)


class VariantScore:
    """Everything the report says about one settings variant."""

    def __init__(self, variant: Variant, results: Sequence[dict[str, Any]]) -> None:
        self.variant = variant
        self.segments, self.stray = score_objects(results, variant.name)
        self.entries = [s for s in self.segments if s.kind == "enter"]
        self.big = [s for s in self.entries if s.area_pct >= 1.0]
        self.resumes = [s for s in self.segments if s.kind == "resume"]
        self.quiet: dict[str, QuietResult] = {k: score_quiet(results, variant.name, k)
                                              for k in ("noise", "ramp", "switch")}
        timed = [s for s in self.big if s.delay_s is not None]
        self.delays = [s.delay_s for s in timed if s.delay_s is not None]
        self.stamp_delays = [s.stamp_delay_s for s in timed if s.stamp_delay_s is not None]

    def recall_big(self) -> float:
        hit, n = _recall(self.big)
        return hit / n if n else float("nan")

    def false_per_hour(self) -> tuple[int, float]:
        events = self.quiet["noise"].false_events + self.quiet["ramp"].false_events
        hours = self.quiet["noise"].hours + self.quiet["ramp"].hours
        return events, hours

    def row(self) -> list[str]:
        events, hours = self.false_per_hour()
        sw = self.quiet["switch"]
        by_bucket = [_fmt_recall([s for s in self.entries if s.bucket == b]) for b in BUCKET_NAMES]
        return [self.variant.name, _fmt_recall(self.big), *by_bucket, _fmt_recall(self.resumes),
                f"{_ms(self.delays, 50):.0f} / {_ms(self.delays, 95):.0f}",
                f"{_ms(self.stamp_delays, 50):.0f} / {_ms(self.stamp_delays, 95):.0f}",
                f"{events / hours:.2f} ({events} in {hours:.2f} h)" if hours else "-",
                f"{self.quiet['noise'].false_events} / {self.quiet['ramp'].false_events}",
                f"{sw.switch_events}/{sw.switches}"
                + (f", +{sw.false_events} other" if sw.false_events else ""),
                str(self.stray)]


def _accuracy_checks(score: VariantScore) -> list[Check]:
    checks = []
    if score.segments:
        hit, n = _recall(score.big)
        checks.append(Check("recall, objects >= 1 % of the picture (server defaults)", f">= {RECALL_TARGET}",
                            f"{score.recall_big():.3f} ({hit} of {n} entries)",
                            score.recall_big() >= RECALL_TARGET))
        p50, p95 = _ms(score.delays, 50), _ms(score.delays, 95)
        s50, s95 = _ms(score.stamp_delays, 50), _ms(score.stamp_delays, 95)
        checks.append(Check("detection delay: object entry to the event's start being announced, p95",
                            f"<= {DELAY_P95_TARGET_MS:.0f} ms",
                            f"p50 {p50:.0f} ms, p95 {p95:.0f} ms (to the event's own start time, which "
                            f"is back-dated to its first moving sample: p50 {s50:.0f}, p95 {s95:.0f} ms)",
                            p95 <= DELAY_P95_TARGET_MS))
    events, hours = score.false_per_hour()
    if hours:
        checks.append(Check("false events per hour where nothing moves (noise-only and ramp-only video)",
                            f"<= {FALSE_PER_HOUR_TARGET:g}",
                            f"{events / hours:.2f} ({events} in {hours:.2f} h: "
                            f"{score.quiet['noise'].false_events} noise-only, "
                            f"{score.quiet['ramp'].false_events} with light ramps)",
                            events / hours <= FALSE_PER_HOUR_TARGET))
    return checks


def _cost_checks(cost: list[dict[str, Any]], s: MotionBenchSettings) -> list[Check]:
    checks = []
    for size in s.sizes:
        on, off = _cost_runs(cost, size, True), _cost_runs(cost, size, False)
        if not on or not off:
            continue
        diff = on["cores"].median - off["cores"].median
        target = COST_TARGETS.get(size)
        thread = on["thread"]
        thread_text = (f"; the detector thread alone {thread.median:.4f}" if thread.n
                       else "; the detector thread was not found, not measured alone")
        checks.append(Check(f"detection cost, one {size} @ {s.fps:g} camera", f"<= {target:g} cores"
                            if target else "-",
                            f"+{diff:.4f} cores ({off['cores'].median:.3f} -> {on['cores'].median:.3f})"
                            + thread_text, diff <= target if target else None))
    return checks


def _cost_runs(cost: list[dict[str, Any]], size: str, motion: bool) -> dict[str, Spread]:
    runs = [r for r in cost if r["point"]["size"] == size and r["point"]["motion"] == motion]
    if not runs:
        return {}
    return {"cores": Spread.of([r["cores"] for r in runs]),
            "thread": Spread.of([r["thread_cores"] for r in runs if r["thread_cores"] is not None]),
            "fps": Spread.of([r["capture_fps"] for r in runs]),
            "machine": Spread.of([r["machine_cores"] for r in runs]),
            "other": Spread.of([r["other_cores"] for r in runs]),
            "rss": Spread.of([r["rss_mb"] for r in runs]),
            "load": Spread.of([r["loadavg_1m"] for r in runs])}


def _cost_table(cost: list[dict[str, Any]], s: MotionBenchSettings) -> Table:
    rows = []
    for size in s.sizes:
        for motion in (False, True):
            c = _cost_runs(cost, size, motion)
            if not c:
                continue
            rows.append([size, "on" if motion else "off", c["cores"].fmt(4),
                         c["thread"].fmt(4) if motion else "-", c["fps"].fmt(1), c["rss"].fmt(0),
                         c["other"].fmt(2), c["machine"].fmt(2), c["load"].fmt(2)])
        on, off = _cost_runs(cost, size, True), _cost_runs(cost, size, False)
        if on and off:
            pairs = _paired(cost, size)
            diff = on["cores"].median - off["cores"].median
            rows.append([size, "on - off", f"{diff:+.4f}", "", "", "", "", "", f"per round: {pairs.fmt(4)}"])
    return Table("Detection cost: one camera, no viewer, with and without --motion", [
        "size", "motion", "server cores", "detector thread cores", "capture fps", "RSS MB",
        "other processes' cores", "machine busy cores", "load average (1 min)"], rows,
        f"Test pattern at {s.fps:g} fps (it moves all the time, so the detector sees motion and keeps an "
        "event open: the worst case for its contours and thumbnails). Each cell: median over repeats "
        "(min-max); on - off: difference of the medians, and of each round's pair (run back to back).")


def _paired(cost: list[dict[str, Any]], size: str) -> Spread:
    on = {r["rep"]: r["cores"] for r in cost if r["point"]["size"] == size and r["point"]["motion"]}
    off = {r["rep"]: r["cores"] for r in cost if r["point"]["size"] == size and not r["point"]["motion"]}
    return Spread.of([on[k] - off[k] for k in on if k in off])


def _groups() -> list[tuple[str, Callable[[SegmentResult], bool]]]:
    groups: list[tuple[str, Callable[[SegmentResult], bool]]] = []
    groups += [(f"speed {k} (crosses in {v:g} s)", lambda x, k=k: x.speed == k) for k, v in SPEEDS.items()]
    groups += [(f"noise sigma {n:g}", lambda x, n=n: x.noise == n) for n in NOISE_LEVELS]
    groups += [("slow light ramp", lambda x: x.ramp), ("steady light", lambda x: not x.ramp)]
    groups += [(f"contrast {lo:g}-{hi:g} grey levels", lambda x, lo=lo, hi=hi: lo <= x.contrast < hi)
               for lo, hi in CONTRASTS]
    return groups


def _breakdown(score: VariantScore) -> Table:
    rows = []
    for label, pick in _groups():
        chosen = [x for x in score.big if pick(x)]
        delays = [x.delay_s for x in chosen if x.delay_s is not None]
        small = [x for x in score.entries if x.area_pct < 1.0 and pick(x)]
        rows.append([label, _fmt_recall(chosen), f"{_ms(delays, 50):.0f} / {_ms(delays, 95):.0f}",
                     _fmt_recall(small)])
    return Table(f"By speed, noise, light and contrast ({score.variant.name})", [
        "clips", "recall >= 1 %", "delay to announcement p50 / p95 (ms)", "recall 0.5-1 %"], rows,
        "Contrast: the mean grey-level difference the detector's 160 px copy shows between the scene with "
        "the object and without it, over the object (bench.motion_clips.contrasts).")


def _quiet_by_noise(results: Sequence[dict[str, Any]], variants: list[Variant]) -> Table:
    """False events where nothing moves, per sensor noise level (noise-only and ramp clips together)."""
    levels = sorted({r["clip"].noise for r in results if r["clip"].kind in ("noise", "ramp")})
    rows = []
    for v in variants:
        row = [v.name]
        for level in levels:
            chosen = [r for r in results if r["clip"].kind in ("noise", "ramp") and r["clip"].noise == level]
            hours = sum(r["clip"].duration for r in chosen) / 3600.0
            row.append(f"{sum(len(r['events'][v.name]) for r in chosen)} in {hours:.2f} h")
        rows.append(row)
    return Table("False events where nothing moves, by sensor noise", ["settings", *[
        f"noise sigma {level:g}" for level in levels]], rows)


def _misses(score: VariantScore) -> Table:
    rows = [[m.clip, m.kind, f"{m.area_pct:.2f}", m.speed, f"{m.noise:g}", "yes" if m.ramp else "no",
             f"{m.contrast:.1f}"] for m in score.segments if not m.detected]
    return Table(f"Missed segments ({score.variant.name})",
                 ["clip", "segment", "object % of picture", "speed", "noise sigma", "light ramp", "contrast"],
                 rows or [["none", "", "", "", "", "", ""]])


def _figures(ctx: RunContext, scores: list[VariantScore], cost: list[dict[str, Any]],
             s: MotionBenchSettings) -> list[Figure]:
    out = ctx.out_dir
    figures = []
    if scores and scores[0].segments:
        mids = [(lo * hi) ** 0.5 for lo, hi in BUCKETS]
        series = []
        for sc in scores:
            ys = []
            for b in BUCKET_NAMES:
                hit, n = _recall([x for x in sc.entries if x.bucket == b])
                ys.append(hit / n if n else float("nan"))
            series.append(Series(sc.variant.name, mids, ys))
        line_plot(out / "motion_recall.png", "Recall by object size", "object size (% of the picture, log)",
                  "recall (entries found)", series, hlines=[(RECALL_TARGET, f"target {RECALL_TARGET}")],
                  logx=True)
        figures.append(Figure("motion_recall.png", "Recall of object entries by size bucket, per settings."))
        samples = [Samples(f"{sc.variant.name}: to the announcement", [d * 1000 for d in sc.delays])
                   for sc in scores]
        samples.append(Samples(f"{scores[0].variant.name}: to the event's own start time",
                               [d * 1000 for d in scores[0].stamp_delays], dotted=True))
        cdf_plot(out / "motion_delay_cdf.png", "Object entry (half inside) to event, objects >= 1 %",
                 "delay (ms)", samples, vlines=[(DELAY_P95_TARGET_MS, "target p95")],
                 ylabel="fraction of entries")
        figures.append(Figure("motion_delay_cdf.png", "Detection delay, CDF over object entries."))
    if cost:
        sizes = [size for size in s.sizes if _cost_runs(cost, size, True) and _cost_runs(cost, size, False)]
        mp = [int(w) * int(h) / 1e6 for w, h in (size.split("x") for size in sizes)]

        def series(motion: bool, key: str, label: str, color: str) -> Series:
            spreads = [_cost_runs(cost, size, motion)[key] for size in sizes]
            return Series(label, mp, [x.median for x in spreads], [x.low for x in spreads],
                          [x.high for x in spreads], color=color)

        lines = [series(False, "cores", "without --motion", "tab:blue"),
                 series(True, "cores", "with --motion", "tab:red")]
        if all(_cost_runs(cost, size, True)["thread"].n for size in sizes):
            lines.append(series(True, "thread", "the detector thread alone", "tab:green"))
        line_plot(out / "motion_cost.png", f"Server CPU, one camera @ {s.fps:g} fps, no viewer",
                  "megapixels per frame", "cores", lines)
        figures.append(Figure("motion_cost.png", "Server CPU with and without motion detection."))
    return figures


def build_section(ctx: RunContext, s: MotionBenchSettings, intro: str, variants: list[Variant],
                  results: list[dict[str, Any]], cost: list[dict[str, Any]], loads: list[str]) -> Section:
    scores = [VariantScore(v, results) for v in variants] if results else []
    section = Section("motion", "Motion detection: accuracy on labelled clips, and its cost", intro)
    defaults = scores[0] if scores else None
    section.checks = (_accuracy_checks(defaults) if defaults else []) + _cost_checks(cost, s)
    if scores:
        section.tables.append(Table("Accuracy per settings (the server's defaults first)", [
            "settings", "recall >= 1 %", *[f"recall {b}" for b in BUCKET_NAMES], "resumed after a stop",
            "delay to announcement p50 / p95 (ms)", "delay to event start stamp p50 / p95 (ms)",
            "false events per hour (nothing moving)", "false events noise-only / ramps",
            "light switches followed by an event", "events in object clips belonging to no object"],
            [sc.row() for sc in scores],
            "Recall: object entries found (an event starting between the object's first pixels in the "
            f"picture less {BEFORE_ONSET_S:g} s and {AFTER_END_S:g} s after it left or stopped, or an event "
            "already open then). Delay: from the moment half of the object is inside the picture; over "
            "entries of objects >= 1 % that opened an event of their own. Settings other than the defaults: "
            f"{'; '.join(f'`{v.name}`' for v in variants[1:]) or 'none'}."))
        section.tables.append(_quiet_by_noise(results, variants))
        if defaults is not None and defaults.segments:
            section.tables += [_breakdown(defaults), *[_misses(sc) for sc in scores]]
    if cost:
        section.tables.append(_cost_table(cost, s))
    section.figures = _figures(ctx, scores, cost, s)
    section.notes = _notes(s, results, cost, loads, defaults)
    return section


def _levels(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _notes(s: MotionBenchSettings, results: list[dict[str, Any]], cost: list[dict[str, Any]],
           loads: list[str], score: VariantScore | None) -> list[str]:
    notes = []
    if results:
        kinds: dict[str, float] = {}
        for r in results:
            kinds[r["clip"].kind] = kinds.get(r["clip"].kind, 0.0) + r["clip"].duration / 3600.0
        passes = sum(len(r["clip"].passes) for r in results)
        notes.append(
            "Clips: " + ", ".join(f"{k} {v:.2f} h" for k, v in kinds.items())
            + f"; {passes} object passes ({s.per_bucket} per size bucket, seed {s.seed}). 640x480 frames: a "
            f"textured static scene, Gaussian sensor noise (sigma {_levels(NOISE_LEVELS)} levels; where "
            f"nothing moves {_levels(s.quiet_noise)}), a JPEG round trip at "
            "quality 30-70; objects are textured ellipses (0.6-2.2 times as tall as wide) entering from an "
            f"edge at three speeds (crossing in {', '.join(f'{v:g}' for v in SPEEDS.values())} s), a quarter "
            "stopping for 10-20 s on their way; half the object clips and all ramp clips swing the light "
            "+-30 % over 20-60 s. Frames are made only at the detector's sample times, downsized with the "
            "server's `to_small_gray`.")
        if score is not None:
            sw = score.quiet["switch"]
            notes.append(
                "A light switched on or off (the whole picture's gain 0.6 <-> 1.0 in one frame, nothing "
                "moving) is not labelled as motion: nobody moved, and a recording of it shows nothing. "
                f"Events starting within {SWITCH_WINDOW_S:g} s of a switch are counted apart (the "
                f"light-switch column: {sw.switch_events} of {sw.switches} with the defaults), not as false "
                "events.")
    if cost:
        found = sorted({f"{r['motion_threads']} by {r['threads_found_by']}"
                        for r in cost if r["point"]["motion"]})
        notes.append(f"The detector thread (`motion-default`), per run with motion: {', '.join(found)}; "
                     f"{ctx_repeats(cost)} repeat(s), round-robin; {s.window:g} s window after "
                     f"{s.settle:g} s.")
        again = sum(len(r.get("disturbed_attempts", [])) for r in cost)
        still = [f"{r['point']['size']} {'on' if r['point']['motion'] else 'off'} repeat {r['rep'] + 1}: "
                 f"{r['disturbed']}" for r in cost if r.get("disturbed")]
        notes.append(f"Runs measured again because the camera fell behind or others took the cores: {again}; "
                     f"kept although disturbed (retries spent): {'; '.join(still) or 'none'}.")
        disturbed = sorted({o for r in cost for o in r["top_others"]})
        if disturbed:
            notes.append(f"Other busy processes during the windows: {', '.join(disturbed[:8])}.")
    notes.append(f"Load average at the suite's start, between the parts and at its end: {' | '.join(loads)}.")
    return notes


def ctx_repeats(cost: list[dict[str, Any]]) -> int:
    return max((r["rep"] for r in cost), default=-1) + 1
