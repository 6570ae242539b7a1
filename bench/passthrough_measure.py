"""One repeat of one point of the passthrough suite, each with a fresh server under test.

- rtsp: N WebRTC peers pinned to the top rendition, counting frames without decoding them, and a
  recording running; the server's CPU over a window that starts once every peer is on the camera's
  packets and no encoder runs. At the latency point a decoding peer and a viewer of the camera
  itself then read the stamps of the same frames.
- joins: fresh decoding peers one after another at random points of the camera's GOP, beside a
  viewer already watching, and a viewer of the camera itself for the camera's keyframe times.
- mjpeg: an upstream camcast serving MJPEG as the camera, MJPEG clients of the server under test.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from bench.machine import BusyMeter, load_average
from bench.mjpeg_load import LoadPlan, LoadRun
from bench.passthrough_camera import (
    camcast_on,
    mjpeg_camera_spec,
    post,
    running_encoders,
    status,
    wait_streaming,
)
from bench.passthrough_direct import DirectResult, DirectViewer
from bench.passthrough_probe import Probe
from bench.passthrough_report import JOIN_SPAN
from bench.runner import RunContext
from bench.serverproc import ServerProcess, WindowMeter
from bench.stats import percentile
from bench.webrtc_load import usage_of

if TYPE_CHECKING:
    from bench.suites.passthrough import PassthroughSettings, Point

STREAMING_TIMEOUT = 90.0  # s: a transcoding server decodes nothing before the camera's next keyframe
Result = dict[str, Any]


def _tag(point: Point, rep: int, attempt: int) -> str:
    return f"passthrough-{point.name}-r{rep}-a{attempt}"


def _server(s: PassthroughSettings, source: str, mode: str, recordings: str) -> Any:
    return camcast_on(source, s.size, s.fps, s.camera_kbps * 1000, mode, recordings)


def _streaming(server: ServerProcess, mode: str, passthrough: str) -> float:
    """Wait until the server streams its camera (passed through, or decoded with --transcode);
    returns how long that took."""
    began = time.monotonic()
    wait_streaming(server, passthrough if mode == "passthrough" else None, STREAMING_TIMEOUT)
    return time.monotonic() - began


def _idle(server: ServerProcess, seconds: float) -> float:
    meter = WindowMeter(server)
    meter.begin()
    time.sleep(seconds)
    return meter.end().cores


def _sleep_until(wall: float) -> None:
    time.sleep(max(0.0, wall - time.time()))


def _sources(state: Result) -> Result:
    return {"source_opens": state["source_opens"], "reconnects": state["reconnects"]}


class _Window:
    """The server's CPU over a window, the machine's, and what the camera and the clients took."""

    def __init__(self, server: ServerProcess, ours: list[int], camera: int | None) -> None:
        self.meter, self.busy, self.server = WindowMeter(server), BusyMeter(), server
        self.ours, self.camera = ours, camera

    def begin(self) -> None:
        self.meter.begin()
        self.busy.begin()
        self.ours0 = usage_of(self.ours)
        self.camera0 = usage_of([self.camera]) if self.camera else 0.0

    def end(self) -> Result:
        window = self.meter.end()
        machine = self.busy.end()
        ours = (usage_of(self.ours) - self.ours0) / window.seconds
        camera = (usage_of([self.camera]) - self.camera0) / window.seconds if self.camera else math.nan
        return {"window_s": window.seconds, "cores": window.cores, "cpu_s": window.cpu_seconds,
                "rss_mb": window.rss_end / 2**20, "machine_cores": machine, "camera_cores": camera,
                "clients_cores": ours - (camera if camera == camera else 0.0),
                "other_cores": max(0.0, machine - window.cores - ours),
                "top_other_processes": self.busy.top_others({self.server.pid, *self.ours}),
                "load_average": load_average()}


# -- rtsp: WebRTC peers and a recording ----------------------------------------------------------
def measure_rtsp(ctx: RunContext, s: PassthroughSettings, camera: Any, point: Point, rep: int,
                 attempt: int) -> Result:
    tag = _tag(point, rep, attempt)
    log = ctx.raw_dir / f"{tag}.log"
    n = point.viewers
    latency = n == s.latency_peers and s.latency_window > 0
    gop = s.gop / s.fps
    recording: Result = {}
    latency_result: Result = {}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="camcast-bench-"))
        server = stack.enter_context(ServerProcess(_server(s, camera.url, point.mode, tmp), log))
        # Spawned once the server is up (their imports would slow its start down), closed before it
        # stops; they import while the server reaches the camera and is measured idle.
        ramp = min(s.max_ramp, s.ramp_per_peer * n)
        # Counting peers in processes of up to peers_per_worker, so no client's loop falls behind.
        processes = math.ceil(n / s.peers_per_worker)
        shares = [len(range(w, n, processes)) for w in range(processes)]
        workers = [stack.enter_context(contextlib.closing(Probe({"kind": "watch", "peers": k, "ramp": ramp})))
                   for k in shares]
        probe = direct = None
        if latency:
            probe = stack.enter_context(contextlib.closing(
                Probe({"kind": "latency", "seconds": s.latency_window, "settle_timeout": 2 * gop + 8})))
            # Passed through, the same bytes reach both viewers: the camera's viewer need not
            # decode (a busy machine would only make it fall behind). Transcoded, it must.
            direct = stack.enter_context(contextlib.closing(
                DirectViewer(camera.url, decode=point.mode == "transcode")))
        streaming_s = _streaming(server, point.mode, "passthrough")
        idle_cores = _idle(server, s.idle_window)
        for worker in workers:
            worker.begin(server.url("/"))
        # Every peer on the camera's packets and the bridge's encoder stopped (it lingers 2 s after
        # its last peer): at most the ramp, a GOP and the linger.
        settle_by = time.time() + min(s.max_ramp, s.ramp_per_peer * n) + 2 * gop + 6.0
        wait_settled(server, point.mode, settle_by, peers=n)
        if s.record:
            post(server, "/api/record/start")
        time.sleep(s.settle)
        settled, waited = wait_settled(server, point.mode, settle_by, peers=n)  # recording too
        helpers = [p.pid for p in (*workers, probe, direct) if p is not None and p.pid]
        window = _Window(server, [camera.pid, *helpers], camera.pid)
        window.begin()
        started = time.time()
        time.sleep(s.window)
        measured = window.end()
        ended = status(server)
        if probe is not None and direct is not None:
            direct.begin()
            probe.begin(server.url("/"))
            got = probe.result(timeout=4 * gop + s.latency_window + 30)
            seen = direct.stop()
            latency_result = latency_of(got.frames, seen) | {
                "probe_error": got.error, "direct_error": seen.error,
                "probe_decode_errors": got.decode_errors, "direct_decode_errors": seen.decode_errors}
        if s.record:
            recording = post(server, "/api/record/stop")
        last = status(server)
        counted = [w for worker in workers for w in worker.result(timeout=30).watchers]
        if not server.alive():
            raise RuntimeError(f"{tag}: the server died; see {log}")
    sessions = settled["webrtc"]["sessions"]
    t0, t1 = started, started + measured["window_s"]
    return {
        "point": asdict(point), "rep": rep, "attempt": attempt, **measured, "idle_cores": idle_cores,
        "streaming_s": streaming_s, **_sources(last), "settle_wait_s": waited,
        # Per peer over the CPU window: whole frames it counted, its longest wait between two.
        "peers": [{"fps": sum(1 for t in w["frame_times"] if t0 <= t < t1) / (t1 - t0),
                   "max_gap_ms": longest_gap(w["frame_times"], t0, t1), "lost_packets": w["lost"],
                   "error": w["error"]} for w in counted],
        "errors": [w["error"] for w in counted if w["error"]],
        # What the server sent each peer over the CPU window, and what their tracks went through
        # over the whole point (the latency stage's join included).
        "sent_fps": sent_rate(settled, ended, measured["window_s"], "frames_sent"),
        "sent_kbps": [x * 8 / 1000 for x in sent_rate(settled, ended, measured["window_s"], "bytes_sent")],
        "tracks": {key: sum(int(x.get(key, 0)) for x in last["webrtc"]["sessions"])
                   for key in ("dropped", "skipped", "resyncs", "pli")},
        "sessions_at_window": dict(Counter(str(x.get("rendition")) for x in sessions)),
        "switching_at_window": sum(1 for x in sessions if x.get("switching_to")),
        "encoders_at_window": running_encoders(settled), "encoders_at_end": running_encoders(ended),
        "passthrough": ended["passthrough"], "source": ended["source"], "camera_fps": ended["fps"],
        "recording": {k: recording.get(k) for k in ("state", "frames", "bytes", "elapsed", "error")},
        "latency": latency_result,
    }


def sent_rate(before: Result, after: Result, seconds: float, key: str) -> list[float]:
    """`key` (frames_sent, bytes_sent) a second the server sent each session present at both times."""
    then = {x["id"]: x[key] for x in before["webrtc"]["sessions"]}
    return [(x[key] - then[x["id"]]) / seconds for x in after["webrtc"]["sessions"] if x["id"] in then]


def wait_settled(server: ServerProcess, mode: str, deadline: float, peers: int = 0) -> tuple[Result, float]:
    """Wait (until `deadline`, wall) until every peer (at least `peers`) is on its rendition, not
    moving, and only the encoders of the mode run: none when passed through (the bridge stopped),
    the top H.264 one with --transcode. Returns the status then and how long it took."""
    began = time.time()
    wanted = [] if mode == "passthrough" else ["h264"]
    while True:
        state = status(server)
        sessions = state["webrtc"]["sessions"]
        moving = [x for x in sessions if x.get("switching_to")]
        if (not moving and len(sessions) >= peers and running_encoders(state) == wanted) \
                or time.time() > deadline:
            return state, time.time() - began
        time.sleep(0.2)


def latency_of(probe: list[tuple[int, float, float, str]], direct: DirectResult) -> Result:
    """The same frames at a viewer of the camera itself and through camcast.

    A frame passed through has the same bytes at both: it is found by its slice's key, and its
    capture time is the stamp the WebRTC peer decoded. A transcoded frame is found by its stamp,
    which the camera's viewer then decodes too. Per frame: its capture-to-arrival latency at the
    camera's viewer (its access unit demuxed), at the peer (its last RTP packet: camcast's relay,
    packetization, SRTP and UDP on the way) and to the peer's decoded picture; the difference of the
    arrivals is what camcast adds before any decoding."""
    arrived_by_key = {key: arrived for key, arrived in direct.units}
    by_stamp = {stamp: (arrived, decoded) for stamp, arrived, decoded in direct.frames}
    rows = []  # (stamp, arrival at the camera's viewer, its decode or NaN, marker at the peer, decoded there)
    for stamp, decoded, marker, key in probe:
        if key in arrived_by_key:
            rows.append((stamp, arrived_by_key[key], by_stamp.get(stamp, (0, math.nan))[1], marker, decoded))
        elif stamp in by_stamp:
            rows.append((stamp, *by_stamp[stamp], marker, decoded))

    def ms(pairs: list[tuple[float, float]]) -> list[float]:
        return [(b - a) * 1000 for a, b in pairs if a == a and b == b]

    return {
        "camcast_ms": ms([(stamp / 1e6, decoded) for stamp, decoded, _, _ in probe]),
        "camcast_arrival_ms": ms([(stamp / 1e6, marker) for stamp, _, marker, _ in probe]),
        "direct_arrival_ms": ms([(r[0] / 1e6, r[1]) for r in rows]),
        "direct_ms": ms([(r[0] / 1e6, r[2]) for r in rows]),  # only where it decoded (transcode)
        "transport_ms": ms([(r[1], r[3]) for r in rows]),
        "added_ms": ms([(r[2], r[4]) for r in rows]),  # decoded vs decoded (transcode)
        "frames_camcast": len(probe), "frames_matched": len(rows),
        "matched_by_bytes": sum(1 for *_, key in probe if key in arrived_by_key),
    }


# -- joins: a new peer's first frame ----------------------------------------------------------------
def measure_joins(ctx: RunContext, s: PassthroughSettings, camera: Any, point: Point, rep: int,
                  attempt: int) -> Result:
    tag = _tag(point, rep, attempt)
    log = ctx.raw_dir / f"{tag}.log"
    gop = s.gop / s.fps
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="camcast-bench-"))
        server = stack.enter_context(ServerProcess(_server(s, camera.url, point.mode, tmp), log))
        probe = stack.enter_context(contextlib.closing(
            Probe({"kind": "joins", "count": s.joins, "gap": (s.join_pause, s.join_pause + gop),
                   "seed": 1000 * rep + 7, "timeout": s.join_timeout})))
        # A viewer already watching (counting, not decoding): what each join does to its pictures.
        watcher = stack.enter_context(contextlib.closing(Probe({"kind": "watch", "peers": 1})))
        direct = stack.enter_context(contextlib.closing(DirectViewer(camera.url, decode=False)))
        streaming_s = _streaming(server, point.mode, "passthrough")
        watcher.begin(server.url("/"))
        wait_settled(server, point.mode, time.time() + 2 * gop + 6, peers=1)
        direct.begin()  # the camera's keyframe times
        probe.begin(server.url("/"))
        busy = BusyMeter()
        busy.begin()
        got = probe.result(timeout=s.joins * (s.join_pause + gop + 2 * s.join_timeout + 25) + 30)
        machine = busy.end()
        time.sleep(gop + 1.0)  # the camera's next keyframe after the last join, for the relay figure
        watched = watcher.result(timeout=20)
        seen = direct.stop()
        state = status(server)
        if not server.alive():
            raise RuntimeError(f"{tag}: the server died; see {log}")
    frames = watched.watchers[0]["frame_times"] if watched.watchers else []
    joins = [join_row(j, seen.keyframes)
             | {"watcher_gap_ms": longest_gap(frames, j["offer"], j["offer"] + JOIN_SPAN)} for j in got.joins]
    gaps = [b - a for a, b in itertools.pairwise(seen.keyframes)]
    return {"point": asdict(point), "rep": rep, "attempt": attempt, "joins": joins,
            "keyframes": len(seen.keyframes), "gop_measured_s": percentile(gaps, 50),
            "watcher_quiet_gaps_ms": quiet_gaps(frames, [j["offer"] for j in got.joins]),
            "watcher_frames": len(frames),
            "errors": [j["error"] for j in joins if j["error"]]
            + [e for e in (got.error, seen.error, watched.error) if e],
            "machine_cores": machine, "load_average": load_average(), "passthrough": state["passthrough"],
            "streaming_s": streaming_s, **_sources(state)}


def join_row(join: Result, keyframes: list[float]) -> Result:
    """One join with where it fell in the camera's GOP and what a plain relay would have made it wait:
    a relay starts a viewer on the camera's next IDR once the viewer's connection is up (ICE and
    DTLS), so its first frame is no earlier than that IDR's arrival (sending and decoding it not
    counted)."""
    offer, connected = join["offer"], join["connected"]
    before = bisect.bisect_right(keyframes, offer) - 1
    after = bisect.bisect_left(keyframes, connected) if connected == connected else len(keyframes)
    return {**join, "ttff_ms": (join["first_frame"] - offer) * 1000,
            "fresh_ms": (join["first_fresh"] - offer) * 1000,
            "connected_ms": (connected - offer) * 1000,
            "first_packet_ms": (join["first_packet"] - offer) * 1000,
            "since_keyframe_s": offer - keyframes[before] if before >= 0 else math.nan,
            "relay_ms": (keyframes[after] - offer) * 1000 if after < len(keyframes) else math.nan}


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest wait between frames (ms) over [start, end], counted from the frame before `start`
    to the one after `end`."""
    if not times or start != start:
        return math.nan
    first = max(0, bisect.bisect_left(times, start) - 1)
    last = min(len(times), bisect.bisect_right(times, end) + 1)
    edges = times[first:last]
    return max(((b - a) * 1000 for a, b in itertools.pairwise(edges)), default=math.nan)


def quiet_gaps(times: list[float], offers: list[float]) -> list[float]:
    """Gaps (ms) between a watching viewer's frames away from the joins (none began within
    JOIN_SPAN before either frame), from the first join on."""
    if not offers:
        return []

    def near(t: float) -> bool:
        return any(o - 0.1 <= t <= o + JOIN_SPAN for o in offers)

    return [(b - a) * 1000 for a, b in itertools.pairwise(times)
            if a >= offers[0] and not near(a) and not near(b)]


# -- mjpeg: an HTTP MJPEG camera and MJPEG clients ---------------------------------------------------
def measure_mjpeg(ctx: RunContext, s: PassthroughSettings, point: Point, rep: int, attempt: int) -> Result:
    tag = _tag(point, rep, attempt)
    with tempfile.TemporaryDirectory(prefix="camcast-bench-") as tmp, \
            ServerProcess(mjpeg_camera_spec(s.size, s.fps, tmp + "/camera"),
                          ctx.raw_dir / f"{tag}-camera.log") as upstream, \
            ServerProcess(_server(s, upstream.url("/video.mjpg"), point.mode, tmp),
                          ctx.raw_dir / f"{tag}.log") as server:
        streaming_s = _streaming(server, point.mode, "jpeg passthrough")
        idle_cores = _idle(server, s.idle_window)
        n = point.viewers
        t_connect = time.time() + 1.5  # after the worker has started (it imports little)
        ramp = min(2.0, 0.05 * n)
        t_window = t_connect + ramp + 1.0
        plan = LoadPlan("127.0.0.1", server.port, "/video.mjpg", n, 1, t_connect, ramp, t_window,
                        t_window + s.mjpeg_window, s.mjpeg_samples, 0)
        load = LoadRun(plan)
        window = _Window(server, [*load.pids, upstream.pid], upstream.pid)
        _sleep_until(t_window)
        window.begin()
        _sleep_until(plan.t_end)
        measured = window.end()
        state = status(server)
        results = load.results()
        if not server.alive():
            raise RuntimeError(f"{tag}: the server died; see {ctx.raw_dir / f'{tag}.log'}")
    clients = [c for r in results for c in r["clients"]]
    return {"point": asdict(point), "rep": rep, "attempt": attempt, **measured, "idle_cores": idle_cores,
            "streaming_s": streaming_s, **_sources(state),
            "fps": [c["frames"] / s.mjpeg_window for c in clients],
            "max_gap_ms": max((c["max_gap_ms"] for c in clients), default=math.nan),
            "latency_ms": [x for r in results for x in r["latency_ms"]],
            "bad_stamps": sum(r["bad_stamps"] for r in results),
            "errors": [c["error"] for c in clients if c["error"]],
            "encoders_at_end": running_encoders(state), "passthrough": state["passthrough"],
            "source": state["source"]}
