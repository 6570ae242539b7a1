"""On-demand cameras: time a viewer's MJPEG request on an idle camera to its first frame, and hold
every camera awake at once (to show the thread census sees capture threads when there are some).

Each sample waits until /api/cameras says the camera is idle, then connects and times the request to
the last byte of the first part; the frame's stamp says when it was captured, so a frame captured
before the request (a stale one, not a woken camera) is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from bench.mjpeg_load import decode_stamp_us
from bench.mjpeg_parse import MjpegParser

_READ = 64 * 1024


@dataclass
class WakeSample:
    camera: str
    ms: float = math.nan  # request (before connect) to the last byte of the first part
    captured_after_request_ms: float = math.nan  # the first frame's stamp minus the request's wall time
    waited_idle_ms: float = 0.0  # how long the camera took to be idle before the request
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _request(host: str, port: int, path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: camcast-bench\r\n"
            "Accept: */*\r\n\r\n").encode()


class MjpegViewer:
    """One MJPEG reader: connect, read parts (the first one's bytes kept), close."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self._host, self._port, self._path = host, port, path
        self.first: bytes | None = None
        self.parts = 0
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._parser = MjpegParser(self._on_part, lambda: self.first is None)

    def _on_part(self, jpeg: bytes | None) -> None:
        self.parts += 1
        if self.first is None and jpeg is not None:
            self.first = jpeg

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        self._writer.write(_request(self._host, self._port, self._path))

    async def read_until(self, parts: int) -> None:
        assert self._reader is not None
        while self.parts < parts:
            data = await self._reader.read(_READ)
            if not data:
                raise ConnectionError("closed before a frame")
            self._parser.feed(memoryview(data))

    async def drain_forever(self) -> None:
        """Keep reading (so the server keeps sending) until cancelled or closed."""
        with contextlib.suppress(ConnectionError):
            await self.read_until(2**62)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()


async def _wait_idle(http: aiohttp.ClientSession, base: str, camera: str, timeout: float) -> float:
    """Poll /api/cameras until `camera` is idle; returns the seconds waited."""
    started = time.monotonic()
    while True:
        async with http.get(f"{base}/api/cameras") as response:
            states = {c["name"]: c["state"] for c in await response.json()}
        if states[camera] == "idle":
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{camera} still {states[camera]} after {timeout:g} s")
        await asyncio.sleep(0.05)


async def _sample(host: str, port: int, camera: str, timeout: float) -> WakeSample:
    sample = WakeSample(camera)
    viewer = MjpegViewer(host, port, f"/cameras/{camera}/video.mjpg")
    wall, started = time.time(), time.monotonic()
    try:
        await asyncio.wait_for(viewer.open(), timeout)
        await asyncio.wait_for(viewer.read_until(1), timeout)
        sample.ms = (time.monotonic() - started) * 1000.0
        assert viewer.first is not None
        sample.captured_after_request_ms = decode_stamp_us(viewer.first) / 1000.0 - wall * 1000.0
    except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
        sample.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        await viewer.close()
    return sample


async def wake_samples(host: str, port: int, cameras: Sequence[str], rounds: int,
                       idle_wait: float, timeout: float = 10.0) -> list[WakeSample]:
    """`rounds` passes over the cameras, waking each in turn once it is idle again."""
    out: list[WakeSample] = []
    base = f"http://{host}:{port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for _ in range(rounds):
            for camera in cameras:
                try:
                    waited = await _wait_idle(http, base, camera, idle_wait)
                except (TimeoutError, aiohttp.ClientError) as exc:
                    out.append(WakeSample(camera, error=f"not idle: {exc}"[:200]))
                    continue
                sample = await _sample(host, port, camera, timeout)
                sample.waited_idle_ms = waited * 1000.0
                out.append(sample)
    return out


async def hold_awake(host: str, port: int, cameras: Sequence[str], seconds: float,
                     measure: Callable[[], Any], timeout: float = 10.0) -> tuple[Any, Any, int]:
    """One MJPEG reader per camera; once every one has its first frame, `measure()` is called, again
    after `seconds`; returns both results and how many readers got a frame."""
    viewers = [MjpegViewer(host, port, f"/cameras/{c}/video.mjpg") for c in cameras]
    readers: list[asyncio.Task[None]] = []
    try:
        await asyncio.wait_for(asyncio.gather(*(v.open() for v in viewers)), timeout)
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(asyncio.gather(*(v.read_until(1) for v in viewers)), timeout)
        readers = [asyncio.create_task(v.drain_forever()) for v in viewers]
        before = measure()
        await asyncio.sleep(seconds)
        after = measure()
        return before, after, sum(1 for v in viewers if v.first is not None)
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
