"""What the rest of this shared machine did during a window, and a camcast server spec for WebRTC suites."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from bench.serverproc import ServerSpec, python_module

CAMCAST_READY = r"at http://127\.0\.0\.1:(\d+)/"


def camcast_spec(size: str, fps: float, recordings: str, *extra: str) -> ServerSpec:
    """camcast on the test pattern, HTTP and WebRTC on loopback only, port picked by the OS."""
    argv = python_module("camcast", "--source", "testpattern", "--host", "127.0.0.1", "--port", "0",
                         "--ice-address", "127.0.0.1", "--size", size, "--fps", f"{fps:g}",
                         "--recordings", recordings, "--log-level", "warning", *extra)
    return ServerSpec("camcast", argv, CAMCAST_READY)


def load_average() -> str:
    return ", ".join(f"{v:.2f}" for v in psutil.getloadavg())


def _process_cpu() -> dict[int, tuple[str, float]]:
    out = {}
    for proc in psutil.process_iter(["name", "cpu_times"]):
        times = proc.info["cpu_times"]
        if times is not None:
            out[proc.pid] = (proc.info["name"] or "?", times.user + times.system)
    return out


@dataclass
class BusyMeter:
    """Busy cores of the whole machine over a window (all processes, ours included), and which
    processes outside `ours` used the most (to say who disturbed a measurement)."""

    _busy0: float = 0.0
    _t0: float = 0.0
    _procs0: dict[int, tuple[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()._asdict()
        # guest time is already inside user time on Linux
        idle = {"idle", "iowait", "guest", "guest_nice"}
        return sum(v for k, v in t.items() if k not in idle)

    def begin(self) -> None:
        self._procs0 = _process_cpu()
        self._busy0, self._t0 = self._busy(), time.monotonic()

    def end(self) -> float:
        self.seconds = time.monotonic() - self._t0
        return (self._busy() - self._busy0) / self.seconds if self.seconds > 0 else float("nan")

    def top_others(self, ours: set[int], count: int = 3) -> list[str]:
        """The busiest processes over the window that are not in `ours` (nor this process), as
        "name (cores)"; call right after end()."""
        ours = ours | {psutil.Process().pid}
        used = []
        for pid, (name, cpu) in _process_cpu().items():
            if pid in ours:
                continue
            before = self._procs0.get(pid, (name, 0.0))[1]
            used.append((cpu - before, name))
        used.sort(reverse=True)
        return [f"{name} ({cpu / self.seconds:.2f})" for cpu, name in used[:count]
                if self.seconds > 0 and cpu / self.seconds >= 0.05]


def wait_for_quiet(log: Callable[[str], None], max_wait: float, sample: float, cores_limit: float) -> float:
    """Wait (at most `max_wait` s, sampling every `sample` s) until the machine uses at most
    `cores_limit` cores while nothing of the bench runs; returns the seconds waited."""
    started = time.monotonic()
    cores = 0.0
    while time.monotonic() - started < max_wait:
        busy = BusyMeter()
        busy.begin()
        time.sleep(sample)
        cores = busy.end()
        if cores <= cores_limit:
            break
        if time.monotonic() - started < 2 * sample:
            log(f"  waiting for a quieter machine: {cores:.2f} cores busy "
                f"({', '.join(busy.top_others(set())) or '-'})")
    waited = time.monotonic() - started
    if waited > 2 * sample:
        log(f"  waited {waited:.0f} s; the machine is {cores:.2f} cores busy")
    return waited
