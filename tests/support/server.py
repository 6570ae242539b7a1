"""Run the real `python -m camcast` as a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

URL_LINE = re.compile(r"^camcast: serving .* at (http://127\.0\.0\.1:(\d+)/)\s*$", re.MULTILINE)
START_TIMEOUT = 20.0  # generous: the machine is shared and may be busy
STOP_TIMEOUT = 5.0


class ServerError(AssertionError):
    """The server did not start, answer or stop as expected; the message carries its log."""


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without CAMCAST_* (tests stay hermetic), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMCAST_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def camcast_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "camcast", *args]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """A blocking GET that returns (status, headers, body) for any HTTP status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


@dataclass
class ServerProcess:
    """One running `python -m camcast`; `url` ends with a slash (http://127.0.0.1:PORT/)."""

    proc: subprocess.Popen[bytes]
    args: list[str]
    workdir: Path
    stdout_path: Path
    stderr_path: Path
    recordings: Path
    url: str = ""
    port: int = 0
    returncode: int | None = field(default=None, init=False)
    allow_tracebacks: bool = field(default=False, init=False)  # checked by the fixture's teardown

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def log(self) -> str:
        """Everything the server wrote to stderr so far (its log)."""
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return (f"command: {' '.join(self.args)}\n--- stdout ---\n{self.stdout()}"
                f"--- stderr ---\n{self.log()}")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.url + path.lstrip("/"), timeout)

    def status(self) -> dict[str, Any]:
        code, _, body = self.get("api/status")
        if code != 200:
            raise ServerError(f"/api/status answered {code}\n{self.describe()}")
        return json.loads(body)

    def wait_for_url(self, timeout: float = START_TIMEOUT, line: re.Pattern[str] = URL_LINE) -> str:
        """Wait for the line that says where it serves (`line`: groups URL and port); sets url, port."""
        deadline = time.monotonic() + timeout
        while True:
            match = line.search(self.stdout())
            if match:
                self.url, self.port = match.group(1), int(match.group(2))
                return self.url
            if self.proc.poll() is not None:
                raise ServerError(f"server exited with {self.proc.returncode} before serving\n"
                                  f"{self.describe()}")
            if time.monotonic() > deadline:
                raise ServerError(f"no 'camcast: serving ... at URL' line within {timeout:g} s\n"
                                  f"{self.describe()}")
            time.sleep(0.02)

    def wait_health(self, expect: int | None = 200, timeout: float = START_TIMEOUT) -> int:
        """Poll /healthz until it answers `expect` (None: any answer); return the status."""
        deadline = time.monotonic() + timeout
        last: object = "no answer"
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"server exited with {self.proc.returncode}\n{self.describe()}")
            try:
                code, _, _ = self.get("healthz", timeout=2.0)
            except OSError as exc:
                last = exc
            else:
                if expect is None or code == expect:
                    return code
                last = code
            if time.monotonic() > deadline:
                raise ServerError(f"/healthz did not answer {expect} within {timeout:g} s "
                                  f"(last: {last})\n{self.describe()}")
            time.sleep(0.05)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> tuple[int, float]:
        """SIGTERM, wait up to `timeout` s; SIGKILL if it hangs. Returns (exit status, seconds)."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = self.proc.returncode
                raise ServerError(f"server ignored SIGTERM for {timeout:g} s and was killed\n"
                                  f"{self.describe()}") from None
        self.returncode = self.proc.returncode
        return self.proc.returncode, time.monotonic() - started


def launch(
    workdir: Path,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    source: str | None = "testpattern",
    wait: bool = True,
    healthy: bool = True,
) -> ServerProcess:
    """Start the server in `workdir` and (with `wait`) return once it serves.

    The fixed options are --host 127.0.0.1 --port 0 --ice-address 127.0.0.1 --recordings
    <workdir>/recordings, and --source `source` unless it is None (then env or defaults
    choose). `args` come last, so they override. With `healthy`, wait for /healthz 200;
    otherwise only for /healthz to answer at all.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    recordings = workdir / "recordings"
    fixed = ["--host", "127.0.0.1", "--port", "0", "--ice-address", "127.0.0.1",
             "--recordings", str(recordings)]
    if source is not None:
        fixed = ["--source", source, *fixed]
    command = camcast_command(*fixed, *args)
    stdout_path, stderr_path = workdir / "server.stdout", workdir / "server.stderr"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                cwd=workdir, env=clean_env(env))
    server = ServerProcess(proc, command, workdir, stdout_path, stderr_path, recordings)
    if wait:
        try:
            server.wait_for_url()
            server.wait_health(200 if healthy else None)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
    return server


@contextlib.contextmanager
def running(workdir: Path, args: Sequence[str] = ()) -> Iterator[ServerProcess]:
    """A server for a module's tests; on exit it must stop cleanly (status 0, no traceback)."""
    server = launch(workdir, args)
    try:
        yield server
    finally:
        code, _ = server.terminate()
        assert code == 0, server.describe()
        assert "Traceback" not in server.log(), server.describe()
