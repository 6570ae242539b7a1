"""Helpers for servers with several cameras: a config file, the camera list, and capture threads."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from support.server import ServerProcess, launch
from support.waiting import eventually

# The supervisor's thread names as /proc shows them (the kernel keeps 15 characters).
CAPTURE_THREAD = "camcast-capture"
TICKER_THREAD = "camcast-no-sign"

Cameras = dict[str, dict[str, Any]]


def write_config(path: Path, cameras: Mapping[str, Mapping[str, object]]) -> Path:
    """A TOML --config file with one [cameras.NAME] table per camera, in the given order."""
    lines = []
    for name, options in cameras.items():
        lines.append(f"[cameras.{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in options.items()]  # JSON scalars are TOML
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@contextlib.contextmanager
def serving(workdir: Path, args: Sequence[str]) -> Iterator[ServerProcess]:
    """Like support.server.running, without --source (it would add a camera named `default`)."""
    server = launch(workdir, args, source=None)
    try:
        yield server
    finally:
        code, _ = server.terminate()
        assert code == 0, server.describe()
        assert "Traceback" not in server.log(), server.describe()


def cameras(server: ServerProcess) -> Cameras:
    """GET /api/cameras as {name: entry}, in the server's order."""
    code, _, body = server.get("api/cameras")
    assert code == 200, body
    return {camera["name"]: camera for camera in json.loads(body)}


def camera_status(server: ServerProcess, name: str) -> dict[str, Any]:
    code, _, body = server.get(f"cameras/{name}/api/status")
    assert code == 200, body
    return json.loads(body)


async def wait_cameras(server: ServerProcess, check: Callable[[Cameras], bool], what: str,
                       timeout: float = 10.0) -> Cameras:
    """Poll /api/cameras until `check` holds; the assertion shows the last list."""
    result: Cameras = await eventually(lambda: asyncio.to_thread(cameras, server), timeout, what,
                                       until=check)
    return result


async def wait_state(server: ServerProcess, name: str, state: str, timeout: float = 10.0) -> Cameras:
    return await wait_cameras(server, lambda c: c[name]["state"] == state,
                              f"camera {name} to be {state}", timeout)


def thread_names(pid: int) -> Counter[str]:
    """How many threads of the process carry each name (/proc/<pid>/task/*/comm)."""
    names: Counter[str] = Counter()
    for comm in Path(f"/proc/{pid}/task").glob("*/comm"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that just ended
            names[comm.read_text().strip()] += 1
    return names


def capture_threads(pid: int) -> int:
    """Capture and "no signal" ticker threads in the process (each open source has one of each)."""
    names = thread_names(pid)
    return names[CAPTURE_THREAD] + names[TICKER_THREAD]


async def wait_capture_threads(pid: int, count: int, timeout: float = 10.0) -> None:
    await eventually(lambda: thread_names(pid), timeout, f"{count} capture threads (threads by name)",
                     until=lambda names: names[CAPTURE_THREAD] + names[TICKER_THREAD] == count)


def decode_jpeg(body: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, f"not a JPEG ({len(body)} bytes, starts {body[:4]!r})"
    return image


def size_of(image: np.ndarray) -> tuple[int, int]:
    """(width, height) of a decoded picture."""
    return image.shape[1], image.shape[0]


def ladder_sizes(width: int, height: int) -> set[tuple[int, int]]:
    """Sizes a WebRTC viewer of a camera may get: the capture size, or a rendition at a half or a
    quarter of it (a viewer starts on the first and moves down when its link falters)."""
    return {(width // d, height // d) for d in (1, 2, 4)}
