"""Capture on demand: an idle camera holds no capture thread, wakes for its first viewer and closes after
the last one leaves; an always-on camera next to it is unaffected.

One server serves the module: camera a is always on (320x240), camera b on demand (480x360,
idle_timeout 1 s). Encoders linger 2 s after their last subscriber, so b closes about 3 s after a
viewer leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator

import aiohttp
import pytest

from camcast.frames import now_us
from camcast.stamp import read_stamp
from support.cameras import (
    camera_status,
    cameras,
    capture_threads,
    decode_jpeg,
    ladder_sizes,
    serving,
    size_of,
    wait_capture_threads,
    wait_state,
    write_config,
)
from support.mjpeg import open_mjpeg
from support.server import ServerProcess
from support.waiting import eventually
from support.webrtc_viewer import Viewer
from test_recorder import read_recording

pytestmark = pytest.mark.usefixtures("loopback_ice")

IDLE_TIMEOUT = 1
CLOSES_AFTER = 2 + IDLE_TIMEOUT  # s after the last viewer leaves: the encoders' linger, then idle_timeout
CLOSE_WAIT = CLOSES_AFTER + 5.0  # room for a busy machine
FIRST_FRAME_LIMIT = 2.0  # s; generous (bench/ measures it)
ALWAYS_ON_THREADS = 2  # camera a: one capture thread and one "no signal" ticker
OPENING = "camera b: opening the source for a viewer"
CLOSING = f"camera b: idle for {IDLE_TIMEOUT} s, closing the source"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("on-demand")
    config = write_config(workdir / "cameras.toml", {
        "a": {"source": "testpattern", "size": "320x240"},
        "b": {"source": "testpattern", "size": "480x360", "on_demand": True, "idle_timeout": IDLE_TIMEOUT},
    })
    with serving(workdir / "server", ["--config", str(config)]) as server:
        yield server


async def wait_idle(server: ServerProcess) -> None:
    """Camera b has closed its source (any viewer of an earlier test has gone), a still captures."""
    await wait_state(server, "b", "idle", timeout=CLOSE_WAIT)
    await wait_capture_threads(server.pid, ALWAYS_ON_THREADS)


def opens(server: ServerProcess) -> int:
    return int(camera_status(server, "b")["source_opens"])


async def wait_log(server: ServerProcess, line: str, count: int, timeout: float = 5.0) -> None:
    await eventually(lambda: server.log().count(line) >= count, timeout, f"{line!r} logged {count} times")


async def assert_closes(server: ServerProcess, closes_before: int) -> None:
    """After the last viewer left: idle again, no capture thread of b left, and the log says so."""
    await wait_state(server, "b", "idle", timeout=CLOSE_WAIT)
    await wait_capture_threads(server.pid, ALWAYS_ON_THREADS)
    await wait_log(server, CLOSING, closes_before + 1)
    status = camera_status(server, "b")
    assert (status["state"], status["source_up"], status["encoders"]["jpeg"]) == ("idle", False, False)


async def test_an_idle_camera_holds_no_capture_thread_and_is_healthy(server: ServerProcess) -> None:
    await wait_idle(server)
    listing = cameras(server)
    assert (listing["b"]["state"], listing["b"]["up"], listing["b"]["on_demand"]) == ("idle", False, True)
    assert (listing["a"]["state"], listing["a"]["on_demand"]) == ("up", False)
    assert capture_threads(server.pid) == ALWAYS_ON_THREADS, "only the always-on camera captures"
    code, _, body = server.get("healthz")
    assert (code, body.decode().splitlines()) == (200, ["ok", "a: up", "b: idle"])
    code, _, body = server.get("cameras/b/healthz")
    assert (code, body) == (200, b"idle\n")
    status = camera_status(server, "b")
    assert status["viewers"] == {"webrtc": 0, "mjpeg": 0} and status["recording"]["state"] == "stopped"


async def test_an_mjpeg_client_wakes_it_and_the_source_closes_after_it_leaves(
        server: ServerProcess, http: aiohttp.ClientSession) -> None:
    await wait_idle(server)
    opened, closed = opens(server), server.log().count(CLOSING)
    asked, started = now_us(), time.monotonic()
    async with open_mjpeg(http, server.url + "cameras/b/video.mjpg") as reader:
        first = await reader.next_part()
        waited = time.monotonic() - started
        assert first is not None
        assert waited < FIRST_FRAME_LIMIT, f"first frame after {waited:.2f} s"
        assert size_of(first.image()) == (480, 360)
        assert first.stamp_us() > asked, "a picture from after the request, none kept from before"
        await wait_state(server, "b", "up")
        await wait_capture_threads(server.pid, ALWAYS_ON_THREADS + 2)
        assert opens(server) == opened + 1
        await wait_log(server, OPENING, opened + 1)
        for _ in range(5):  # it keeps streaming
            assert await reader.next_part() is not None
    await assert_closes(server, closed)
    assert opens(server) == opened + 1


async def test_a_snapshot_of_an_idle_camera_is_a_fresh_picture(server: ServerProcess) -> None:
    await wait_idle(server)
    opened, closed = opens(server), server.log().count(CLOSING)
    asked = now_us()
    code, headers, body = await asyncio.to_thread(server.get, "cameras/b/snapshot.jpg")
    assert code == 200 and headers["Content-Type"] == "image/jpeg"
    image = decode_jpeg(body)
    assert size_of(image) == (480, 360)
    assert read_stamp(image) > asked, "a picture from after the request"
    assert opens(server) == opened + 1
    await assert_closes(server, closed)


async def test_a_webrtc_peer_wakes_it(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    await wait_idle(server)
    opened, closed = opens(server), server.log().count(CLOSING)
    viewer = Viewer(server.url + "cameras/b/", control=False)
    try:
        await viewer.connect(http)
        frames = await viewer.wait_frames(10)
        assert frames[0].key and (frames[0].width, frames[0].height) == (480, 360)
        assert {(f.width, f.height) for f in frames} <= ladder_sizes(480, 360)
        listing = await wait_state(server, "b", "up")
        assert listing["b"]["viewers"]["webrtc"] == 1
        assert opens(server) == opened + 1
    finally:
        await viewer.close()
    await assert_closes(server, closed)


async def test_a_recording_keeps_it_open_while_it_runs(server: ServerProcess,
                                                       http: aiohttp.ClientSession) -> None:
    await wait_idle(server)
    opened, closed = opens(server), server.log().count(CLOSING)
    async with http.post(server.url + "cameras/b/api/record/start") as r:
        assert r.status == 200, await r.text()
        name = (await r.json())["name"]
    try:
        await wait_state(server, "b", "up")
        # Nobody watches: only the recording holds the source, for longer than it would linger.
        watch_until = time.monotonic() + CLOSES_AFTER + 1
        while time.monotonic() < watch_until:
            assert cameras(server)["b"]["state"] == "up"
            assert capture_threads(server.pid) == ALWAYS_ON_THREADS + 2
            await asyncio.sleep(0.2)
    finally:
        async with http.post(server.url + "cameras/b/api/record/stop") as r:
            assert r.status == 200
            stopped = await r.json()
    assert opens(server) == opened + 1, "the source stayed open the whole time"
    assert stopped["name"] == name and stopped["frames"] >= 30
    rec = read_recording(server.recordings / "b" / name, stamps=False)
    assert (rec.width, rec.height) == (480, 360) and len(rec.times) == stopped["frames"]
    await assert_closes(server, closed)


async def test_the_always_on_camera_is_unaffected(server: ServerProcess,
                                                  http: aiohttp.ClientSession) -> None:
    await wait_idle(server)
    closed = server.log().count(CLOSING)
    async with open_mjpeg(http, server.url + "cameras/a/video.mjpg") as stream_a:
        first = await stream_a.next_part()
        assert first is not None
        parts = [first]

        async def watch_a() -> None:
            while (part := await stream_a.next_part()) is not None:
                parts.append(part)

        watching = asyncio.get_running_loop().create_task(watch_a())
        try:
            # Camera b opens for a snapshot and closes again while a streams.
            woke = now_us()
            code, _, _ = await asyncio.to_thread(server.get, "cameras/b/snapshot.jpg")
            assert code == 200
            await assert_closes(server, closed)
            closed_at = now_us()
            await eventually(lambda: parts[-1].stamp_us() > closed_at, 5,
                             "a picture of camera a from after b closed")
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
    stamps = [p.stamp_us() for p in parts]
    gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(stamps)]
    assert stamps[0] < woke and max(gaps) < 1.0, f"camera a's stream stalled for {max(gaps):.2f} s"
    assert {size_of(p.image()) for p in parts} == {(320, 240)}
    a = camera_status(server, "a")
    assert (a["state"], a["source_opens"], a["reconnects"]) == ("up", 1, 0)
