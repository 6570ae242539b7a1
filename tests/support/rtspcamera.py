"""An IP camera on loopback for tests: rtsp_camera_server.py run by Debian's python3 with GStreamer.

    with RtspCamera(gop=30, profile="high") as camera:     # or camera = RtspCamera().start()
        container = av.open(camera.url, options={"rtsp_transport": "tcp"})
        camera.restart()                                    # a reboot: same port, new process

Every frame carries camcast's frame stamp (its capture wall-clock time, see camcast.stamp), and the
stream's timestamps run with the stamps. Tests get cameras from the `start_rtsp_camera` fixture
(import it into the test module), which stops them all at the end. Needs Debian's python3-gi,
gir1.2-gst-rtsp-server-1.0 and GStreamer's base, good, bad and ugly plugins (./scripts/test installs
them); without them a test fails and says what to install.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import pytest

SYSTEM_PYTHON = Path("/usr/bin/python3")  # Debian's: the one python3-gi is built for
SCRIPT = Path(__file__).with_name("rtsp_camera_server.py")
START_TIMEOUT = 15.0  # s until READY: importing gi and binding take well under a second on an idle machine
STOP_TIMEOUT = 5.0
READY_LINE = re.compile(r"^READY (rtsp://\S+?:(\d+)\S*)$", re.MULTILINE)
PACKAGES = ("python3-gi gir1.2-gst-rtsp-server-1.0 gir1.2-gstreamer-1.0 gstreamer1.0-plugins-base "
            "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly")
MISSING = f"the RTSP camera needs Debian's GStreamer: apt-get install {PACKAGES} (./scripts/test, as root)"
_PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("appsrc", "queue", "x264enc", "rtph264pay") if Gst.ElementFactory.find(e) is None]
print(" ".join(missing))
"""


class CameraError(AssertionError):
    """The camera did not start or stop as expected; the message carries its log."""


@functools.cache
def missing_requirements() -> str | None:
    """None when Debian's python3 can run the camera, else what is missing (checked once per run)."""
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run([str(SYSTEM_PYTHON), "-c", _PROBE], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "gi failed to load"
    if probe.stdout.strip():
        return f"GStreamer elements missing: {probe.stdout.strip()}"
    return None


def require_camera() -> None:
    """Fail the running test (never skip) when the camera cannot run on this machine."""
    problem = missing_requirements()
    if problem:
        pytest.fail(f"{MISSING}\n({problem})", pytrace=False)


class RtspCamera:
    """One camera process at rtsp://HOST:PORT/PATH (H.264 over RTSP, UDP or TCP, one shared encoder).

    `port=0` takes a free port at the first start; restart() keeps it. `wrap` prefixes the command
    (e.g. `side.command()` of support.netlab to run the camera inside a namespace, with `host` one of
    that namespace's addresses).
    """

    def __init__(self, *, size: tuple[int, int] = (640, 480), fps: int = 30, gop: int = 120,
                 profile: str = "high", bframes: int = 0, bitrate: int = 1500, path: str = "/cam",
                 host: str = "127.0.0.1", port: int = 0, wrap: Sequence[str] = (), audio: str = "none",
                 audio_freq: int = 440) -> None:
        self.size, self.fps, self.gop, self.profile, self.bframes = size, fps, gop, profile, bframes
        # A second track (a sine of `audio_freq` Hz): none, aac, pcma, pcmu or opus. Changing it
        # before restart() makes the camera come back with (or without) its sound.
        self.audio, self.audio_freq = audio, audio_freq
        self.bitrate, self.host, self.port, self.wrap = bitrate, host, port, list(wrap)
        self.path = path if path.startswith("/") else "/" + path
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncodes: list[int] = []  # one per stop, in order
        self._dir = tempfile.TemporaryDirectory(prefix="rtspcamera-")
        self._stderr = Path(self._dir.name) / "stderr.log"  # appended across restarts
        self._stdout = Path(self._dir.name) / "stdout.log"

    @property
    def url(self) -> str:
        if not self.port:
            raise CameraError("the camera has no port yet: start() it first")
        return f"rtsp://{self.host}:{self.port}{self.path}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        width, height = self.size
        return [*self.wrap, str(SYSTEM_PYTHON), str(SCRIPT), "--host", self.host, "--port", str(self.port),
                "--path", self.path, "--size", f"{width}x{height}", "--fps", str(self.fps),
                "--gop", str(self.gop), "--profile", self.profile, "--bframes", str(self.bframes),
                "--bitrate", str(self.bitrate), "--audio", self.audio, "--audio-freq", str(self.audio_freq)]

    def log(self) -> str:
        """What every run of the camera wrote to stderr so far (GStreamer warnings, tracebacks)."""
        return self._stderr.read_text(errors="replace") if self._stderr.exists() else ""

    def describe(self) -> str:
        return f"command: {' '.join(self.command())}\n--- stderr ---\n{self.log()}"

    def start(self) -> Self:
        """Launch the process and return once it listens (READY on its stdout)."""
        if self.running:
            raise CameraError("the camera is already running")
        require_camera()
        with self._stdout.open("wb") as out, self._stderr.open("ab") as err:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + START_TIMEOUT
        while not (ready := READY_LINE.search(self._stdout.read_text(errors="replace"))):
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise CameraError(f"the camera exited with {code} before READY\n{self.describe()}")
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise CameraError(f"no READY from the camera within {START_TIMEOUT:g} s\n{self.describe()}")
            time.sleep(0.02)
        self.port = int(ready.group(2))
        return self

    def stop(self, kill: bool = False) -> int | None:
        """End the process (SIGTERM, or SIGKILL when `kill` or after STOP_TIMEOUT) and return its
        status (0 after a clean SIGTERM); None when it was not running."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.returncodes.append(proc.returncode)
        return proc.returncode

    def restart(self, kill: bool = False) -> Self:
        """A camera reboot: stop, then start a new process on the same port (clients must reconnect)."""
        self.stop(kill=kill)
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the process and delete its log folder."""
        self.stop()
        self._dir.cleanup()


class StartCamera(Protocol):
    def __call__(self, *, size: tuple[int, int] = ..., fps: int = ..., gop: int = ..., profile: str = ...,
                 bframes: int = ..., bitrate: int = ..., path: str = ..., host: str = ..., port: int = ...,
                 wrap: Sequence[str] = ..., audio: str = ..., audio_freq: int = ...) -> RtspCamera: ...


@pytest.fixture
def start_rtsp_camera() -> Iterator[StartCamera]:
    """Factory: `start_rtsp_camera(**RtspCamera options)` returns a started camera; all are stopped at
    teardown, and one that does not exit cleanly on SIGTERM fails the test with its log.

    Import it into a test module to use it: `from support.rtspcamera import start_rtsp_camera`.
    """
    cameras: list[RtspCamera] = []

    def start(**options: object) -> RtspCamera:
        camera = RtspCamera(**options)  # type: ignore[arg-type]
        cameras.append(camera)
        return camera.start()

    yield start

    problems = []
    for camera in cameras:
        camera.stop()
        # 0 after SIGTERM; -SIGKILL only where a test asked for stop(kill=True). Anything else crashed.
        if any(code not in (0, -signal.SIGKILL) for code in camera.returncodes):
            problems.append(f"camera exited with {camera.returncodes}\n{camera.describe()}")
        camera.close()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
