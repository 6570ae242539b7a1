"""The many-cameras section: targets, tables and plots from the runs of bench.suites.cameras."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.plots import Samples, Series, cdf_plot, line_plot
from bench.report import Check, Figure, Section, Table
from bench.runner import RunContext
from bench.stats import Spread, percentile

if TYPE_CHECKING:
    from bench.suites.cameras import CamerasSettings, Point

Runs = dict["Point", list[dict[str, Any]]]
IDLE_CORES_TARGET = 0.01
WAKE_P95_TARGET_MS = 500.0


def _of_kind(runs: Runs, kind: str) -> list[dict[str, Any]]:
    return [r for point, rs in runs.items() if point.kind == kind for r in rs]


def _spread(rs: list[dict[str, Any]], fn: Callable[[dict[str, Any]], float]) -> Spread:
    return Spread.of([fn(r) for r in rs])


def _paired(one: list[dict[str, Any]], many: list[dict[str, Any]],
            fn: Callable[[dict[str, Any], dict[str, Any]], float]) -> Spread:
    """fn over the repeats of both points taken in the same round (the round-robin pairs them)."""
    by_rep = {r["rep"]: r for r in one}
    return Spread.of([fn(by_rep[m["rep"]], m) for m in many if m["rep"] in by_rep])


def _woke(w: dict[str, Any]) -> bool:
    """A sample of a closed source: its first frame was captured after the request. (A frame from
    before it means the source was still stopping although /api/cameras said idle.)"""
    return not w["error"] and w["captured_after_request_ms"] >= 0


def _wake_ms(idle: list[dict[str, Any]]) -> list[float]:
    return [w["ms"] for r in idle for w in r["wake"] if _woke(w)]


def _stale(idle: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [w for r in idle for w in r["wake"] if not w["error"] and not _woke(w)]


def _cpu_ratio(one: list[dict[str, Any]], many: list[dict[str, Any]], n: int) -> float:
    return _spread(many, lambda r: r["cores"]).median / (n * _spread(one, lambda r: r["cores"]).median)


def _ms_per_peer_frame(r: dict[str, Any]) -> float:
    """Server CPU ms per frame received by a peer (frames per second of all peers)."""
    frames = sum(f for c in r["cameras"] for f in c["fps"])
    return r["cores"] * 1000.0 / frames if frames else math.nan


def _rss_per_camera(one: list[dict[str, Any]], many: list[dict[str, Any]], n: int, key: str) -> Spread:
    if n < 2:
        return Spread.of([])
    return _paired(one, many, lambda o, m: (m[key] - o[key]) / (n - 1))


def _checks(s: CamerasSettings, one: list[dict[str, Any]], many: list[dict[str, Any]],
            idle: list[dict[str, Any]]) -> list[Check]:
    checks: list[Check] = []
    n, p, good = s.cameras, s.peers_per_camera, s.fps - 1.0
    if many:
        fps_min = _spread(many, lambda r: r["fps_min"])
        errors = sum(len(r["errors"]) for r in many)
        failed = f"; {errors} peers failed to connect" if errors else ""
        checks.append(Check(f"fps per peer, {n} cameras x {p} peers", f"every peer >= {good:g} fps",
                            f"slowest of {n * p} peers {fps_min.fmt(1)} fps{failed}", fps_min.median >= good))
    if many and one:
        ratio = _cpu_ratio(one, many, n)
        pairs = _paired(one, many, lambda o, m: m["cores"] / (n * o["cores"]))
        per_frame = _spread(many, _ms_per_peer_frame).median / _spread(one, _ms_per_peer_frame).median
        # Less CPU for fewer frames is no saving: the ratio only counts at the full frame rate.
        full = min(_spread(rs, lambda r: r["fps_min"]).median for rs in (one, many)) >= good
        caveat = "" if full else f"; not comparable: peers got under {good:g} fps"
        checks.append(Check(f"server CPU, {n} cameras vs {n} x one camera (each {p} peers)",
                            f"<= {s.cpu_ratio_target:g}x",
                            f"{ratio:.2f}x ({_spread(many, lambda r: r['cores']).fmt(3, False)} cores vs "
                            f"{n} x {_spread(one, lambda r: r['cores']).fmt(3, False)}; per round "
                            f"{pairs.fmt(2)}; per peer-frame {per_frame:.2f}x{caveat})",
                            full and ratio <= s.cpu_ratio_target))
        loaded = _rss_per_camera(one, many, n, "rss_mb")
        bare = _rss_per_camera(one, many, n, "rss_idle_mb")
        checks.append(Check("server RSS per camera", "reported",
                            f"{loaded.fmt(1)} MB per camera with its {p} peers, {bare.fmt(1)} MB capturing "
                            f"without peers ((RSS of {n} cameras - RSS of 1) / {n - 1})",
                            True if loaded.n else None))
    if idle:
        k = idle[0]["point"]["cameras"]
        cores = _spread(idle, lambda r: r["cores"])
        checks.append(Check(f"server CPU, {k} on-demand cameras, no viewer",
                            f"< {IDLE_CORES_TARGET:g} cores",
                            f"{cores.fmt(4)} cores over {idle[0]['window_s']:.0f} s", cores.median
                            < IDLE_CORES_TARGET))
        extra = max(_python_threads(r) - 1 for r in idle)
        ran = max(r["threads_ran"] for r in idle)
        opens = max(r["source_opens"] for r in idle)
        awake = _spread(idle, lambda r: r["awake_threads_ran"])
        checks.append(Check(f"capture threads, {k} on-demand cameras, no viewer", "0",
                            f"{extra:.0f} Python threads besides the main one, {ran} other OS threads ran, "
                            f"{opens:.0f} sources opened (all {k} awake: {awake.fmt(0)} threads ran)",
                            extra == 0 and ran == 0 and opens == 0))
        wake = _wake_ms(idle)
        if wake:
            p95 = percentile(wake, 95)
            stale = len(_stale(idle))
            errors = sum(1 for r in idle for w in r["wake"] if w["error"])
            checks.append(Check("idle camera: MJPEG request to first frame",
                                f"p95 <= {WAKE_P95_TARGET_MS:g} ms",
                                f"p50 {percentile(wake, 50):.0f} ms, p95 {p95:.0f} ms, "
                                f"max {max(wake):.0f} ms "
                                f"(n={len(wake)} wakes; besides, {stale} requests met a source still "
                                f"stopping; errors: {errors})", p95 <= WAKE_P95_TARGET_MS and errors == 0))
    return checks


def _python_threads(r: dict[str, Any]) -> float:
    return max(x for x in r["python_threads"] if x is not None)


def _webrtc_table(s: CamerasSettings, one: list[dict[str, Any]], many: list[dict[str, Any]]) -> Table:
    rows = []
    for rs in (one, many):
        if not rs:
            continue
        n = rs[0]["point"]["cameras"]
        encoders = _spread(rs, lambda r: sum(x or 0 for x in r["encoders_running"]))

        def cell(key: str, digits: int, rs: list[dict[str, Any]] = rs) -> str:
            return _spread(rs, lambda r: r[key]).fmt(digits)

        rows.append([str(n), str(rs[0]["peers"]), cell("cores", 3),
                     _spread(rs, lambda r, n=n: r["cores"] / n).fmt(3),
                     _spread(rs, _ms_per_peer_frame).fmt(3),
                     _spread(rs, lambda r: r.get("loop_cores", math.nan)).fmt(3), cell("fps_min", 1),
                     cell("fps_median", 1), cell("latency_p50_ms", 1), cell("latency_p99_ms", 1),
                     encoders.fmt(0), cell("rss_idle_mb", 0), cell("rss_mb", 0), cell("load_cores", 2),
                     cell("other_cores", 2)])
    return Table(f"One camera against {s.cameras} ({s.size} @ {s.fps:g} fps, {s.peers_per_camera} WebRTC "
                 "peers per camera)",
                 ["cameras", "peers", "server cores", "cores per camera", "CPU ms per peer-frame",
                  "event loop thread cores",
                  "fps/peer min", "fps/peer median",
                  "latency p50 ms", "latency p99 ms", "video encoders running", "RSS before peers MB",
                  "RSS at window end MB", "load-gen cores", "other processes' cores"], rows,
                 "Each cell: median over repeats (min-max). fps/peer min: the slowest peer of a repeat. "
                 "Latency: capture (stamp) to decoded frame at each camera's decoding peer (p50: median of "
                 "the cameras', p99: the worst camera's). Encoders: the sum of the cameras' "
                 "`running_encoders` (/api/status) as the window starts. Event loop thread: the server's "
                 "main thread alone (signalling, RTP packetizing and SRTP of every peer run there; capture "
                 "and encoding in other threads).")


def _per_camera_table(s: CamerasSettings, many: list[dict[str, Any]]) -> Table:
    rows = []
    for i, name in enumerate(c["name"] for c in many[0]["cameras"]):
        def cam(fn: Callable[[dict[str, Any]], float], i: int = i) -> Spread:
            return _spread(many, lambda r: fn(r["cameras"][i]))
        rows.append([name, cam(lambda c: min(c["fps"])).fmt(1),
                     cam(lambda c: percentile(c["fps"], 50)).fmt(1),
                     cam(lambda c: c["max_gap_ms"]).fmt(0), cam(lambda c: c["latency_p50_ms"]).fmt(1),
                     cam(lambda c: c["latency_p99_ms"]).fmt(1)])
    return Table(f"Every camera of the {s.cameras}-camera point",
                 ["camera", "slowest peer fps", "median peer fps", "longest gap ms", "latency p50 ms",
                  "latency p99 ms"], rows,
                 f"Each camera's {s.peers_per_camera} peers; median over repeats (min-max).")


def _memory_table(s: CamerasSettings, one: list[dict[str, Any]], many: list[dict[str, Any]]) -> Table:
    n = s.cameras
    rows = []
    for label, key in (("capturing, no peer (after start)", "rss_idle_mb"),
                       (f"{s.peers_per_camera} peers per camera (window end)", "rss_mb")):
        rows.append([label, _spread(one, lambda r, key=key: r[key]).fmt(0),
                     _spread(many, lambda r, key=key: r[key]).fmt(0),
                     _rss_per_camera(one, many, n, key).fmt(1)])
    return Table("Server memory (RSS) per camera", ["state", "RSS, 1 camera MB", f"RSS, {n} cameras MB",
                                                     "MB per added camera"], rows,
                 f"MB per added camera: (RSS with {n} cameras - RSS with 1) / {n - 1}, per round of repeats, "
                 "so the interpreter and libraries every server loads once are left out; RSS of the whole "
                 "server process.")


def _idle_table(idle: list[dict[str, Any]]) -> Table:
    k = idle[0]["point"]["cameras"]
    w = idle[0]["window_s"]
    sp = _spread
    rows = [
        [f"none, {w:.0f} s window", sp(idle, lambda r: r["cores"]).fmt(4),
         sp(idle, lambda r: r["cpu_s"] * 1000).fmt(0), sp(idle, _python_threads).fmt(0),
         sp(idle, lambda r: r["os_threads"]).fmt(0), sp(idle, lambda r: r["threads_ran"]).fmt(0),
         sp(idle, lambda r: r["source_opens"]).fmt(0), sp(idle, lambda r: r["idle_cameras"]).fmt(0),
         sp(idle, lambda r: r["rss_mb"]).fmt(0)],
        [f"one MJPEG reader on each of the {k} (control)", sp(idle, lambda r: r["awake_cores"]).fmt(3), "-",
         sp(idle, lambda r: r["awake_python_threads"]).fmt(0),
         sp(idle, lambda r: r["awake_os_threads"]).fmt(0),
         sp(idle, lambda r: r["awake_threads_ran"]).fmt(0), "-", "0", "-"],
    ]
    return Table(f"{k} on-demand cameras", ["viewers", "server cores", "CPU ms in window", "Python threads",
                                           "OS threads", "threads that ran (event loop aside)",
                                           "sources opened", "cameras idle", "RSS MB"], rows,
                 "Python threads: the server's camcast_threads (threading.active_count(), the main thread "
                 "included; every capture and no-signal thread is one). Threads that ran: OS threads of "
                 "the server, the event loop's aside, whose CPU time grew during the window (a capture "
                 "thread at the frame rate always does). Sources opened: camcast_source_opens over the "
                 "window. The control row holds every camera awake with one MJPEG reader to show what the "
                 "same census counts when capture runs.")


def _wake_table(idle: list[dict[str, Any]]) -> Table:
    rows = []
    for r in idle:
        woke = [w for w in r["wake"] if _woke(w)]
        ms = [w["ms"] for w in woke]
        stale = _stale([r])
        rows.append([str(r["rep"] + 1), str(len(ms)), f"{percentile(ms, 50):.0f}",
                     f"{percentile(ms, 95):.0f}", f"{max(ms, default=math.nan):.0f}",
                     f"{percentile([w['captured_after_request_ms'] for w in woke], 50):.0f}",
                     f"{percentile([w['waited_idle_ms'] for w in woke], 50):.0f}",
                     _stale_text(stale), str(sum(1 for w in r["wake"] if w["error"])),
                     f"{r['wake_machine_cores']:.2f}"])
    pooled = _wake_ms(idle)
    rows.append(["all", str(len(pooled)), f"{percentile(pooled, 50):.0f}", f"{percentile(pooled, 95):.0f}",
                 f"{max(pooled, default=math.nan):.0f}", "", "", _stale_text(_stale(idle)), "", ""])
    return Table("Idle camera: MJPEG request to first frame",
                 ["repeat", "wakes", "p50 ms", "p95 ms", "max ms", "capture after request p50 ms",
                  "waited for idle p50 ms", "source still stopping", "errors", "machine busy cores"], rows,
                 "Each camera woken in turn, once /api/cameras says it is idle again: from before the "
                 "connect to the last byte of the first part. Capture after request: the first frame's "
                 "stamp minus the request time. Waited for idle: from the previous sample until this "
                 "camera read idle. Source still stopping: requests whose first frame was captured before "
                 "the request although the camera read idle (its capture thread not yet joined): not "
                 "counted as wakes; how many, the time to that frame and how old it was.")


def _stale_text(stale: list[dict[str, Any]]) -> str:
    if not stale:
        return "0"
    ms = [w["ms"] for w in stale]
    age = [-w["captured_after_request_ms"] for w in stale]
    return f"{len(stale)} (first frame in {percentile(ms, 50):.0f} ms, {percentile(age, 50):.0f} ms old)"


def _figures(ctx: RunContext, s: CamerasSettings, one: list[dict[str, Any]], many: list[dict[str, Any]],
             idle: list[dict[str, Any]]) -> list[Figure]:
    out, figures = ctx.out_dir, []
    if one and many:
        n = s.cameras
        xs = [1, n]
        c1, cn = _spread(one, lambda r: r["cores"]), _spread(many, lambda r: r["cores"])
        line_plot(out / "cameras_cpu.png",
                  f"Server CPU: 1 and {n} cameras, {s.peers_per_camera} peers each", "cameras",
                  "server CPU (cores)",
                  [Series(f"camcast (slowest peer at {n} cameras: "
                          f"{_spread(many, lambda r: r['fps_min']).median:.0f} fps)", xs,
                          [c1.median, cn.median], [c1.low, cn.low], [c1.high, cn.high], "tab:blue"),
                   Series("n x one camera (no cross-camera cost)", xs, [c1.median, n * c1.median],
                          color="tab:grey"),
                   Series(f"target: {s.cpu_ratio_target:g} x n x one camera", xs,
                          [s.cpu_ratio_target * c1.median, s.cpu_ratio_target * n * c1.median],
                          color="tab:red")],
                  hlines=[(2.0, "the machine's 2 cores")])
        figures.append(Figure("cameras_cpu.png", f"Server CPU (cores) with one camera and with {n}, each "
                              f"with {s.peers_per_camera} WebRTC peers, against n times the one camera's; "
                              "median, bars: min-max over repeats."))
        per_cam = []
        for i in range(n):
            sp = _spread(many, lambda r, i=i: min(r["cameras"][i]["fps"]))
            per_cam.append(sp)
        one_fps = _spread(one, lambda r: r["fps_min"])
        line_plot(out / "cameras_fps.png", "Slowest peer's fps per camera", "camera", "fps (slowest peer)",
                  [Series(f"{n} cameras", list(range(1, n + 1)), [x.median for x in per_cam],
                          [x.low for x in per_cam], [x.high for x in per_cam], "tab:blue"),
                   Series("1 camera", [1], [one_fps.median], [one_fps.low], [one_fps.high], "tab:grey")],
                  hlines=[(s.fps - 1.0, f"{s.fps - 1.0:g} fps")])
        figures.append(Figure("cameras_fps.png", f"Received fps of each camera's slowest peer ({n} cameras x "
                              f"{s.peers_per_camera} peers), and of the one-camera point's."))
    wake = _wake_ms(idle)
    if wake:
        cdf_plot(out / "cameras_wake_cdf.png", "Idle on-demand camera: MJPEG request to first frame",
                 "request to first frame (ms)", [Samples(f"{idle[0]['point']['cameras']} on-demand cameras, "
                                                         "each woken in turn", wake, "tab:blue")],
                 vlines=[(WAKE_P95_TARGET_MS, f"{WAKE_P95_TARGET_MS:g} ms")],
                 xmax=max(WAKE_P95_TARGET_MS * 1.2, percentile(wake, 100) * 1.05))
        figures.append(Figure("cameras_wake_cdf.png", "Time from an MJPEG request on an idle camera to its "
                              "first frame, all samples of all repeats."))
    return figures


def build_section(ctx: RunContext, s: CamerasSettings, runs: Runs, loads: tuple[str, str]) -> Section:
    one, many, idle = _of_kind(runs, "one"), _of_kind(runs, "many"), _of_kind(runs, "idle")
    webrtc = one + many
    repeats = max((len(rs) for rs in runs.values()), default=0)
    section = Section("cameras", f"Many cameras ({s.size} @ {s.fps:g} fps test patterns)")
    section.intro = (
        f"One server with {s.cameras} test-pattern cameras and {s.peers_per_camera} WebRTC peers on each "
        f"(`/cameras/<name>/offer`, aiortc, H.264, loopback), against one camera with {s.peers_per_camera} "
        f"peers: is the {s.cameras}-camera server's CPU {s.cameras} times the one camera's or more? Then "
        f"{s.on_demand_cameras} on-demand cameras (`on_demand = true`, `idle_timeout = {s.idle_timeout:g}`) "
        f"with nobody watching: CPU and threads over a {s.idle_window:g} s window, then each camera woken by "
        "an MJPEG request. Every point runs on a fresh server started from a generated `--config` file; "
        f"{repeats} repeats, round-robin over the points.")
    section.checks = _checks(s, one, many, idle)
    if one and many:
        section.tables += [_webrtc_table(s, one, many), _per_camera_table(s, many),
                           _memory_table(s, one, many)]
    if idle:
        section.tables += [_idle_table(idle), _wake_table(idle)]
    section.figures = _figures(ctx, s, one, many, idle)
    errors = sum(len(r["errors"]) for r in webrtc)
    lost = sum(c["lost_packets"] for r in webrtc for c in r["cameras"])
    bad = sum(c.get("bad_stamps", 0) for r in webrtc for c in r["cameras"])
    reruns = sum(len(r["disturbed_attempts"]) for r in webrtc)
    still = sum(1 for r in webrtc if r["disturbed"])
    ramp = s.ramp_per_peer * s.peers_per_camera
    section.notes = [
        f"WebRTC load: bench.webrtc_load once per camera, at that camera's URL: one peer that decodes every "
        f"frame and reads its stamp, {s.peers_per_camera - 1} that count frames (see the WebRTC section). "
        f"Camera i's peers start {ramp:g} s after camera i-1's ({s.ramp_per_peer:g} s between peers), and "
        f"the server is measured over one {s.window:g} s window after a {s.settle:g} s settle, where every "
        f"camera's peers are on. fps/peer = frames / seconds over the peer's own window, {s.start_slack:g} s "
        "longer (room for cameras whose client processes were ready late).",
        "Server cores = the server process's CPU seconds (user + system) over the window / window seconds. "
        f"The CPU target compares the {s.cameras}-camera server with {s.cameras} times the one-camera server "
        "of the same run (ratio of the medians; per round: each repeat against the one-camera repeat of "
        "its round). The one-camera server's fixed cost (event loop, HTTP) counts in the reference.",
        "Idle window: no request of any kind reaches the server during it (the states and metrics are read "
        "before and after). Capture threads: a capture and a no-signal thread run per camera whose source "
        "is open, both Python threads; with none of them the server has only its main Python thread.",
        f"A WebRTC repeat that the rest of this shared machine disturbed (other processes above "
        f"{s.max_other_cores:g} cores, or the whole machine above {s.max_machine_cores:g} of its 2 cores "
        f"while others used more than 0.3), or whose cameras' peers started so far apart that the common "
        f"window was under 90 % of {s.window:g} s, was run again, up to {s.retries} times: {reruns} reruns; "
        f"still disturbed: {still}. Load average at the start of this suite {loads[0]}, at its end "
        f"{loads[1]}.",
        *([f"At {s.cameras} cameras the whole machine was "
           f"{_spread(many, lambda r: r['machine_cores']).fmt(2)} of its 2 cores busy: server "
           f"{_spread(many, lambda r: r['cores']).fmt(2)}, load generator "
           f"{_spread(many, lambda r: r['load_cores']).fmt(2)}, other processes "
           f"{_spread(many, lambda r: r['other_cores']).fmt(2)}."] if many else []),
        f"Peer errors: {errors}; packets missing at the peers: {lost}; unreadable stamps (left out of the "
        f"latencies): {bad}.",
    ]
    return section
