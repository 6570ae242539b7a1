"""WHIP suite: camcast publishing one camera to Janus, against one local WebRTC peer.

Runs on the tests' Janus bed (tests/support/janus.py: Janus 1.1.2 and simple-whip-server in a
network namespace whose veth carries 127.0.0.2; needs root). Points, round-robin over repeats,
each on a fresh camcast (640x480 @ 30 fps stamped test pattern) inside the namespace:

- whip: camcast with --publish to Janus; N subscribers on Janus through its HTTP API (most count
  frames on the marker bit without decoding, a few decode and read stamps): camcast's CPU, Janus's,
  every subscriber's fps, capture-to-decode latency through Janus.
- local: the same camcast without --publish and one local WebRTC peer (decoding, stamps read):
  camcast's CPU idle and with the peer, the peer's fps and latency.

Then restarts: one camcast publishing; Janus is killed (SIGKILL) and started again, R times; a
viewer process subscribes again and again from the kill until a picture captured after the kill
decodes: kill to playing again.
"""

from __future__ import annotations

import signal
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import psutil

from bench.machine import BusyMeter, load_average
from bench.plots import Samples, cdf_plot
from bench.report import Check, Figure, Section, Table
from bench.runner import RunContext, Suite
from bench.serverproc import ServerProcess, WindowMeter
from bench.stats import Spread, percentile
from bench.webrtc_load import usage_of
from bench.whip_bed import camcast_in, publish_state, result_of, support_janus, viewers, wait_publishing

POINTS = ("whip", "local")
TITLE = "WHIP: publishing to Janus"


@dataclass(frozen=True)
class WhipSettings:
    size: str = "640x480"
    fps: int = 30
    subscribers: int = 20  # on Janus
    decoders: int = 3  # of which decode and read stamps
    per_process: int = 6  # counting subscribers per viewer process
    lead: float = 3.0  # s for the viewer processes to import before the start
    ramp: float = 2.0
    settle: float = 5.0  # s after the start before the window (joins, first keyframe)
    window: float = 15.0
    idle_window: float = 3.0
    restarts: int = 10
    restart_timeout: float = 30.0
    restart_pause: float = 1.0
    fps_target: float = 29.0
    restart_target_s: float = 10.0


FULL = WhipSettings()
QUICK = WhipSettings(subscribers=3, decoders=1, lead=2.5, ramp=0.5, settle=2.5, window=3.0, idle_window=1.0,
                     restarts=1, restart_pause=0.2)


def _window_args(s: WhipSettings, start: float) -> list[str]:
    return ["--start", f"{start:.3f}", "--ramp", str(s.ramp), "--settle", str(s.settle),
            "--window", str(s.window)]


def measure(ctx: RunContext, s: WhipSettings, bed: Any, url: str, point: str, rep: int) -> dict[str, Any]:
    tag = f"whip-{point}-r{rep}"
    extra = ("--publish", url) if point == "whip" else ()
    out: dict[str, Any] = {"point": point, "rep": rep}
    with tempfile.TemporaryDirectory(prefix="camcast-bench-") as tmp, \
            ServerProcess(camcast_in(bed.side.namespace, s.size, s.fps, tmp, *extra),
                          ctx.raw_dir / f"{tag}.log") as server:
        if point == "whip":
            out["publishing_after_s"] = wait_publishing(bed, server, 20)
        else:
            meter = WindowMeter(server)
            meter.begin()
            time.sleep(s.idle_window)
            out["idle_cores"] = meter.end().cores
        start = time.time() + s.lead
        args = _window_args(s, start)
        procs = []
        if point == "whip":
            counting = s.subscribers - s.decoders
            for k in range(0, counting, s.per_process):
                n = min(s.per_process, counting - k)
                procs.append((f"count{k}", viewers(bed, "count", "--n", str(n), *args)))
            # One decoder per process, as the direct peer has: a process of several decoders falls
            # behind on a busy machine and its queue would count as latency through Janus.
            procs += [(f"decode{k}", viewers(bed, "decode", "--n", "1", *args)) for k in range(s.decoders)]
        else:
            procs.append(("direct", viewers(bed, "direct", "--n", "1", "--url", server.url("/"), *args)))
        time.sleep(max(0.0, start + s.settle - time.time()))
        janus_pid = bed.janus.pid
        ours = [p.pid for _, p in procs]
        janus0, ours0 = usage_of([janus_pid]), usage_of(ours)
        meter, busy = WindowMeter(server), BusyMeter()
        sent0 = publish_state(bed, server).get("frames_sent", 0) if point == "whip" else 0
        meter.begin()
        busy.begin()
        time.sleep(s.window)
        window = meter.end()
        machine = busy.end()
        if point == "whip":  # what camcast sent Janus over the window
            out["publisher_fps"] = (publish_state(bed, server).get("frames_sent", 0) - sent0) / window.seconds
        out.update(cores=window.cores, window_s=window.seconds, rss_mb=window.rss_end / 2**20,
                   janus_cores=(usage_of([janus_pid]) - janus0) / window.seconds,
                   viewers_cores=(usage_of(ours) - ours0) / window.seconds, machine_cores=machine,
                   top_others=busy.top_others({server.pid, janus_pid, *ours}), load_average=load_average())
        if point == "whip":
            out["publisher"] = publish_state(bed, server)
        out["viewers"] = {role: result_of(p, s.ramp + s.window + 30, ctx.raw_dir / f"{tag}-{role}.stderr")
                          for role, p in procs}
        if not server.alive():
            raise RuntimeError(f"{tag}: camcast died; see its log")
    return out


def restarts(ctx: RunContext, s: WhipSettings, bed: Any, url: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="camcast-bench-") as tmp, \
            ServerProcess(camcast_in(bed.side.namespace, s.size, s.fps, tmp, "--publish", url),
                          ctx.raw_dir / "whip-restarts.log") as server:
        wait_publishing(bed, server, 20)
        for i in range(s.restarts):
            sessions = publish_state(bed, server).get("sessions", 0)
            kill_at = time.time() + s.lead
            rejoin = viewers(bed, "rejoin", "--since", f"{kill_at:.3f}", "--timeout", str(s.restart_timeout))
            time.sleep(max(0.0, kill_at - time.time()))
            bed.janus.send_signal(signal.SIGKILL)
            bed.janus.wait()
            bed.start_janus()
            janus_up = time.time() - kill_at
            republished = None
            try:
                wait_publishing(bed, server, s.restart_timeout, sessions + 1)
                republished = time.time() - kill_at
            except RuntimeError:
                pass
            got = result_of(rejoin, s.restart_timeout + 15, ctx.raw_dir / f"whip-rejoin-{i}.stderr")
            run = {"i": i, "janus_up_s": janus_up, "publishing_again_s": republished,
                   "playing_again_s": got.get("first_frame_s"), "attempts": got.get("attempts"),
                   "errors": got.get("errors", []) + ([got["error"]] if "error" in got else []),
                   "load_average": load_average()}
            ctx.log(f"whip restart {i}: Janus up {janus_up:.1f} s, publishing again "
                    f"{republished if republished is None else round(republished, 1)} s, playing again "
                    f"{run['playing_again_s']} s")
            runs.append(run)
            time.sleep(s.restart_pause)
    return runs


# -- the section -----------------------------------------------------------------------------------
def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def _peers(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for v in run["viewers"].values() for p in v.get("peers", [])]


def _latency(runs: list[dict[str, Any]], role: str) -> list[float]:
    return [ms for r in runs for name, v in r["viewers"].items() if name.startswith(role)
            for ms in v.get("latency_ms", [])]


def build_section(s: WhipSettings, runs: list[dict[str, Any]], restart_runs: list[dict[str, Any]],
                  ctx: RunContext, loads: tuple[str, str]) -> Section:
    by = {p: [r for r in runs if r["point"] == p] for p in POINTS}
    whip_cores = Spread.of([r["cores"] for r in by["whip"]])
    local_cores = Spread.of([r["cores"] for r in by["local"]])
    idle = Spread.of([r["idle_cores"] for r in by["local"]])
    peer_cost = local_cores.median - idle.median
    publish_cost = whip_cores.median - idle.median
    janus_peers = [p for r in by["whip"] for p in _peers(r)]
    fps = [p["fps"] for p in janus_peers]
    subscriber_errors = [e for r in by["whip"] for v in r["viewers"].values()
                         for e in v.get("errors", []) + ([v["error"]] if "error" in v else [])]
    lat_janus, lat_direct = _latency(by["whip"], "decode"), _latency(by["local"], "direct")
    played = [r["playing_again_s"] for r in restart_runs if r["playing_again_s"] is not None]
    failed = len(restart_runs) - len(played)
    p95 = percentile(played, 95) if not failed else float("inf")

    section = Section("whip", TITLE, intro=(
        f"One camera ({s.size} @ {s.fps} fps, stamped test pattern) published by camcast over WHIP to "
        f"Janus 1.1.2 (Debian) behind simple-whip-server, in the tests' network namespace (veth "
        f"127.0.0.2). `whip`: {s.subscribers} aiortc subscribers on Janus via its HTTP API "
        f"({s.decoders} decode and read stamps, the rest count frames on the marker bit); `local`: the "
        f"same camcast without publishing and one local WebRTC peer (decodes, reads stamps). Every point "
        f"on a fresh camcast, {ctx.repeats} repeat(s) round-robin, {s.window:g} s windows; medians "
        f"(min-max). Then Janus is killed and started again {s.restarts} times on one camcast."))
    section.checks = [
        Check("camcast CPU with the publisher", "rise <= the cost of one local WebRTC peer",
              f"publisher {publish_cost:+.3f} cores vs one local peer {peer_cost:+.3f} cores (over idle "
              f"{idle.median:.3f})", whip_cores.median <= local_cores.median if by["local"] else None),
        Check(f"subscribers' fps through Janus ({len(fps)} subscriber-runs)", f">= {s.fps_target:g}",
              f"min {_f(min(fps, default=float('nan')))}, median {_f(percentile(fps, 50))}",
              bool(fps) and min(fps) >= s.fps_target and not subscriber_errors),
        Check(f"Janus restarts ({len(restart_runs)}): kill to playing again",
              f"p95 <= {s.restart_target_s:g} s",
              f"p50 {_f(percentile(played, 50))} s, p95 {_f(p95)} s, never played {failed}",
              (p95 <= s.restart_target_s) if restart_runs else None),
    ]
    rows = []
    for point in POINTS:
        rs = by[point]
        if not rs:
            continue
        pf = [p["fps"] for r in rs for p in _peers(r)]
        lat = lat_janus if point == "whip" else lat_direct
        rows.append([point, Spread.of([r["cores"] for r in rs]).fmt(3),
                     Spread.of([r.get("idle_cores", float("nan")) for r in rs]).fmt(3),
                     Spread.of([r["janus_cores"] for r in rs]).fmt(3) if point == "whip" else "-",
                     Spread.of([r["viewers_cores"] for r in rs]).fmt(2),
                     Spread.of([r.get("publisher_fps", float("nan")) for r in rs]).fmt(1),
                     str(sum(p.get("lost_packets", 0) for r in rs for p in _peers(r))),
                     str(len(pf)), _f(min(pf, default=float("nan"))), _f(percentile(pf, 50)),
                     _f(percentile(lat, 50), 0), _f(percentile(lat, 95), 0), str(len(lat)),
                     Spread.of([r["machine_cores"] for r in rs]).fmt(2),
                     "; ".join(r["load_average"] for r in rs)])
    section.tables.append(Table("camcast publishing to Janus against one local peer", [
        "point", "camcast cores", "camcast idle cores", "Janus cores", "viewer processes' cores",
        "camcast sent to Janus fps", "packets lost (counting subscribers)", "viewers",
        "fps min", "fps median", "latency p50 ms", "latency p95 ms", "frames with stamps",
        "machine busy cores", "load average (1, 5, 15 min) per repeat"], rows,
        note=("camcast cores: its process over the window. whip: 1 publisher, no local peer; local: 1 "
              "local peer. Viewers' fps: frames complete within the window (a counting subscriber counts a "
              "frame only when all of its packets came). Latency: capture (stamp) to decoded in the "
              "viewer, same clock; both paths "
              "decode with the marker-aware jitter buffer.")))
    section.tables.append(Table("Per repeat (the machine's load moved a lot)", [
        "repeat", "point", "load average (1 min)", "camcast cores", "camcast sent fps", "viewers' fps min",
        "viewers' fps median", "latency p50 ms", "latency p95 ms"],
        [[str(r["rep"] + 1), r["point"], r["load_average"].split(",")[0], f"{r['cores']:.3f}",
          _f(r.get("publisher_fps")), _f(min((p["fps"] for p in _peers(r)), default=None)),
          _f(percentile([p["fps"] for p in _peers(r)], 50)),
          _f(percentile(_latency([r], "decode" if r["point"] == "whip" else "direct"), 50), 0),
          _f(percentile(_latency([r], "decode" if r["point"] == "whip" else "direct"), 95), 0)]
         for r in sorted(runs, key=lambda r: (r["rep"], r["point"] != "whip"))]))
    if restart_runs:
        section.tables.append(Table("Janus killed and started again", [
            "run", "Janus answering s", "camcast publishing again s", "subscriber playing again s",
            "subscribe attempts", "load average"],
            [[str(r["i"]), _f(r["janus_up_s"]), _f(r["publishing_again_s"]), _f(r["playing_again_s"]),
              str(r["attempts"]), r["load_average"]] for r in restart_runs],
            note=("Seconds from the SIGKILL. Playing again: the first decoded picture captured after the "
                  "kill, by a subscriber that joins again every 0.2 s from the kill.")))
    plot = ctx.out_dir / "whip_latency_cdf.png"
    cdf_plot(plot, "Capture to decode: through Janus vs a direct local peer", "ms",
             [Samples("through Janus", lat_janus, "tab:blue"), Samples("direct local peer", lat_direct,
                                                                       "tab:orange")])
    section.figures.append(Figure(plot.name, "Capture-to-decode latency, through Janus and direct"))
    if played:
        rplot = ctx.out_dir / "whip_restart_cdf.png"
        cdf_plot(rplot, "Janus restarts: kill to a subscriber playing again", "s",
                 [Samples("playing again", played, "tab:green"),
                  Samples("camcast publishing again",
                          [r["publishing_again_s"] for r in restart_runs if r["publishing_again_s"]],
                          "tab:grey", dotted=True)], vlines=[(s.restart_target_s, "target p95")])
        section.figures.append(Figure(rplot.name, "Janus restarts: kill to playing again"))
    section.notes = [
        f"Load average at the suite's start {loads[0]}, at its end {loads[1]}; the machine has "
        f"{psutil.cpu_count()} logical CPUs and is shared.",
        f"Subscriber errors: {len(subscriber_errors)}" + (f" ({'; '.join(subscriber_errors[:3])})"
                                                          if subscriber_errors else "") + ".",
        "camcast notices a Janus that restarted when its receiver reports stop for 5 s "
        "(SILENCE_TIMEOUT), then publishes again after a 1 s backoff; the kill-to-playing time is "
        "mostly that wait.",
    ]
    return section


def run(ctx: RunContext) -> Section:
    s = ctx.settings("whip", FULL, QUICK)
    janus = support_janus()
    problem = janus.missing()
    if problem:
        return Section("whip", TITLE, intro=f"Not run: {problem}.")
    loads_start = load_average()
    runs: list[dict[str, Any]] = []
    with janus.janus_bed(ctx.raw_dir / "whip-bed") as bed:
        url = bed.create_endpoint("bench")
        for rep, point in ctx.schedule(POINTS):
            ctx.log(f"whip {point} repeat {rep + 1}/{ctx.repeats}")
            runs.append(measure(ctx, s, bed, url, point, rep))
        ctx.save_raw("whip.json", runs)
        restart_runs = restarts(ctx, s, bed, url) if s.restarts > 0 else []
        ctx.save_raw("whip-restarts.json", restart_runs)
    return build_section(s, runs, restart_runs, ctx, (loads_start, load_average()))


SUITE = Suite("whip", TITLE, run)
