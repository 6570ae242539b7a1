"""The cameras of the passthrough suite and the servers that watch them.

- An IP camera: the tests' RTSP camera (tests/support/rtspcamera.py: GStreamer's RTSP server,
  x264 High profile without B-frames, stamped frames, one shared encoder for every client), run
  by Debian's python3. Its process is the camera's, not the server's: it is measured apart.
- An HTTP MJPEG camera: another camcast on its test pattern (stamped), serving /video.mjpg.
- The server under test: camcast on that camera's URL, passing its packets through, or with
  `--transcode` (decode and encode again, the path every camera took before): the baseline.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from bench.machine import CAMCAST_READY
from bench.serverproc import ServerProcess, ServerSpec, python_module

MODES = ("passthrough", "transcode")
LOG_LEVEL = "warning"


def start_rtsp_camera(size: tuple[int, int], fps: int, gop: int, profile: str, kbps: int) -> Any:
    """A started RtspCamera (close() it); a clear error when GStreamer is missing."""
    from tests.support.rtspcamera import MISSING, RtspCamera, missing_requirements

    problem = missing_requirements()
    if problem:
        raise RuntimeError(f"{MISSING} ({problem})")
    return RtspCamera(size=size, fps=fps, gop=gop, profile=profile, bitrate=kbps).start()


def camcast_on(source: str, size: str, fps: float, bitrate: int, mode: str, recordings: str) -> ServerSpec:
    """camcast watching a camera at `source`, its outputs on loopback; `mode` transcode adds --transcode."""
    assert mode in MODES
    argv = python_module("camcast", "--source", source, "--host", "127.0.0.1", "--port", "0",
                         "--ice-address", "127.0.0.1", "--size", size, "--fps", f"{fps:g}",
                         "--bitrate", str(bitrate), "--recordings", recordings, "--log-level", LOG_LEVEL,
                         *(("--transcode",) if mode == "transcode" else ()))
    return ServerSpec(f"camcast-{mode}", argv, CAMCAST_READY)


def mjpeg_camera_spec(size: str, fps: float, recordings: str) -> ServerSpec:
    """The HTTP MJPEG camera: a camcast on its stamped test pattern, WebRTC off the table (no peer)."""
    argv = python_module("camcast", "--source", "testpattern", "--host", "127.0.0.1", "--port", "0",
                         "--ice-address", "127.0.0.1", "--size", size, "--fps", f"{fps:g}",
                         "--recordings", recordings, "--log-level", "warning")
    return ServerSpec("mjpeg-camera", argv, CAMCAST_READY)


def status(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(server.url("/api/status"), timeout=10) as response:
        return json.load(response)  # type: ignore[no-any-return]


def post(server: ServerProcess, path: str) -> dict[str, Any]:
    request = urllib.request.Request(server.url(path), data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)  # type: ignore[no-any-return]


def wait_streaming(server: ServerProcess, passthrough: str | None, timeout: float) -> dict[str, Any]:
    """Wait until the camera's frames flow and, for `passthrough` ("passthrough", "jpeg passthrough"),
    the camera's own units are relayed (an H.264 camera joined mid-GOP starts at its next keyframe)."""
    deadline = time.monotonic() + timeout
    while True:
        state = status(server)
        relaying = state["passthrough"]
        ok = state.get("frames_captured", 0) >= 10
        if passthrough is not None:
            ok = ok and relaying["mode"] == passthrough and (
                relaying["keyframes"] >= 1 or relaying["jpegs_relayed"] >= 10)
        if ok:
            return state
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not stream its camera within {timeout:g} s: "
                               f"{state.get('source')}, {relaying}")
        time.sleep(0.1)


def running_encoders(state: dict[str, Any]) -> list[str]:
    return sorted(name for name, on in state.get("encoders", {}).items() if on)
