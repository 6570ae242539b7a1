"""Audio suite: what the camera's sound costs the server as listeners grow.

camcast encodes a camera's Opus once and hands the packets to every peer; aiortc's own design (its
webcam example: MediaRelay of an audio track) encodes Opus once per peer. For each point (server,
audio on/off, peers) and each repeat, a fresh server, peers offering video + audio recvonly that count
packets without decoding (bench.audio_load), server CPU over a window. The audio part is the CPU with
the sound minus the CPU of the same peers without it (camcast `--audio none`; the relay answering
without a track), medians over repeats; camcast's encoder thread (`camcast-audio`) is also read alone.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.audio_load import AudioLoad, AudioPlan
from bench.machine import CAMCAST_READY, BusyMeter, camcast_spec, load_average
from bench.plots import Series, line_plot
from bench.report import Check, Figure, Section, Table
from bench.runner import RunContext, Suite
from bench.serverproc import ServerProcess, ServerSpec, WindowMeter, python_module
from bench.stats import Spread

LABELS = {"camcast": "camcast (one shared Opus encode)", "relay": "aiortc MediaRelay (Opus per peer)"}
TARGET_RATIO = 1.2
DELIVERED_PPS = 45.0  # of 50: below this at the median peer, a point's CPU is of a starved run


@dataclass(frozen=True)
class AudioSettings:
    peers: tuple[int, ...] = (1, 50)
    size: str = "320x240"  # the video beside the sound: small, so its CPU noise hides less
    fps: float = 15.0
    window: float = 10.0
    settle: float = 3.0
    ramp_per_peer: float = 0.1
    max_ramp: float = 5.0
    peers_per_worker: int = 25
    relay: bool = True
    replay: str = ""  # a raw audio.json of an earlier run: report it again instead of measuring


FULL = AudioSettings()
QUICK = AudioSettings(peers=(1, 5), window=2.0, settle=1.0)


@dataclass(frozen=True)
class Point:
    server: str  # camcast | relay
    audio: str  # tone | none
    peers: int


def points_of(s: AudioSettings) -> list[Point]:
    servers = ("camcast", "relay") if s.relay else ("camcast",)
    return [Point(server, audio, n) for server in servers for n in s.peers for audio in ("tone", "none")]


def server_spec(point: Point, s: AudioSettings, recordings: str) -> ServerSpec:
    if point.server == "camcast":
        return camcast_spec(s.size, s.fps, recordings, "--audio", point.audio, "--adapt", "off")
    argv = python_module("bench.audio_relay", "--port", "0", "--audio", point.audio)
    return ServerSpec("audio-relay", argv, CAMCAST_READY)


def thread_cpu(pid: int, name: str) -> float:
    """CPU seconds of the process's threads with this kernel name (camcast names its own)."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        for t in psutil.Process(pid).threads():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/task/{t.id}/comm").read_text().strip() == name:
                    total += t.user_time + t.system_time
    return total


def measure(ctx: RunContext, s: AudioSettings, point: Point, rep: int) -> dict[str, Any]:
    tag = f"audio-{point.server}-{point.audio}-{point.peers}p-r{rep}"
    log = ctx.raw_dir / f"{tag}.log"
    with tempfile.TemporaryDirectory(prefix="camcast-bench-") as tmp, \
            ServerProcess(server_spec(point, s, tmp), log) as server:
        time.sleep(0.5)
        plan = AudioPlan(server.url("/"), point.peers, min(s.max_ramp, s.ramp_per_peer * point.peers),
                         s.settle, s.window, s.peers_per_worker)
        load = AudioLoad(plan)
        start = load.start()
        meter, busy = WindowMeter(server), BusyMeter()
        time.sleep(max(0.0, start + plan.t_window - time.time()))
        meter.begin()
        busy.begin()
        enc0 = thread_cpu(server.pid, "camcast-audio")
        time.sleep(max(0.0, start + plan.t_end - time.time()))
        enc1 = thread_cpu(server.pid, "camcast-audio")
        window = meter.end()
        machine = busy.end()
        results = load.results()
        if not server.alive():
            raise RuntimeError(f"{tag}: the server died; see {log}")
    peers = [p for r in results for p in r["peers"]]
    load_cores = sum(r["cpu_seconds"] for r in results) / window.seconds
    return {
        "point": asdict(point), "rep": rep, "cores": window.cores,
        "encoder_cores": (enc1 - enc0) / window.seconds,
        "audio_pps_min": min(p["audio_pps"] for p in peers),
        "audio_pps_median": sorted(p["audio_pps"] for p in peers)[len(peers) // 2],
        "video_fps_min": min(p["video_fps"] for p in peers),
        "audio_answered": sum(1 for p in peers if p["audio_answered"]),
        "errors": [p["error"] for p in peers if p["error"]],
        "load_cores": load_cores, "machine_cores": machine,
        "other_cores": max(0.0, machine - window.cores - load_cores),
        "loadavg_1m": psutil.getloadavg()[0], "rss_mb": window.rss_end / 2**20,
    }


def _spread(runs: list[dict[str, Any]], key: str) -> Spread:
    return Spread.of([r[key] for r in runs])


def run(ctx: RunContext) -> Section:
    s = ctx.settings("audio", FULL, QUICK)
    load_start = load_average()
    by_point: dict[Point, list[dict[str, Any]]] = {p: [] for p in points_of(s)}
    if s.replay:
        for r in json.loads(Path(s.replay).read_text()):
            by_point.setdefault(Point(**r["point"]), []).append(r)
    else:
        for rep, point in ctx.schedule(list(by_point)):
            ctx.log(f"audio: {point.server} audio={point.audio} {point.peers} peers, repeat {rep + 1}")
            by_point[point].append(measure(ctx, s, point, rep))
    ctx.save_raw("audio.json", [r for runs in by_point.values() for r in runs])
    load_end = load_average()

    rows = []
    for point, runs in by_point.items():
        rows.append([LABELS[point.server], point.audio, str(point.peers), _spread(runs, "cores").fmt(3),
                     _spread(runs, "encoder_cores").fmt(4) if point.server == "camcast" else "-",
                     f"{_spread(runs, 'audio_pps_min').fmt(1)} / {_spread(runs, 'audio_pps_median').fmt(1)}",
                     _spread(runs, "video_fps_min").fmt(1),
                     f"{min(r['audio_answered'] for r in runs)}/{point.peers}",
                     _spread(runs, "load_cores").fmt(2), _spread(runs, "other_cores").fmt(2),
                     _spread(runs, "machine_cores").fmt(2),
                     _spread(runs, "loadavg_1m").fmt(2)])
    table = Table("Server CPU per point", [
        "server", "audio", "peers", "server cores", "encoder thread cores",
        "audio packets/s (slowest / median peer)", "video fps (slowest peer)", "peers sent audio",
        "load-gen cores", "other processes' cores", "machine busy cores",
        "load average (1 min)"], rows,
        "Each cell: median over repeats (min-max). Encoder thread: camcast's `camcast-audio` thread alone. "
        f"Video beside the sound: camcast's test pattern at {s.size} @ {s.fps:g} fps, one H.264 encode "
        "(`--adapt off`); the relay serves no video (its video m-line answered inactive).")

    def audio_part(server: str, n: int) -> tuple[float, Spread]:
        tone, none = by_point.get(Point(server, "tone", n)), by_point.get(Point(server, "none", n))
        if not tone or not none:
            return float("nan"), Spread.of([])
        paired = [a["cores"] - b["cores"] for a, b in zip(tone, none, strict=False)]  # same round
        return _spread(tone, "cores").median - _spread(none, "cores").median, Spread.of(paired)

    lo, hi = min(s.peers), max(s.peers)
    part_rows, checks, series = [], [], []
    colors = {"camcast": "tab:blue", "relay": "tab:red"}
    for server in ("camcast", "relay") if s.relay else ("camcast",):
        parts = {n: audio_part(server, n) for n in s.peers}
        a_lo, a_hi = parts[lo][0], parts[hi][0]
        ratio = a_hi / a_lo if a_lo > 0 else float("nan")
        enc = ""
        if server == "camcast":
            e_lo = _spread(by_point[Point(server, "tone", lo)], "encoder_cores").median
            e_hi = _spread(by_point[Point(server, "tone", hi)], "encoder_cores").median
            enc = f"{e_lo:.4f} -> {e_hi:.4f} ({e_hi / e_lo:.2f}x)" if e_lo > 0 else "-"
        for n in s.peers:
            part_rows.append([LABELS[server], str(n), f"{parts[n][0]:.3f}", parts[n][1].fmt(3),
                              f"{parts[n][0] * 1000 / n:.1f}"])
        part_rows.append([LABELS[server], f"{hi} vs {lo}", f"{ratio:.2f}x", "",
                          enc and f"encoder thread {enc}"])
        series.append(Series(LABELS[server], list(s.peers), [parts[n][0] for n in s.peers],
                             color=colors[server]))
        got = _spread(by_point[Point(server, "tone", hi)], "audio_pps_median").median
        starved = "" if got >= DELIVERED_PPS else (
            f"; not measured: the median peer got {got:.1f} of 50 packets/s (server or clients short of CPU)")
        if server == "camcast":
            checks.append(Check(f"camcast audio CPU, {hi} vs {lo} peer(s)", f"<= {TARGET_RATIO}x",
                                f"{a_lo:.3f} -> {a_hi:.3f} cores ({ratio:.2f}x); "
                                f"encoder thread {enc}{starved}",
                                None if starved else ratio <= TARGET_RATIO))
        else:
            cam_hi = audio_part("camcast", hi)[0]
            cam_got = _spread(by_point[Point("camcast", "tone", hi)], "audio_pps_median").median
            fair = cam_got >= DELIVERED_PPS  # a relay that cannot keep up has lost anyway
            checks.append(Check(f"audio CPU at {hi} peers vs aiortc's per-peer Opus", "lower",
                                f"camcast {cam_hi:.3f} cores ({cam_got:.1f} packets/s per median peer), "
                                f"relay {a_hi:.3f} cores ({got:.1f} packets/s)",
                                cam_hi < a_hi if fair else None))
    tone_runs = [r for p, runs in by_point.items() if p.audio == "tone" for r in runs]
    every = all(r["audio_answered"] == r["point"]["peers"] for r in tone_runs)
    pps = min((r["audio_pps_min"] for r in tone_runs), default=0.0)
    checks.append(Check("every listener gets the sound", "all peers sent audio, ~50 packets/s",
                        f"slowest peer of any repeat {pps:.1f} packets/s", every and pps >= DELIVERED_PPS))
    part_table = Table("The audio part: cores with the sound minus cores without it", [
        "server", "peers", "audio cores (median tone - median none)", "per-round pairs (median, min-max)",
        "audio ms of CPU per peer-second"], part_rows,
        "Pairs: each repeat's tone run minus the none run of the same round (they ran back to back).")
    out = ctx.out_dir
    line_plot(out / "audio_cpu.png", "Server CPU for the sound vs listeners", "peers",
              "audio part of server CPU (cores)", series)
    errors = [e for runs in by_point.values() for r in runs for e in r["errors"]]
    intro = (__doc__ or "").split("\n\n", 1)[1].strip()
    figure = Figure("audio_cpu.png", "Audio part of the server's CPU (with sound minus without) vs peers.")
    return Section("audio", "Audio: one shared Opus encode vs one per peer", intro, checks,
                   [table, part_table], [figure],
                   [f"Peer errors: {len(errors)}; {'; '.join(errors[:3])}",
                    f"Replayed from {s.replay}: load averages of the run are the table's." if s.replay else
                    f"Load average at the suite's start {load_start}, at its end {load_end}; "
                    f"{ctx.repeats} repeat(s), round-robin."])


SUITE = Suite("audio", "Audio", run)
