"""A camcast server with many test-pattern cameras (a generated --config file): what it says about its
cameras, and which of its threads run."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.machine import CAMCAST_READY
from bench.serverproc import ServerProcess, ServerSpec, python_module


def camera_names(count: int) -> list[str]:
    return [f"cam{i}" for i in range(count)]


def write_config(path: Path, names: Sequence[str], size: str, fps: float, on_demand: bool = False,
                 idle_timeout: float = 5.0) -> Path:
    """One [cameras.NAME] table per camera, as a user would write it."""
    tables = []
    for name in names:
        lines = [f"[cameras.{name}]", 'source = "testpattern"', f'size = "{size}"', f"fps = {fps:g}"]
        if on_demand:
            lines += ["on_demand = true", f"idle_timeout = {idle_timeout:g}"]
        tables.append("\n".join(lines))
    path.write_text("\n\n".join(tables) + "\n")
    return path


def cameras_spec(config: Path, recordings: str) -> ServerSpec:
    """camcast on a config file, HTTP and WebRTC on loopback only, port picked by the OS."""
    argv = python_module("camcast", "--config", str(config), "--host", "127.0.0.1", "--port", "0",
                         "--ice-address", "127.0.0.1", "--recordings", recordings, "--log-level", "warning")
    return ServerSpec("camcast", argv, CAMCAST_READY)


def get_json(server: ServerProcess, path: str) -> Any:
    with urllib.request.urlopen(server.url(path), timeout=5) as response:
        return json.load(response)


def camera_states(server: ServerProcess) -> dict[str, str]:
    """name -> up | idle | down, from GET /api/cameras."""
    return {c["name"]: c["state"] for c in get_json(server, "/api/cameras")}


def wait_states(server: ServerProcess, state: str, timeout: float = 30.0) -> dict[str, str]:
    """Poll /api/cameras until every camera is in `state`."""
    deadline = time.monotonic() + timeout
    while True:
        states = camera_states(server)
        if all(s == state for s in states.values()):
            return states
        if time.monotonic() > deadline or not server.alive():
            raise RuntimeError(f"cameras not all {state} after {timeout:g} s: {states}")
        time.sleep(0.1)


def scrape(server: ServerProcess) -> dict[str, float]:
    """/metrics, each sample name summed over its labels (e.g. camcast_source_opens_total over cameras)."""
    with urllib.request.urlopen(server.url("/metrics"), timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


@dataclass(frozen=True)
class ThreadCpu:
    """CPU seconds of every OS thread of a process (Linux: /proc/PID/task)."""

    main: int
    seconds: dict[int, float]

    @classmethod
    def of(cls, pid: int) -> ThreadCpu:
        proc = psutil.Process(pid)
        return cls(pid, {t.id: t.user_time + t.system_time for t in proc.threads()})

    def ran_since(self, before: ThreadCpu) -> list[int]:
        """Threads other than the main (event loop) one that used CPU since `before`: threads that
        capture at the frame rate cannot hide from this (clock ticks are 10 ms)."""
        return [tid for tid, cpu in self.seconds.items()
                if tid != self.main and cpu - before.seconds.get(tid, 0.0) > 0.0]

    def main_since(self, before: ThreadCpu) -> float:
        return self.seconds.get(self.main, 0.0) - before.seconds.get(self.main, 0.0)
