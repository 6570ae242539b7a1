"""The whip suite's bed: the tests' Janus + simple-whip-server namespace (tests/support/janus.py),
camcast started inside it by the bench's ServerProcess, and the viewer processes of bench.whip_subs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.machine import CAMCAST_READY
from bench.serverproc import REPO_ROOT, ServerProcess, ServerSpec, python_module

TESTS = REPO_ROOT / "tests"


def support_janus() -> Any:
    """tests/support/janus.py, which imports itself as `support.janus`."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from support import janus

    return janus


def camcast_in(namespace: str, size: str, fps: int, recordings: str, *extra: str) -> ServerSpec:
    """camcast on the stamped test pattern inside the namespace: HTTP on its 127.0.0.1, ICE on the
    veth's address (`ip netns exec` execs, so the pid measured is camcast's). Without sound: the
    publisher is weighed against a local peer that receives pictures only."""
    argv = ("ip", "netns", "exec", namespace, *python_module(
        "camcast", "--source", "testpattern", "--audio", "none", "--host", "127.0.0.1", "--port", "0",
        "--ice-address", support_janus().ADDRESS, "--size", size, "--fps", str(fps),
        "--recordings", recordings, "--log-level", "info", *extra))
    return ServerSpec("camcast", argv, CAMCAST_READY)


def get_json(bed: Any, url: str) -> Any:
    def fetch() -> Any:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    return bed.side.call(fetch)


def publish_state(bed: Any, server: ServerProcess) -> dict[str, Any]:
    publish = get_json(bed, server.url("/api/status"))["publish"]
    return publish[0] if publish else {}


def wait_publishing(bed: Any, server: ServerProcess, timeout: float, sessions: int = 1) -> float:
    """Seconds until camcast says it publishes (its `sessions` count reached)."""
    began = time.monotonic()
    while True:
        state = publish_state(bed, server)
        if state.get("state") == "publishing" and state.get("sessions", 0) >= sessions:
            return time.monotonic() - began
        if time.monotonic() - began > timeout or not server.alive():
            raise RuntimeError(f"camcast not publishing after {timeout:g} s: {state}")
        time.sleep(0.1)


def viewers(bed: Any, role: str, *args: str) -> subprocess.Popen[str]:
    """A bench.whip_subs process inside the namespace; its JSON line comes on stdout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
        str(REPO_ROOT / "server"), str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    proc: subprocess.Popen[str] = bed.side.popen(
        [sys.executable, "-m", "bench.whip_subs", role, *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=REPO_ROOT, env=env)
    return proc


def result_of(proc: subprocess.Popen[str], timeout: float, log: Path) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    log.write_text(err)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"exit {proc.returncode}: {err.strip()[-300:]}", "peers": [], "latency_ms": []}
    result: dict[str, Any] = json.loads(lines[-1])
    return result
