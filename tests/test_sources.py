"""Sources: the test pattern, video files that loop, a source that dies and comes back, `auto`."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import statistics
import threading
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from camcast.frames import Frame
from camcast.sources import SourceError, make_source
from camcast.sources.pacing import Pacer
from camcast.sources.supervisor import CaptureSupervisor
from conftest import StartServer
from support.mjpeg import Part, collect, open_mjpeg, rate_of
from support.server import ServerProcess
from support.video import looks_like_no_signal, read_frame_index
from support.waiting import eventually

FILE_FPS = 15  # the sample video's own rate


def test_test_pattern_frames() -> None:
    source = make_source("testpattern", 320, 240, 60, stamp=False)
    source.open()
    try:
        first, second = source.read(), source.read()
    finally:
        source.close()
    assert first is not None and second is not None
    assert first.shape == (240, 320, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, second), "the pattern moves"
    assert source.stamps, "the test pattern is always stamped"
    assert source.read() is None, "a closed source reads nothing"


def test_test_pattern_renders_below_half_a_frame_per_second() -> None:
    source = make_source("testpattern", 320, 240, 0.25, stamp=False)
    # The sweeping bar's period in frames must not round down to zero.
    assert all(source._render(n).shape == (240, 320, 3) for n in (1, 2))


async def test_a_slow_source_stays_healthy(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    # 0.5 fps: 2 s between frames, so neither the watchdog nor /healthz may count 2 s as lost.
    server = start_server("--fps", "0.5")
    started = time.monotonic()
    async with open_mjpeg(http, server.url + "video.mjpg") as reader:
        while time.monotonic() - started < 5.0:
            async with http.get(server.url + "healthz") as response:
                assert response.status == 200, f"unhealthy after {time.monotonic() - started:.1f} s"
            await asyncio.sleep(0.25)  # look again and again for 5 s: it never turns unhealthy
        parts = await collect(reader, 0.5)
    assert len(parts) >= 2, "frames flow"
    assert not any(looks_like_no_signal(part.image()) for part in parts)
    status = server.status()
    assert status["source_up"] is True and status["reconnects"] == 0


class _FirstReadWaits:
    """A source that opens at once but delivers its first frame only when released."""

    description = "slow starter"
    stamps = False

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def open(self) -> None:
        pass

    def read(self) -> np.ndarray | None:
        self.release.wait(10)
        time.sleep(0.02)
        return np.zeros((48, 64, 3), np.uint8)

    def close(self) -> None:
        pass


async def test_a_source_is_up_only_once_its_first_frame_arrives() -> None:
    release = threading.Event()
    frames: list[Frame] = []
    capture = CaptureSupervisor(lambda: _FirstReadWaits(release), frames.append, 64, 48, 10)
    capture.start()
    try:
        # Opened, but no frame yet: "no signal" pictures meanwhile (after a short grace), and not up.
        await eventually(lambda: len(frames) >= 3, 10, "\"no signal\" pictures")
        assert not capture.up and capture.last_frame_monotonic == 0.0
        assert not any(f.live for f in frames)
        release.set()
        await eventually(lambda: capture.up, 10, "the first frame to bring the source up")
        assert any(f.live for f in frames) and capture.last_frame_monotonic > 0
    finally:
        release.set()
        capture.stop()


def test_file_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        make_source(str(tmp_path / "missing.mp4"), 640, 480, 30, stamp=False).open()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 1000)
    with pytest.raises(SourceError):
        make_source(str(junk), 640, 480, 30, stamp=False).open()


def test_pacer_keeps_to_its_grid() -> None:
    fps = 100.0
    pacer = Pacer(fps)
    start = time.monotonic()
    ticks = []
    for i in range(40):
        pacer.wait()
        ticks.append(time.monotonic() - start)
        if i == 10:
            time.sleep(0.055)  # a slow frame: the pacer skips ahead instead of bunching up
    gaps = np.diff(ticks)
    # After the stall, no burst of back-to-back ticks to catch up.
    assert (gaps[12:] > 0.5 / fps).mean() >= 0.8
    # Deadlines stay t0 + n/fps: the run ends on the grid, not drifted by sleep overhead.
    phases = [(t * fps) % 1.0 for t in ticks[12:]]
    assert statistics.median(min(p, 1 - p) for p in phases) < 0.3


async def _watch(http: aiohttp.ClientSession, url: str, parts: list[Part], stop: asyncio.Event) -> None:
    async with open_mjpeg(http, url) as reader:
        while not stop.is_set():
            part = await asyncio.wait_for(reader.next_part(), 5)
            assert part is not None, "the MJPEG stream ended"
            parts.append(part)


async def _wait_health(http: aiohttp.ClientSession, server: ServerProcess, code: int, timeout: float) -> None:
    """Poll /healthz until it answers `code`."""
    async def health() -> int:
        async with http.get(server.url + "healthz") as response:
            return response.status

    await eventually(health, timeout, f"/healthz to answer {code}", until=lambda status: status == code)


async def _pictures(watcher: asyncio.Task[None], parts: list[Part], since: int, count: int,
                    what: str) -> list[Part]:
    """Wait until `count` pictures arrived after the first `since`; returns them all."""
    await eventually(lambda: watcher.done() or len(parts) - since >= count, 10, what)
    if watcher.done():
        watcher.result()  # raises what broke the stream
        raise AssertionError("the MJPEG stream ended")
    return parts[since:]


async def test_video_file_loops_at_its_own_rate(
    start_server: StartServer, sample_video: Path, http: aiohttp.ClientSession
) -> None:
    server = start_server("--source", str(sample_video), "--stamp")
    async with open_mjpeg(http, server.url + "video.mjpg") as reader:
        await collect(reader, 0.3)
        parts = await collect(reader, 3.0)
    indices = [read_frame_index(part.image()) for part in parts]
    assert all(part.image().shape == (240, 320, 3) for part in parts)
    assert max(indices) <= 29
    wraps = sum(1 for a, b in itertools.pairwise(indices) if b < a)
    assert wraps >= 1, f"the 2 s file did not loop within 3 s: {indices}"
    steps = [(b - a) % 30 for a, b in itertools.pairwise(indices)]
    assert statistics.median(steps) == 1, f"frames out of order: {indices}"
    rate = rate_of([part.header_time_us for part in parts])
    assert FILE_FPS * 0.8 <= rate <= FILE_FPS * 1.1, f"{rate:.1f} fps for a {FILE_FPS} fps file"
    # --stamp puts the capture time on file frames too.
    latencies_ms = [(part.received_us - part.stamp_us()) / 1000 for part in parts]
    assert statistics.median(latencies_ms) < 100
    status = server.status()
    assert status["source"] == str(sample_video)
    assert status["size"] == "320x240"
    assert status["source_up"] is True


async def test_a_source_that_dies_is_recovered(
    start_server: StartServer, sample_video: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    video = tmp_path / "camera.mp4"
    hidden = tmp_path / "camera.mp4.away"
    shutil.copy(sample_video, video)
    server = start_server("--source", str(video))
    parts: list[Part] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(http, server.url + "video.mjpg", parts, stop))
    try:
        playing = await _pictures(watcher, parts, 0, 3, "the first pictures")
        assert not looks_like_no_signal(playing[-1].image())

        # The open file plays to its end; looping then finds it gone and the source is lost.
        video.rename(hidden)
        await _wait_health(http, server, 503, timeout=6)
        # Viewers keep getting pictures while the source is down.
        down = await _pictures(watcher, parts, len(parts), 10, "pictures while the source is down")
        assert all(looks_like_no_signal(part.image()) for part in down[1:])
        status = server.status()
        assert status["source_up"] is False

        # Back again: the next retry (backoff 1 s, 2 s, 5 s ...) reopens it.
        hidden.rename(video)
        await _wait_health(http, server, 200, timeout=15)
        # The same MJPEG response carries on, with the source's pictures again.
        up = await _pictures(watcher, parts, len(parts), 5, "pictures once the source is back")
        assert not any(looks_like_no_signal(part.image()) for part in up[1:])
        assert {read_frame_index(part.image()) for part in up[1:]} <= set(range(30))
    finally:
        stop.set()
        await asyncio.wait_for(watcher, 10)
    status = server.status()
    assert status["source_up"] is True
    assert status["reconnects"] >= 1
    assert "source lost" in server.log()


async def test_auto_falls_back_to_the_test_pattern(start_server: StartServer) -> None:
    if Path("/dev/video0").exists():
        pytest.skip("this machine has a camera 0, so auto picks it")
    server = start_server(source="auto")
    status = server.status()
    assert status["source"] == "testpattern"
    assert "using the test pattern" in server.log()
    assert "testpattern" in server.stdout()
    assert server.get("snapshot.jpg")[0] == 200
