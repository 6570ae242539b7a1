"""Renditions suite: what each extra shared encode of the ladder costs, and what each peer adds.

One camera plays a generated textured, noisy, moving video (bench.network_content) with `--stamp`,
so x264 spends on it what it spends on a camera. Every point starts a fresh server, measures its
CPU over a window with nobody watching (capture only), then connects counting WebRTC peers each
pinned to one rendition (`?rendition=NAME`) and measures the server's CPU over a window again:

- high, high+medium, high+medium+low: 1, 2, 3 renditions of the ladder camera active (one peer each);
- medium-only, low-only: a camera with `--adapt off` whose only encode is the medium (low)
  rendition's size, bitrate and rate, fed the same video scaled as the ladder's encoder scales it;
- N-peers (20 and 50): N peers, half pinned high, half medium, against the high+medium point (1 + 1
  peers).

Points run round-robin over the repeats; the section compares medians.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.cameras_server import ThreadCpu
from bench.machine import CAMCAST_READY, BusyMeter, load_average, wait_for_quiet
from bench.renditions_load import RenditionLoad
from bench.renditions_report import build_section
from bench.report import Section
from bench.runner import RunContext, Suite
from bench.serverproc import ServerProcess, ServerSpec, WindowMeter, python_module
from bench.stats import percentile
from bench.suites.webrtc import SATURATED_OTHER_CORES
from bench.webrtc_load import WebrtcPlan, usage_of

_MB = 1024 * 1024
LADDER_POINTS = ("high", "high+medium", "high+medium+low", "medium-only", "low-only")
PEERS = "peers"  # in `points`: one point per count of `many_peers`, named "<N>-peers"


@dataclass(frozen=True)
class RenditionsSettings:
    size: str = "640x480"
    fps: float = 30.0
    bitrate: int = 2_000_000  # the top rendition's; the ladder derives the others from it
    content: str = "textured"  # textured | testpattern
    content_seconds: float = 10.0  # the generated file's loop
    points: tuple[str, ...] = (*LADDER_POINTS, PEERS)
    # Half pinned high, half medium. 50 is the target's; 20 is one this machine's 2 cores carry at the
    # full rate beside the 20 receivers (50 aiortc receivers take ~0.9 cores of them).
    many_peers: tuple[int, ...] = (20, 50)
    window: float = 10.0  # seconds measured with the peers on
    idle_window: float = 5.0  # seconds measured before any peer (capture only)
    settle: float = 3.0  # seconds between the last peer connecting and the window
    ramp_per_peer: float = 0.1
    max_ramp: float = 5.0
    peers_per_worker: int = 25
    per_peer_target: float = 0.005  # cores per added peer
    # A process's CPU seconds hardly change when others share the cores, as long as it keeps up; so a
    # repeat is run again (after a pause) when the server fell behind (sent some peer under its
    # rendition's rate) while other processes had more than a small share of the machine, or
    # when other processes took more than max_other_cores whatever the server did.
    max_other_cores: float = 1.5
    retries: int = 2
    retry_pause: float = 10.0  # others' bursts (test runs) last tens of seconds
    # Before every attempt, wait (up to quiet_max_wait s) until the machine, with nothing of this
    # suite running, is busy no more than quiet_cores over quiet_sample s: a window started in
    # the middle of someone's test run is likely wasted.
    quiet_cores: float = 0.8
    quiet_sample: float = 3.0
    quiet_max_wait: float = 30.0


FULL = RenditionsSettings()
QUICK = RenditionsSettings(points=("high", "high+medium", "medium-only", PEERS), many_peers=(6,), window=2.0,
                           idle_window=1.0, settle=1.0, retries=0, quiet_max_wait=0.0)


@dataclass(frozen=True)
class Camera:
    """One server's camera: what it captures and its encodes."""

    size: tuple[int, int]
    fps: float
    bitrate: int
    adapt: bool
    file: str  # "" for the test pattern

    def argv(self, recordings: str) -> tuple[str, ...]:
        width, height = self.size
        source = ["--source", self.file, "--stamp"] if self.file else ["--source", "testpattern"]
        return python_module("camcast", *source, "--host", "127.0.0.1", "--port", "0",
                             "--ice-address", "127.0.0.1", "--size", f"{width}x{height}",
                             "--fps", f"{self.fps:g}", "--bitrate", str(self.bitrate),
                             "--adapt", "on" if self.adapt else "off", "--recordings", recordings,
                             "--log-level", "warning")


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def ladder_of(s: RenditionsSettings) -> dict[str, Any]:
    """The server's own ladder for these settings (name -> Rendition), so baselines follow it."""
    from camcast.encoding.renditions import default_ladder

    width, height = _size(s.size)
    return {r.name: r for r in default_ladder(width, height, s.fps, s.bitrate)}


def cameras_of(s: RenditionsSettings) -> dict[str, Camera]:
    """The ladder camera, and one camera per lower rendition whose only encode is that rendition's."""
    ladder = ladder_of(s)
    width, height = _size(s.size)
    top = ""
    if s.content == "textured":
        from bench.network_content import textured_video

        top = str(textured_video((width, height), s.fps, s.content_seconds))
    cameras = {"ladder": Camera((width, height), s.fps, s.bitrate, True, top)}
    for name in ("medium", "low"):
        r = ladder.get(name)
        if r is None:
            continue
        size = (round(width * r.scale) & ~1, round(height * r.scale) & ~1)  # as the encoder scales
        file = ""
        if top:
            from bench.renditions_content import scaled_video

            file = str(scaled_video(Path(top), size, r.fps))
        cameras[name] = Camera(size, r.fps, r.bitrate, False, file)
    return cameras


def peers_of(point: str, s: RenditionsSettings) -> tuple[str, list[str]]:
    """(camera, the rendition each peer is pinned to) of a point."""
    if point.endswith("-peers"):
        n = int(point.removesuffix("-peers"))
        return "ladder", ["high", "medium"] * (n // 2) + ["high"] * (n % 2)
    if point.endswith("-only"):
        return point.removesuffix("-only"), ["high"]  # --adapt off: its one encode is named high
    return "ladder", point.split("+")


def all_points(s: RenditionsSettings) -> list[str]:
    """Every point the settings name, in report order."""
    peers = [f"{n}-peers" for n in sorted(s.many_peers) if n > 2] if PEERS in s.points else []
    return [*LADDER_POINTS, *peers]


def _status(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(server.url("/api/status"), timeout=5) as response:
        return json.load(response)  # type: ignore[no-any-return]


def _encoders(status: dict[str, Any]) -> dict[str, int]:
    """frames encoded so far by every running video encoder."""
    encoders = (status.get("webrtc") or {}).get("encoders") or {}
    return {name: e["frames_encoded"] for name, e in encoders.items() if e["running"]}


def _wait_capturing(server: ServerProcess, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _status(server).get("frames_captured", 0) < 10:
        if time.monotonic() > deadline:
            raise RuntimeError("the camera captured no frames")
        time.sleep(0.2)


def measure(ctx: RunContext, s: RenditionsSettings, camera: Camera, point: str, rep: int,
            attempt: int) -> dict[str, Any]:
    """One repeat of one point, with a fresh server."""
    tag = f"renditions-{point}-r{rep}-a{attempt}"
    log = ctx.raw_dir / f"{tag}.log"
    camera_name, renditions = peers_of(point, s)
    with tempfile.TemporaryDirectory(prefix="camcast-bench-") as tmp, \
            ServerProcess(ServerSpec("camcast", camera.argv(tmp), CAMCAST_READY), log) as server:
        _wait_capturing(server)
        idle_meter = WindowMeter(server)
        idle_meter.begin()
        time.sleep(s.idle_window)  # nothing but the capture: no viewer, no encoder
        idle = idle_meter.end()
        n = len(renditions)
        plan = WebrtcPlan(server.url("/"), n, "", ramp=min(s.max_ramp, s.ramp_per_peer * n), settle=s.settle,
                          window=s.window, peers_per_worker=s.peers_per_worker)
        load = RenditionLoad(plan, renditions)
        try:
            start = load.start()
            time.sleep(max(0.0, start + plan.t_window - time.time()))
            settled = _status(server)  # every peer on: the sessions and what they are sent
            settled_at = time.monotonic()
            before = _encoders(settled)
            meter, busy = WindowMeter(server), BusyMeter()
            meter.begin()
            busy.begin()
            load_cpu0 = usage_of(load.pids)
            threads0 = ThreadCpu.of(server.pid)
            # What the server sent each session, read just before the peers leave at the window's end.
            time.sleep(max(0.0, start + plan.t_end - 0.3 - time.time()))
            last = _status(server)
            sent_s = time.monotonic() - settled_at
            time.sleep(max(0.0, start + plan.t_end - time.time()))
            window = meter.end()
            machine = busy.end()
            # The event loop (main thread) sends every peer's packets: one core is its ceiling.
            loop_cores = ThreadCpu.of(server.pid).main_since(threads0) / window.seconds
            load_cores = (usage_of(load.pids) - load_cpu0) / window.seconds
            others = busy.top_others({server.pid, *load.pids})
            status = _status(server)
            results = load.results()
        finally:
            load.close()
        if not server.alive():
            raise RuntimeError(f"{tag}: the server died; see {log}")
    after = _encoders(status)
    # The rate each peer should get: its rendition's (a one-encode camera's own for its one "high").
    rates = {n: r.fps for n, r in ladder_of(s).items()} if camera.adapt else {"high": camera.fps}
    sessions = settled["webrtc"]["sessions"]
    sent0 = {p["id"]: (p["frames_sent"], str(p.get("rendition", "high"))) for p in sessions}
    sent = {p["id"]: ((p["frames_sent"] - sent0[p["id"]][0]) / sent_s, sent0[p["id"]][1])
            for p in last["webrtc"]["sessions"] if p["id"] in sent0}
    peers = [p for r in results for p in r["peers"]]
    return {
        "point": point, "camera": camera_name, "rep": rep, "attempt": attempt, "window_s": window.seconds,
        "cores": window.cores, "cpu_s": window.cpu_seconds, "loop_cores": loop_cores,
        "idle_cores": idle.cores, "idle_window_s": idle.seconds,
        "encoder_fps": {name: (after[name] - before.get(name, 0)) / window.seconds for name in after},
        "server_peers": len(sessions),
        # Frames a second the server sent each session: it did the whole work only at the full rate.
        "sent_fps": [f for f, _ in sent.values()],
        "sent_short": len(sessions) - len(sent) + sum(1 for f, r in sent.values() if f < rates[r] - 1.0),
        "server_renditions": dict(Counter(str(p.get("rendition", "high")) for p in sessions)),
        "peers": [{"rendition": p["rendition"], "rate": rates[p["rendition"]], "fps": p["frames"] / s.window,
                   "kbps": p["bytes"] * 8 / s.window / 1000, "pps": p["packets"] / s.window,
                   "max_gap_ms": p["max_gap_ms"],
                   "ttff_ms": p["ttff_ms"], "lost_packets": p["lost_packets"], "error": p["error"]}
                  for p in peers],
        "rss_mb": window.rss_end / _MB,
        "load_cores": load_cores, "machine_cores": machine,
        "other_cores": max(0.0, machine - window.cores - load_cores),
        "top_other_processes": others,
        "errors": [p["error"] for p in peers if p["error"]],
    }


def _disturbed(result: dict[str, Any], s: RenditionsSettings) -> bool:
    # Behind because of the server under test and its own peers is a result, not a disturbance.
    behind = result["sent_short"] > 0 and result["other_cores"] > SATURATED_OTHER_CORES
    return bool(behind or result["other_cores"] > s.max_other_cores)


def _run_point(ctx: RunContext, s: RenditionsSettings, camera: Camera, point: str,
               rep: int) -> dict[str, Any]:
    """Measure; run again (up to `retries` times) when the rest of the machine took too much CPU."""
    disturbed = []
    for attempt in range(s.retries + 1):
        waited = wait_for_quiet(ctx.log, s.quiet_max_wait, s.quiet_sample, s.quiet_cores)
        result = measure(ctx, s, camera, point, rep, attempt)
        result["quiet_wait_s"] = waited
        result["disturbed"] = _disturbed(result, s)
        if not result["disturbed"] or attempt == s.retries:
            result["disturbed_attempts"] = disturbed
            return result
        ctx.log(f"  disturbed: {result['sent_short']} sessions sent under their rate, machine "
                f"{result['machine_cores']:.2f} cores busy, other processes "
                f"{result['other_cores']:.2f} (busiest: {', '.join(result['top_other_processes']) or '-'}; "
                f"load average {load_average()}); again")
        disturbed.append({k: result[k] for k in ("cores", "idle_cores", "sent_short", "other_cores",
                                                 "machine_cores", "top_other_processes")})
        time.sleep(s.retry_pause)
    raise AssertionError("unreachable")


def run(ctx: RunContext) -> Section:
    s = ctx.settings("renditions", FULL, QUICK)
    unknown = set(s.points) - {*LADDER_POINTS, PEERS}
    if unknown:
        raise SystemExit(f"bench: renditions.points: unknown {', '.join(sorted(unknown))} "
                         f"(of: {', '.join(LADDER_POINTS)}, {PEERS})")
    cameras = cameras_of(s)
    points = [p for p in all_points(s) if p in s.points or p.endswith("-peers")]
    points = [p for p in points if peers_of(p, s)[0] in cameras]
    loads = [load_average()]
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    total = len(points) * ctx.repeats
    for i, (rep, point) in enumerate(ctx.schedule(points), 1):
        ctx.log(f"renditions {i}/{total}: {point} (repeat {rep + 1})")
        result = _run_point(ctx, s, cameras[peers_of(point, s)[0]], point, rep)
        fps = [p["fps"] for p in result["peers"]]
        ctx.log(f"  cores {result['cores']:.3f} (idle {result['idle_cores']:.3f}), encoders "
                f"{', '.join(f'{k} {v:.1f} fps' for k, v in result['encoder_fps'].items()) or '-'}, peer fps "
                f"min {min(fps):.1f} median {percentile(fps, 50):.1f}, load-gen {result['load_cores']:.2f} "
                f"cores, other {result['other_cores']:.2f}")
        runs[point].append(result)
    loads.append(load_average())
    raw = {"settings": asdict(s), "repeats": ctx.repeats, "load_average": loads,
           "cameras": {k: asdict(c) for k, c in cameras.items()},
           "runs": [r for rs in runs.values() for r in rs]}
    ctx.save_raw("renditions.json", raw)
    return build_section(ctx, s, cameras, runs, loads)


def rebuild(ctx: RunContext) -> Section:
    """The section again from raw/renditions.json (new tables or plots without measuring again)."""
    raw = json.loads((ctx.raw_dir / "renditions.json").read_text())
    s = RenditionsSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw["settings"].items()})
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in raw["runs"]:
        runs[r["point"]].append(r)
    cameras = {k: Camera(tuple(v.pop("size")), **v) for k, v in raw["cameras"].items()}  # type: ignore[arg-type]
    return build_section(ctx, s, cameras, runs, raw["load_average"])


SUITE = Suite("renditions", "Renditions: the cost of the ladder", run)
