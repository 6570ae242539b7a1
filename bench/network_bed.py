"""Runs of the network suite on the emulated network of tests/support/netlab.py (needs root).

- `run_stepping`: one server (camcast, or the aiortc relay baseline) in the server's namespace, one
  Chromium viewer (bench.network_viewer) in the viewer's namespace, the server side's tbf rate
  stepping through phases. Every `interval` s: the link (what tbf let through and dropped) and the
  server's view of the session (rendition, switching_to, estimate, sent rate, loss, RTT, switches);
  the viewer's own once-a-second lines (frames decoded, freezes, size, latency) are kept as written.
- `run_isolation`: camcast with a clean Chromium viewer inside the server's own namespace (over its
  loopback, unshaped) and, unless alone, a troubled aiortc viewer across the shaped or lossy link;
  what the server sent the clean viewer (keyframes, bytes, its rendition) over a window.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.network_viewer import Tail
from bench.serverproc import REPO_ROOT

TESTS = REPO_ROOT / "tests"
RELAY_LINE = re.compile(r"aiortc-relay: serving .* at http://[\d.]+:(\d+)/")
START_TIMEOUT = 30.0


def support_path() -> None:
    """The bed lives in the tests' `support` package, which imports itself as `support`."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))


@dataclass(frozen=True)
class Phase:
    kbps: int
    seconds: float


@dataclass(frozen=True)
class Config:
    """One server design of the stepping comparison."""

    name: str  # adapt | single | relay
    label: str
    kind: str  # camcast | relay
    args: tuple[str, ...] = ()


@dataclass
class BedServer:
    url: str
    stop: Any  # () -> None
    status: Any = None  # () -> dict (camcast's /api/status), None for the relay
    log: Path | None = None


@dataclass
class Content:
    """What the server shows: the test pattern, or a file played in a loop (stamped)."""

    size: str
    fps: float
    file: Path | None = None

    def camcast_args(self) -> list[str]:
        stamp = ["--stamp"] if self.file else []
        return ["--size", self.size, "--fps", f"{self.fps:g}", *stamp]

    @property
    def source(self) -> str:
        return str(self.file) if self.file else "testpattern"


@contextlib.contextmanager
def bed_server(lab: Any, config: Config, content: Content, workdir: Path) -> Iterator[BedServer]:
    support_path()
    from support.netlab import launch_server

    if config.kind == "camcast":
        server = launch_server(lab, workdir, [*content.camcast_args(), *config.args], source=content.source)
        try:
            yield BedServer(server.url, lambda: server.terminate(10), lambda: lab.server.call(server.status),
                            server.stderr_path)
        finally:
            server.terminate(10)
        return
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "bench.network_relay", "--address", lab.server.address,
            "--size", content.size, "--fps", f"{content.fps:g}"]
    if content.file:
        argv += ["--file", str(content.file)]
    log = workdir / "relay.log"
    with open(log, "wb") as out:
        proc = lab.server.popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (match := RELAY_LINE.search(log.read_text(errors="replace"))):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the relay baseline did not start: {log}")
            time.sleep(0.05)
        yield BedServer(f"http://{lab.server.address}:{match.group(1)}/", proc.terminate, None, log)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _session(status: dict[str, Any] | None) -> dict[str, Any]:
    sessions = ((status or {}).get("webrtc") or {}).get("sessions") or []
    return sessions[0] if sessions else {}


def _wait_playing(tail: Tail, viewer: subprocess.Popen[Any], timeout: float, out: Path) -> float | None:
    started = time.monotonic()
    while not any(r.get("event") == "playing" for r in tail.records):
        tail.read()
        if viewer.poll() is not None:
            raise RuntimeError(f"the Chromium viewer ended ({viewer.returncode}): {out}")
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.1)
    return time.monotonic() - started


def run_stepping(config: Config, phases: list[Phase], content: Content, workdir: Path,
                 interval: float = 0.5, play_timeout: float = 40.0) -> dict[str, Any]:
    """One configuration through every phase; see the module's docstring."""
    support_path()
    from support.netlab import netlab

    workdir.mkdir(parents=True, exist_ok=True)
    viewer_log = workdir / "viewer.jsonl"
    viewer_log.unlink(missing_ok=True)
    page = "whep" if config.kind == "camcast" else "offer"
    samples: list[dict[str, Any]] = []
    with netlab() as lab, bed_server(lab, config, content, workdir / "server") as server:
        lab.server.shape(phases[0].kbps * 1000)
        argv = [sys.executable, "-m", "bench.network_viewer", "chromium", server.url, str(viewer_log),
                "--page", page, "--capture", content.size]
        with open(workdir / "viewer.out", "wb") as out:
            viewer = lab.viewer.popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                      env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        tail = Tail(viewer_log)
        first_frame_s = _wait_playing(tail, viewer, play_timeout, workdir / "viewer.out")
        t0_wall, t0 = time.time(), time.monotonic()
        qdisc = lab.server.qdisc()
        begin = 0.0
        for index, phase in enumerate(phases):
            lab.server.shape(phase.kbps * 1000)
            ticks = round(phase.seconds / interval)
            for k in range(1, ticks + 1):
                at = begin + k * interval
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                new = lab.server.qdisc()
                session = _session(server.status()) if server.status else {}
                samples.append({
                    "t": round(time.monotonic() - t0, 3), "phase": index, "rate_kbps": phase.kbps,
                    "link_kbps": ((new.get("bytes") or 0) - (qdisc.get("bytes") or 0)) * 8 / 1000 / interval,
                    "link_drops": (new.get("drops") or 0) - (qdisc.get("drops") or 0),
                    **{key: session.get(key) for key in (
                        "rendition", "switching_to", "estimate_bps", "sent_bps", "loss", "rtt_ms",
                        "switches_down", "switches_up", "reason", "keyframes_sent", "pli", "nacks")},
                })
                qdisc = new
            begin += phase.seconds
        viewer.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            viewer.wait(15)
        tail.read()
        server_log = server.log
    # The viewer's lines carry wall-clock time: make them relative to the first phase's start.
    frames = [{**r, "t": r["t"] - t0_wall} for r in tail.records if "fps" in r]
    errors = [e for r in tail.records for e in (r.get("errors") or [])]
    return {"config": config.name, "phases": [vars(p) for p in phases], "first_frame_s": first_frame_s,
            "samples": samples, "viewer": frames, "page_errors": errors,
            "viewer_exit": viewer.returncode, "server_log": str(server_log)}


# -- isolation ------------------------------------------------------------------------------------
@dataclass
class Isolation:
    kind: str  # alone | shaped | lossy
    kbps: int = 600
    loss: float = 0.05
    result: dict[str, Any] = field(default_factory=dict)


def _session_totals(session: dict[str, Any]) -> dict[str, Any]:
    return {key: session.get(key) for key in ("rendition", "bytes_sent", "keyframes_sent", "frames_sent",
                                              "pli", "switches_down", "switches_up")}


def _sessions(status: dict[str, Any]) -> list[dict[str, Any]]:
    return list((status.get("webrtc") or {}).get("sessions") or [])


def _by_id(status: dict[str, Any], session_id: str | None) -> dict[str, Any]:
    return next((x for x in _sessions(status) if x.get("id") == session_id), {})


def run_isolation(case: Isolation, content: Content, workdir: Path, settle: float,
                  window: float, interval: float = 0.5, play_timeout: float = 40.0) -> dict[str, Any]:
    """The clean viewer's share over `window`, after `settle`; see the module's docstring."""
    support_path()
    from support.netlab import launch_server, netlab
    from support.netviewer import host_address_per_thread, start_viewer, wait_until

    workdir.mkdir(parents=True, exist_ok=True)
    viewer_log = workdir / "clean-viewer.jsonl"
    viewer_log.unlink(missing_ok=True)
    samples: list[tuple[float, dict[str, Any], dict[str, Any]]] = []  # (time, clean, troubled session)
    with netlab() as lab, host_address_per_thread():
        if case.kind == "shaped":
            lab.server.shape(case.kbps * 1000)
        elif case.kind == "lossy":
            lab.server.loss(case.loss, media_only=True, on_arrival=True)  # past the link, unseen
        server = launch_server(lab, workdir / "server", content.camcast_args(), source=content.source)
        try:
            # The clean viewer: Chromium (its bandwidth estimate is a browser's) on the server's loopback.
            argv = [sys.executable, "-m", "bench.network_viewer", "chromium", server.url, str(viewer_log),
                    "--page", "whep", "--capture", content.size]
            with open(workdir / "clean-viewer.out", "wb") as out:
                chromium = lab.server.popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
            tail = Tail(viewer_log)
            if _wait_playing(tail, chromium, play_timeout, workdir / "clean-viewer.out") is None:
                raise RuntimeError(f"the clean viewer decoded nothing in {play_timeout:g} s: {workdir}")
            clean_id = _sessions(lab.server.call(server.status))[0]["id"]
            troubled = start_viewer(lab.viewer, server, lab.server) if case.kind != "alone" else None
            time.sleep(settle)  # the troubled viewer finds its rendition
            w0, t0 = time.time(), time.monotonic()
            ticks = round(window / interval)
            for k in range(ticks + 1):
                time.sleep(max(0.0, t0 + k * interval - time.monotonic()))
                status = lab.server.call(server.status)
                troubled_id = (troubled.session().get("id") if troubled else None)
                samples.append((time.monotonic() - t0, _by_id(status, clean_id), _by_id(status, troubled_id)))
            w1, t1 = time.time(), time.monotonic()
            chromium.send_signal(signal.SIGTERM)
            if troubled is not None:
                troubled.stop.set()
            with contextlib.suppress(AssertionError):
                wait_until(lambda: not _sessions(lab.server.call(server.status)), 15, "the viewers to leave")
            tail.read()
            errors = [repr(troubled.error)] if troubled is not None and troubled.error is not None else []
        finally:
            server.terminate(10)

    seconds = samples[-1][0] - samples[0][0]
    (_, before, troubled_before), (_, after, troubled_after) = samples[0], samples[-1]

    def grew(key: str, a: dict[str, Any], b: dict[str, Any]) -> float | None:
        return None if a.get(key) is None or b.get(key) is None else b[key] - a[key]

    def renditions(index: int) -> list[str]:
        return list(dict.fromkeys(s[index].get("rendition") for s in samples if s[index].get("rendition")))

    lines = [r for r in tail.records if "fps" in r and w0 < r["t"] <= w1]
    result = {
        "kind": case.kind, "seconds": seconds,
        "clean_keyframes_per_s": (grew("keyframes_sent", before, after) or 0) / seconds,
        "clean_kbps": (grew("bytes_sent", before, after) or 0) * 8 / 1000 / seconds,
        "clean_fps": sum(r["fps"] or 0 for r in lines) / (w1 - w0),
        "clean_fps_min": min((r["fps"] for r in lines if r.get("fps") is not None), default=None),
        "clean_decoded_keyframes": sum(r.get("keyframes") or 0 for r in lines),
        "clean_renditions": renditions(1), "clean_session": _session_totals(after),
        "clean_page_errors": [e for r in tail.records for e in (r.get("errors") or [])],
        "errors": errors,
    }
    if troubled is not None:
        result |= {
            "troubled_fps": troubled.fps(t0, t1), "troubled_renditions": renditions(2),
            "troubled_kbps": (grew("bytes_sent", troubled_before, troubled_after) or 0) * 8 / 1000 / seconds,
            "troubled_pli": grew("pli", troubled_before, troubled_after),
            "troubled_session": _session_totals(troubled_after),
        }
    case.result = result
    return result
