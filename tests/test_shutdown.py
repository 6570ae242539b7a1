"""SIGTERM under load: 20 WebRTC peers, 50 MJPEG clients and a recording open.

The server must exit (status 0) within 3 s, with the recording finalized and playable, every
MJPEG response ended, and no traceback in its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import aiohttp
import av
import pytest

from support.server import ServerProcess
from support.webrtc_viewer import Viewer

pytestmark = pytest.mark.usefixtures("loopback_ice")

PEERS = 20
MJPEG_CLIENTS = 50
EXIT_WITHIN = 3.0


async def mjpeg_client(port: int, first: asyncio.Event) -> int:
    """Read /video.mjpg until the server ends it; returns the bytes read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /video.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        total = 0
        while chunk := await reader.read(65536):
            total += len(chunk)
            if b"\xff\xd9" in chunk:
                first.set()
        return total
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_sigterm_with_peers_mjpeg_clients_and_a_recording(
        start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession) -> None:
    server = start_server("--size", "320x240", "--fps", "15", "--max-peers", str(PEERS))
    viewers = [Viewer(server.url, read_stamps=False, control=i % 2 == 0) for i in range(PEERS)]
    mjpeg_started = [asyncio.Event() for _ in range(MJPEG_CLIENTS)]
    mjpeg = [asyncio.create_task(mjpeg_client(server.port, e)) for e in mjpeg_started]
    try:
        for start in range(0, PEERS, 5):
            await asyncio.gather(*(v.connect(http, via=("offer", "whep")[i % 2])
                                   for i, v in enumerate(viewers[start : start + 5])))
        await asyncio.gather(*(v.wait_frames(1, timeout=20) for v in viewers))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in mjpeg_started)), 20)
        async with http.post(server.url + "api/record/start") as r:
            assert r.status == 200, await r.text()
            recording = await r.json()
        status = server.status()
        assert status["webrtc"]["peers"] == PEERS and status["viewers"]["mjpeg"] == MJPEG_CLIENTS
        assert status["recording"]["state"] == "recording"
        await asyncio.sleep(2.0)  # all of them at work for 2 s (the recording's length is checked below)

        code, seconds = await asyncio.to_thread(server.terminate)
        print(f"\nSIGTERM with {PEERS} peers, {MJPEG_CLIENTS} MJPEG clients and a recording: "
              f"exited in {seconds:.2f} s")
        assert code == 0, server.describe()
        assert seconds < EXIT_WITHIN, server.describe()
        # Every MJPEG response came to an end (the clients saw EOF), none hangs.
        done, pending = await asyncio.wait(mjpeg, timeout=5)
        assert not pending and all(task.exception() is None for task in done)
    finally:
        for task in mjpeg:
            task.cancel()
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)

    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    assert f"closing {PEERS} WebRTC peer" in log
    # The recording was finalized: it opens, decodes from a keyframe, and holds about 2 s of video.
    path = server.recordings / recording["name"]
    started = time.monotonic()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        duration = (container.duration or 0) / 1e6
    assert frames and frames[0].key_frame and (frames[0].width, frames[0].height) == (320, 240)
    assert 1.5 <= duration <= 4.0 and len(frames) >= 15, (duration, len(frames))
    assert b"mfro" in path.read_bytes()[-16:], "the fragmented MP4 index is written at the end"
    assert time.monotonic() - started < 10
