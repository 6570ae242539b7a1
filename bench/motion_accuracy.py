"""The motion detector on labelled clips, offline: events found, missed and made up, and how late.

Every clip is rendered once per sample rate; each frame is downsized with the server's
`to_small_gray` and fed to a `MotionDetector` + `EventTracker` per settings variant (the server's
defaults first), at the clip's simulated times. Clips are independent, so they run in worker
processes; seeds make every run the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.motion_clips import BUCKETS, Clip, contrasts, frames
from camcast.motion.detector import MotionDetector, MotionSettings, to_small_gray
from camcast.motion.events import EventTracker

# An event belongs to a labelled segment when it starts between the object's first pixels in the
# picture (less this) and the end of the segment (plus this: a fast object's last sample).
BEFORE_ONSET_S = 0.5
AFTER_END_S = 2.0
SWITCH_WINDOW_S = 3.0  # an event starting this soon after a light switch is the switch's


@dataclass(frozen=True)
class Variant:
    name: str
    settings: MotionSettings


def parse_variants(text: str) -> list[Variant]:
    """"defaults" first, then each `key=value,key=value` of a `;`-separated list (MotionSettings fields)."""
    out = [Variant("defaults", MotionSettings())]
    fields = {f.name: f for f in dataclasses.fields(MotionSettings)}
    for item in (v.strip() for v in text.split(";")):
        if not item:
            continue
        changes: dict[str, Any] = {}
        for pair in item.split(","):
            key, sep, value = pair.partition("=")
            key = key.strip()
            if not sep or key not in fields or key == "masks":
                raise SystemExit(f"bench: motion variant {item!r}: expected key=value of "
                                 f"{', '.join(k for k in fields if k != 'masks')}")
            changes[key] = type(getattr(MotionSettings(), key))(value.strip())
        out.append(Variant(item, dataclasses.replace(MotionSettings(), **changes)))
    return out


@dataclass(frozen=True)
class Event:
    start_us: int  # the event's own start (the first moving sample of the run that started it)
    announced_us: int  # when the tracker said "start": what viewers, webhooks and recordings see
    end_us: int | None  # its last motion (None: still open when the clip ended)
    closed_us: int  # when the tracker said "end" (after the quiet period), or the clip's end
    peak: float


def run_clip(clip: Clip, variants: Sequence[Variant]) -> dict[str, Any]:
    """Events per variant for one clip, and the largest score each variant saw per second (for plots)."""
    events: dict[str, list[Event]] = {v.name: [] for v in variants}
    for fps in sorted({v.settings.fps for v in variants}):
        group = [v for v in variants if v.settings.fps == fps]
        detectors = [(v, MotionDetector(v.settings), EventTracker(v.settings)) for v in group]
        open_start: dict[str, tuple[int, int, float]] = {}
        last_us = 0
        for t_us, frame in frames(clip, fps):
            last_us = t_us
            small: dict[int, np.ndarray] = {}
            for v, detector, tracker in detectors:
                width = v.settings.width
                if width not in small:
                    small[width] = to_small_gray(frame, width)
                sample = detector.feed(small[width], t_us)
                for tr in tracker.feed(sample, t_us):
                    if tr.kind == "start":
                        open_start[v.name] = (tr.start_us, tr.at_us, tr.peak)
                    elif tr.kind == "end":
                        start, at, _ = open_start.pop(v.name)
                        events[v.name].append(Event(start, at, tr.end_us, tr.at_us, tr.peak))
        for v, _, tracker in detectors:
            for tr in tracker.close(last_us):
                start, at, _ = open_start.pop(v.name)
                events[v.name].append(Event(start, at, None, last_us, tr.peak))  # open at the clip's end
    return {"clip": clip, "events": events}


def run_clips(clips: Sequence[Clip], variants: Sequence[Variant], workers: int) -> list[dict[str, Any]]:
    if workers <= 1:
        return [run_clip(c, variants) for c in clips]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(run_clip, clips, [variants] * len(clips)))


def bucket_of(area_pct: float) -> str:
    for lo, hi in BUCKETS:
        if lo <= area_pct < hi or (hi == BUCKETS[-1][1] and area_pct == hi):
            return f"{lo:g}-{hi:g} %"
    return "other"


@dataclass(frozen=True)
class SegmentResult:
    clip: str
    kind: str  # enter | resume
    area_pct: float
    bucket: str
    speed: str
    noise: float
    ramp: bool
    contrast: float  # grey levels, as the detector's small copy shows the object (motion_clips.contrasts)
    detected: bool
    covered: bool  # an event was already open when the motion began (no delay of its own)
    delay_s: float | None  # labelled entry to the announcement of the event that found it
    stamp_delay_s: float | None  # labelled entry to that event's own start time


def score_objects(results: Sequence[dict[str, Any]], variant: str) -> tuple[list[SegmentResult], int]:
    """Each labelled segment found or missed, and the count of events that belong to none."""
    segments: list[SegmentResult] = []
    stray = 0
    for r in results:
        clip: Clip = r["clip"]
        if clip.kind != "objects":
            continue
        events: list[Event] = r["events"][variant]
        used: set[int] = set()
        for p, contrast in zip(clip.passes, contrasts(clip), strict=True):
            for t_in, t_out, kind in p.segments():
                onset = p.t0 if kind == "enter" else t_in
                lo, hi = (onset - BEFORE_ONSET_S) * 1e6, (t_out + AFTER_END_S) * 1e6
                open_at = [i for i, e in enumerate(events)
                           if e.announced_us < onset * 1e6 <= e.closed_us]
                found = [i for i, e in enumerate(events) if lo <= e.start_us <= hi]
                used.update(found + open_at)
                first = events[found[0]] if found else None
                covered = bool(open_at)
                segments.append(SegmentResult(
                    clip.name, kind, p.area_pct, bucket_of(p.area_pct), p.speed, clip.noise,
                    clip.ramp_period > 0, contrast, bool(found) or covered, covered,
                    (first.announced_us / 1e6 - t_in) if first and not covered else None,
                    (first.start_us / 1e6 - t_in) if first and not covered else None))
        stray += len(events) - len(used)
    return segments, stray


@dataclass(frozen=True)
class QuietResult:
    kind: str  # noise | ramp | switch
    hours: float
    false_events: int
    switches: int = 0
    switch_events: int = 0  # light switches followed by an event


def score_quiet(results: Sequence[dict[str, Any]], variant: str, kind: str) -> QuietResult:
    """Events on clips where nothing moves: all are false, except those right after a light switch
    (counted on their own)."""
    seconds = 0.0
    false_events = switches = switch_events = 0
    for r in results:
        clip: Clip = r["clip"]
        if clip.kind != kind:
            continue
        seconds += clip.duration
        events: list[Event] = r["events"][variant]
        switch_times = [t for t, _ in clip.switches if t > 0]
        switches += len(switch_times)
        explained: set[int] = set()
        for t in switch_times:
            hits = [i for i, e in enumerate(events) if t * 1e6 <= e.start_us <= (t + SWITCH_WINDOW_S) * 1e6]
            switch_events += bool(hits)
            explained.update(hits)
        false_events += len(events) - len(explained)
    return QuietResult(kind, seconds / 3600.0, false_events, switches, switch_events)
