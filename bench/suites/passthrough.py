"""Passthrough suite: what a camera that encodes costs camcast, passed through against transcoded.

One RTSP camera (the tests' GStreamer camera: H.264 High profile, no B-frames, a 4 s GOP at
1280x720 @ 30 fps, stamped frames) serves every RTSP point; each point starts a fresh camcast on
it, passing the camera's packets through or with `--transcode` (decode and encode again: the
baseline), and measures the server process alone (the camera's process is another):

- rtsp: N WebRTC peers pinned to the top rendition (`?rendition=high`) that count frames without
  decoding them, and a recording running: server CPU over a window that begins once every peer has
  left the start-up bridge for the camera's packets and no encoder runs. At the latency point (2
  peers), a decoding peer and a viewer of the camera itself then read the stamps of the same
  frames: what camcast adds to the camera's own capture-to-decode latency.
- joins: fresh decoding peers, one after another at random points of the GOP: POST /offer to the
  first decoded frame (and to the first frame captured after the offer), beside a viewer already
  watching; a plain relay's figure is computed from the camera's keyframe times.
- mjpeg: an HTTP MJPEG camera (another camcast's stamped test pattern) and MJPEG clients of the
  server under test: its CPU with the camera's JPEGs passed on, against decoded and encoded again.

Points run round-robin over the repeats; the section compares medians of the repeats.
(bench.passthrough_measure measures, bench.passthrough_report writes the section.)
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from bench.machine import load_average
from bench.passthrough_camera import MODES, start_rtsp_camera
from bench.passthrough_measure import measure_joins, measure_mjpeg, measure_rtsp
from bench.passthrough_report import build_section
from bench.report import Section
from bench.runner import RunContext, Suite
from bench.stats import percentile

KINDS = ("rtsp", "joins", "mjpeg")


@dataclass(frozen=True)
class PassthroughSettings:
    size: str = "1280x720"
    fps: int = 30
    gop: int = 120  # frames from one IDR to the next: 4 s
    profile: str = "high"
    camera_kbps: int = 2000  # the camera's bitrate; --transcode encodes at the same (--bitrate)
    kinds: tuple[str, ...] = KINDS
    peers: tuple[int, ...] = (2, 20)
    record: bool = True
    idle_window: float = 3.0  # seconds measured before any viewer (the camera is read all along)
    window: float = 15.0
    settle: float = 1.0  # seconds after the last connect before the server's state is checked
    ramp_per_peer: float = 0.15
    max_ramp: float = 4.0
    peers_per_worker: int = 10  # counting peers per client process (720p at 2 Mbit/s each)
    latency_peers: int = 2  # the rtsp point whose end measures latency (0: none)
    latency_window: float = 10.0
    joins: int = 24  # per repeat and mode
    join_modes: tuple[str, ...] = MODES
    join_pause: float = 0.5  # before each join: this plus a random part of up to a GOP
    join_timeout: float = 10.0
    mjpeg_clients: int = 10
    mjpeg_window: float = 15.0
    mjpeg_samples: float = 10.0  # stamp decodes per second (latency of the MJPEG clients)
    ratio_target: float = 5.0
    ttff_target_ms: float = 500.0
    added_latency_target_ms: float = 5.0
    # A repeat is run again (after a pause) when the rest of the machine took more than this many
    # cores during its window (the camera and our clients left out).
    max_other_cores: float = 0.8
    retries: int = 2
    retry_pause: float = 10.0


FULL = PassthroughSettings()
QUICK = PassthroughSettings(size="640x480", gop=30, peers=(2,), idle_window=0.5, window=2.0, settle=0.5,
                            latency_window=2.0, joins=3, join_modes=("passthrough",), join_pause=0.2,
                            mjpeg_clients=2, mjpeg_window=2.0, retries=0)


@dataclass(frozen=True)
class Point:
    kind: str  # rtsp | joins | mjpeg
    mode: str  # passthrough | transcode
    viewers: int = 0  # WebRTC peers (rtsp) or MJPEG clients (mjpeg)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.mode}" + (f"-{self.viewers}" if self.viewers else "")


def points_of(s: PassthroughSettings) -> list[Point]:
    points = []
    if "rtsp" in s.kinds:
        points += [Point("rtsp", mode, n) for n in s.peers for mode in MODES]
    if "joins" in s.kinds:
        points += [Point("joins", mode) for mode in MODES if mode in s.join_modes]
    if "mjpeg" in s.kinds:
        points += [Point("mjpeg", mode, s.mjpeg_clients) for mode in MODES]
    return points


def _measure(ctx: RunContext, s: PassthroughSettings, camera: Any, point: Point, rep: int,
             attempt: int) -> dict[str, Any]:
    if point.kind == "rtsp":
        return measure_rtsp(ctx, s, camera, point, rep, attempt)
    if point.kind == "joins":
        return measure_joins(ctx, s, camera, point, rep, attempt)
    return measure_mjpeg(ctx, s, point, rep, attempt)


def _run_point(ctx: RunContext, s: PassthroughSettings, camera: Any, point: Point,
               rep: int) -> dict[str, Any]:
    """Measure; run again (up to `retries` times) when the rest of the machine took too much CPU
    during a CPU window (the joins have none)."""
    disturbed = []
    for attempt in range(s.retries + 1):
        result = _measure(ctx, s, camera, point, rep, attempt)
        result["disturbed"] = point.kind != "joins" and result["other_cores"] > s.max_other_cores
        if not result["disturbed"] or attempt == s.retries:
            result["disturbed_attempts"] = disturbed
            return result
        ctx.log(f"  disturbed: other processes {result['other_cores']:.2f} cores (busiest: "
                f"{', '.join(result['top_other_processes']) or '-'}; load average {load_average()}); again")
        disturbed.append({k: result[k] for k in ("cores", "other_cores", "machine_cores",
                                                 "top_other_processes")})
        time.sleep(s.retry_pause)
    raise AssertionError("unreachable")


def _progress(ctx: RunContext, result: dict[str, Any]) -> None:
    kind = result["point"]["kind"]
    if kind == "joins":
        ok = [j for j in result["joins"] if not j["error"]]
        ttff = [j["ttff_ms"] for j in ok]
        ctx.log(f"  {len(ok)} joins: first frame p50 {percentile(ttff, 50):.0f} ms, p95 "
                f"{percentile(ttff, 95):.0f} ms; relay (computed) p50 "
                f"{percentile([j['relay_ms'] for j in ok if j['relay_ms'] == j['relay_ms']], 50):.0f} ms; "
                f"source reopened {result['reconnects']}; errors {len(result['errors'])}")
        return
    line = (f"  server {result['cores']:.3f} cores (idle {result['idle_cores']:.3f}), camera "
            f"{result['camera_cores']:.2f}, other {result['other_cores']:.2f}, load {result['load_average']}")
    if kind == "rtsp":
        line += (f"; sent fps min {min(result['sent_fps'], default=math.nan):.1f}, encoders "
                 f"{result['encoders_at_window']}, recorded {result['recording'].get('frames')} frames")
        added = result["latency"].get("transport_ms")
        if added:
            line += f"; latency added p50 {percentile(added, 50):.1f} ms over {len(added)} frames"
    else:
        line += (f"; clients fps min {min(result['fps'], default=math.nan):.1f}, "
                 f"encoders {result['encoders_at_end']}")
    ctx.log(line)


def run(ctx: RunContext) -> Section:
    s = ctx.settings("passthrough", FULL, QUICK)
    unknown = (set(s.kinds) - set(KINDS)) | (set(s.join_modes) - set(MODES))
    if unknown:
        raise SystemExit(f"bench: passthrough: unknown {', '.join(sorted(unknown))} "
                         f"(kinds: {', '.join(KINDS)}; join_modes: {', '.join(MODES)})")
    points = points_of(s)
    loads = [load_average()]
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    camera = None
    if any(p.kind != "mjpeg" for p in points):
        width, _, height = s.size.partition("x")
        camera = start_rtsp_camera((int(width), int(height)), s.fps, s.gop, s.profile, s.camera_kbps)
    try:
        total = len(points) * ctx.repeats
        for i, (rep, point) in enumerate(ctx.schedule(points), 1):
            ctx.log(f"passthrough {i}/{total}: {point.name} (repeat {rep + 1})")
            result = _run_point(ctx, s, camera, point, rep)
            _progress(ctx, result)
            runs[point.name].append(result)
    finally:
        if camera is not None:
            camera.close()
    loads.append(load_average())
    raw = {"settings": asdict(s), "repeats": ctx.repeats, "load_average": loads, "cpus": psutil.cpu_count(),
           "points": [asdict(p) for p in points], "runs": [r for rs in runs.values() for r in rs]}
    ctx.save_raw("passthrough.json", raw)
    return build_section(ctx, s, points, runs, loads)


def rebuild(ctx: RunContext) -> Section:
    """The section again from raw/passthrough.json (new tables or plots without measuring again)."""
    raw = json.loads((ctx.raw_dir / "passthrough.json").read_text())
    s = PassthroughSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw["settings"].items()})
    points = [Point(**p) for p in raw["points"]]
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in raw["runs"]:
        runs[Point(**r["point"]).name].append(r)
    return build_section(ctx, s, points, runs, raw["load_average"])


SUITE = Suite("passthrough", "Passthrough: cameras that already encode", run)
