"""A server under test, started fresh as a subprocess, with its CPU seconds and RSS measured via psutil."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: its command and the stdout line that says it listens (port in group 1)."""

    name: str
    argv: tuple[str, ...]
    ready: str  # regex; group 1 is the port


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float  # user + system, the process and all its children
    rss_bytes: int  # resident set size, the process and all its children


@dataclass(frozen=True)
class WindowUsage:
    seconds: float
    cpu_seconds: float
    rss_end: int
    rss_peak: int

    @property
    def cores(self) -> float:
        return self.cpu_seconds / self.seconds if self.seconds > 0 else float("nan")


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM if the bench process dies, so nothing is left running.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def tree_usage(proc: psutil.Process) -> Usage:
    """CPU seconds and RSS of a process plus its live children."""
    cpu = 0.0
    rss = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied), p.oneshot():
            t = p.cpu_times()
            cpu += t.user + t.system
            rss += p.memory_info().rss
    return Usage(cpu, rss)


class ServerProcess:
    """Start a server, wait for its ready line, measure it over windows, stop it. A context manager."""

    def __init__(self, spec: ServerSpec, log_path: Path, start_timeout: float = 30.0) -> None:
        self.spec = spec
        self._log_path = log_path
        self._start_timeout = start_timeout
        self._popen: subprocess.Popen[str] | None = None
        self._proc: psutil.Process | None = None
        self.port = 0

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self._popen is not None
        return self._popen.pid

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self._log_path.open("w")
        # This checkout's server, whatever camcast happens to be installed.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
            str(REPO_ROOT / "server"), str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
        self._popen = subprocess.Popen(
            self.spec.argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
            cwd=REPO_ROOT, env=env, preexec_fn=_die_with_parent,
        )
        log.close()
        self._proc = psutil.Process(self._popen.pid)
        found = threading.Event()
        pattern = re.compile(self.spec.ready)
        stdout = self._popen.stdout
        assert stdout is not None

        def drain() -> None:  # read stdout to its end so the pipe never fills
            for line in stdout:
                match = pattern.search(line)
                if match and not found.is_set():
                    self.port = int(match.group(1))
                    found.set()

        threading.Thread(target=drain, name=f"{self.spec.name}-stdout", daemon=True).start()
        deadline = time.monotonic() + self._start_timeout
        while not found.wait(0.05):
            if self._popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self._log_path.read_text()[-2000:]
                raise RuntimeError(f"{self.spec.name} did not start: {tail}")

    def usage(self) -> Usage:
        assert self._proc is not None
        return tree_usage(self._proc)

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def stop(self) -> None:
        popen, self._popen = self._popen, None
        if popen is None or popen.poll() is not None:
            return
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)


class WindowMeter:
    """Server CPU seconds over a window, RSS at its end and its peak (sampled in a thread)."""

    def __init__(self, server: ServerProcess, sample_every: float = 0.25) -> None:
        self._server = server
        self._every = sample_every
        self._stop = threading.Event()
        self._peak = 0
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._cpu0 = 0.0

    def _sample(self) -> None:
        while not self._stop.wait(self._every):
            with contextlib.suppress(psutil.Error):
                self._peak = max(self._peak, self._server.usage().rss_bytes)

    def begin(self) -> None:
        usage = self._server.usage()
        self._t0, self._cpu0, self._peak = time.monotonic(), usage.cpu_seconds, usage.rss_bytes
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()

    def end(self) -> WindowUsage:
        usage = self._server.usage()
        seconds = time.monotonic() - self._t0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return WindowUsage(seconds, usage.cpu_seconds - self._cpu0, usage.rss_bytes,
                           max(self._peak, usage.rss_bytes))


def python_module(module: str, *args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", module, *args)
