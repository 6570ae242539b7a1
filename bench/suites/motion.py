"""Motion suite: the detector's accuracy on labelled clips, and what detection costs a real server.

1. Accuracy, offline, simulated time: generated clips that compress like a camera (bench.motion_clips)
   are fed at the detector's sample rate through the server's MotionDetector + EventTracker with its
   defaults (and any alternative settings beside them): recall per object size, false events per hour
   where nothing moves, delay from an object's entry to its event.
2. Cost: camcast with one test-pattern camera, with and without `--motion`, fresh servers round-robin
   over the repeats; the difference of the medians is the detection's cost.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.machine import load_average
from bench.motion_accuracy import parse_variants, run_clips
from bench.motion_clips import Clip, empty_clips, object_clips, switch_clips
from bench.motion_cost import CostPoint, measure_settled
from bench.motion_report import build_section
from bench.report import Section
from bench.runner import RunContext, Suite


@dataclass(frozen=True)
class MotionBenchSettings:
    per_bucket: int = 50  # object passes in each size bucket (0.5-1, 1-2, 2-5, 5-10 % of the picture)
    per_clip: int = 6
    noise_hours: float = 1.0  # nothing moving: sensor noise and JPEG only
    ramp_hours: float = 1.0  # nothing moving: plus slow light swings
    switch_clips: int = 4  # nothing moving: a light switched on and off 4 times each
    switch_every: float = 30.0  # seconds between switches
    clip_minutes: float = 10.0
    quiet_noise: tuple[float, ...] = (2.0, 5.0, 10.0)  # sensor noise sigmas of the noise and ramp clips
    seed: int = 14
    workers: int = 2  # processes rendering and detecting clips
    # Settings beside the server's defaults, `;`-separated: a more sensitive threshold (13 grey levels
    # instead of 25), and that with events starting after 0.2 s or at the first moving sample.
    # Beside the defaults (sensitivity 0.8, start_after 0): the first defaults, and a start 0.2 s later.
    variants: str = "sensitivity=0.5,start_after=0.3;start_after=0.2"
    accuracy: bool = True
    cost: bool = True
    sizes: tuple[str, ...] = ("640x480", "1920x1080")
    fps: float = 30.0
    window: float = 15.0
    settle: float = 4.0
    # A run is measured again (up to `retries` times) when the camera captured under this share of its
    # rate or other processes took more than max_other_cores: its CPU is then that of another workload.
    min_capture_share: float = 0.95
    max_other_cores: float = 1.0
    retries: int = 2
    retry_pause: float = 5.0
    quiet_cores: float = 1.0  # before each run, wait (up to quiet_max_wait s) for the machine to calm
    quiet_sample: float = 2.0
    quiet_max_wait: float = 30.0
    replay: str = ""  # a raw motion_cost.json of an earlier run: report it again instead of measuring


FULL = MotionBenchSettings()
QUICK = MotionBenchSettings(per_bucket=4, per_clip=4, variants="", noise_hours=0.05, ramp_hours=0.05,
                            switch_clips=1, clip_minutes=1.5, sizes=("640x480",), window=2.0, settle=1.5,
                            retries=0, quiet_max_wait=0.0)


def clips_of(s: MotionBenchSettings) -> list[Clip]:
    return (object_clips(s.per_bucket, s.per_clip, s.seed)
            + empty_clips("noise", s.noise_hours, s.clip_minutes, s.seed + 1, s.quiet_noise)
            + empty_clips("ramp", s.ramp_hours, s.clip_minutes, s.seed + 2, s.quiet_noise)
            + switch_clips(s.switch_clips, s.seed + 3, s.switch_every))


def run_cost(ctx: RunContext, s: MotionBenchSettings) -> list[dict[str, Any]]:
    if s.replay:
        return list(json.loads(Path(s.replay).read_text()))
    points = [CostPoint(size, motion) for size in s.sizes for motion in (False, True)]
    runs = []
    for rep, point in ctx.schedule(points):
        ctx.log(f"motion: cost {point.size} motion={'on' if point.motion else 'off'}, repeat {rep + 1}")
        runs.append(measure_settled(ctx, s, point, rep))
    return runs


def run(ctx: RunContext) -> Section:
    s = ctx.settings("motion", FULL, QUICK)
    variants = parse_variants(s.variants)
    loads = [load_average()]
    results: list[dict[str, Any]] = []
    if s.accuracy:
        clips = clips_of(s)
        hours = sum(c.duration for c in clips) / 3600.0
        ctx.log(f"motion: {len(clips)} clips, {hours:.2f} h of video, {len(variants)} setting(s), "
                f"{s.workers} worker(s)")
        results = run_clips(clips, variants, s.workers)
        ctx.save_raw("motion_events.json", [
            {"clip": asdict(r["clip"]), "events": {k: [asdict(e) for e in v] for k, v in r["events"].items()}}
            for r in results])
    cost: list[dict[str, Any]] = []
    if s.cost:
        loads.append(load_average())
        cost = run_cost(ctx, s)
        ctx.save_raw("motion_cost.json", cost)
    loads.append(load_average())
    intro = (__doc__ or "").split("\n\n", 1)[1].strip()
    return build_section(ctx, s, intro, variants, results, cost, loads)


SUITE = Suite("motion", "Motion detection", run)
