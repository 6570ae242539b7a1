"""What motion detection costs a real server: one test-pattern camera with and without `--motion`.

No viewer: the camera is not on demand, so it captures all the time and nothing else runs (no
encoder). Each run is a fresh server; the process's CPU over a window, its capture rate from
`/api/status` (frames_captured before and after), and the CPU of the detector's own thread
(`motion-<camera>`), found by its kernel name or, when the server leaves that `python3`, by its Python
name in a `py-spy dump` (which gives each thread's native id).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from bench.machine import BusyMeter, camcast_spec, load_average, wait_for_quiet
from bench.runner import RunContext
from bench.serverproc import ServerProcess, WindowMeter

if TYPE_CHECKING:
    from bench.suites.motion import MotionBenchSettings

MOTION_THREAD = "motion-default"  # the detector thread of the only camera


@dataclass(frozen=True)
class CostPoint:
    size: str
    motion: bool


def status(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(server.url("/api/status"), timeout=5) as response:
        return json.loads(response.read())


def find_threads(pid: int, name: str) -> tuple[list[int], str]:
    """Native ids of the process's threads called `name`, and how they were found."""
    tids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if (task / "comm").read_text().strip() == name[:15]:
                tids.append(int(task.name))
    if tids:
        return tids, "kernel name"
    spy = shutil.which("py-spy")
    if spy is None:
        return [], "unnamed in the kernel; no py-spy"
    dump = subprocess.run([spy, "dump", "--nonblocking", "--pid", str(pid)], capture_output=True, text=True,
                          timeout=30).stdout
    tids = [int(m.group(1)) for m in re.finditer(r'^Thread (\d+) \(\w+\): "([^"]*)"', dump, re.M)
            if m.group(2) == name]
    return tids, "py-spy dump" if tids else "not found"


def thread_cpu(pid: int, tids: list[int]) -> float:
    """CPU seconds (user + system) of these threads of the process."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        for t in psutil.Process(pid).threads():
            if t.id in tids:
                total += t.user_time + t.system_time
    return total


def measure(ctx: RunContext, point: CostPoint, fps: float, settle: float, window: float,
            rep: int, attempt: int = 0) -> dict[str, Any]:
    tag = f"motion-cost-{point.size}-{'on' if point.motion else 'off'}-r{rep}-a{attempt}"
    log = ctx.raw_dir / f"{tag}.log"
    extra = ("--motion",) if point.motion else ()
    with tempfile.TemporaryDirectory(prefix="camcast-bench-") as tmp, \
            ServerProcess(camcast_spec(point.size, fps, tmp, *extra), log) as server:
        time.sleep(settle)
        tids, found_by = find_threads(server.pid, MOTION_THREAD) if point.motion else ([], "")
        meter, busy = WindowMeter(server), BusyMeter()
        first = status(server)
        threads0 = thread_cpu(server.pid, tids)
        meter.begin()
        busy.begin()
        time.sleep(window)
        usage = meter.end()
        machine = busy.end()
        threads1 = thread_cpu(server.pid, tids)
        last = status(server)
        others = busy.top_others({server.pid})
        if not server.alive():
            raise RuntimeError(f"{tag}: the server died; see {log}")
    motion = last.get("motion") or {}
    if point.motion and not motion.get("enabled"):
        raise RuntimeError(f"{tag}: --motion given but /api/status says motion {motion}; see {log}")
    return {
        "point": asdict(point), "rep": rep, "cores": usage.cores, "seconds": usage.seconds,
        "rss_mb": usage.rss_end / 2**20,
        "capture_fps": (last["frames_captured"] - first["frames_captured"]) / usage.seconds,
        "thread_cores": (threads1 - threads0) / usage.seconds if tids else None,
        "motion_threads": len(tids), "threads_found_by": found_by,
        "motion_status": motion,
        "machine_cores": machine,
        "other_cores": max(0.0, machine - usage.cores),
        "top_others": others,
        "loadavg_1m": psutil.getloadavg()[0],
    }


def disturbed(result: dict[str, Any], s: MotionBenchSettings) -> str:
    """Why a run's CPU is not comparable, or "": the camera fell behind, or others took the cores."""
    if result["capture_fps"] < s.min_capture_share * s.fps:
        return f"captured {result['capture_fps']:.1f} of {s.fps:g} fps"
    if result["other_cores"] > s.max_other_cores:
        return f"other processes took {result['other_cores']:.2f} cores"
    return ""


def measure_settled(ctx: RunContext, s: MotionBenchSettings, point: CostPoint, rep: int) -> dict[str, Any]:
    """Measure once the machine is quieter; again (up to `retries` times) when the run was disturbed.
    The last attempt is kept either way, with the reasons of the attempts before it."""
    reasons: list[str] = []
    for attempt in range(s.retries + 1):
        waited = wait_for_quiet(ctx.log, s.quiet_max_wait, s.quiet_sample, s.quiet_cores)
        result = measure(ctx, point, s.fps, s.settle, s.window, rep, attempt)
        result["quiet_wait_s"] = waited
        reason = disturbed(result, s)
        result["disturbed"] = reason
        if not reason or attempt == s.retries:
            result["disturbed_attempts"] = reasons
            return result
        ctx.log(f"  disturbed ({reason}; load average {load_average()}); again")
        reasons.append(reason)
        time.sleep(s.retry_pause)
    raise AssertionError("unreachable")
