"""500 WebRTC and 500 MJPEG connect/disconnect cycles leave nothing behind.

Against the real server, the figures come from its /metrics: open file descriptors and resident
memory (process_*), threads and asyncio tasks (camcast_*). After a warm-up (first use of the
encoders, thread pools, allocator arenas) they are the baseline; after the cycles and a moment to
settle they must be back to it, within a small tolerance.

The WebRTC cycles run several aiortc clients at once in this process: offer (POST /offer, or
WHEP), connect, then go away in one of the ways clients do (close at once, close after the first
frame, WHEP DELETE). The MJPEG cycles read the first JPEG, then close cleanly or reset the
connection (SO_LINGER 0: an RST, as from a client that vanished).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from prometheus_client.parser import text_string_to_metric_families

from support.server import ServerProcess, launch
from support.waiting import eventually

pytestmark = pytest.mark.usefixtures("loopback_ice")

CYCLES = 500
WEBRTC_CONCURRENCY = 8
MJPEG_CONCURRENCY = 20
WARMUP = 40
# Allowed growth over the baseline once everything has settled.
TOLERANCE = {"process_open_fds": 4, "camcast_threads": 1, "camcast_asyncio_tasks": 3,
             "process_resident_memory_bytes": 40 * 1024 * 1024}


@pytest.fixture(scope="module")
def leak_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = launch(tmp_path_factory.mktemp("leaks"), ["--size", "160x120", "--fps", "15"])
    try:
        yield server
    finally:
        code, _ = server.terminate()
        assert code == 0, server.describe()
        assert "Traceback" not in server.log(), server.describe()


async def figures(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, float]:
    async with http.get(server.url + "metrics") as r:
        text = await r.text()
    return {family.name: family.samples[0].value for family in text_string_to_metric_families(text)
            if family.name in TOLERANCE}


async def mjpeg_joined(http: aiohttp.ClientSession, server: ServerProcess) -> float:
    async with http.get(server.url + "metrics") as r:
        text = await r.text()
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "camcast_viewers_joined"]
    return sum(s.value for s in family.samples if s.labels.get("kind") == "mjpeg")


async def status(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, Any]:
    async with http.get(server.url + "api/status") as r:
        return await r.json()


async def settle(http: aiohttp.ClientSession, server: ServerProcess, timeout: float = 20.0) -> None:
    """Wait until no viewer is left and the lazy encoders have stopped."""
    def idle(s: dict[str, Any]) -> bool:
        return (s["webrtc"]["peers"] == 0 and s["webrtc"]["negotiating"] == 0 and s["viewers"]["mjpeg"] == 0
                and s["viewers"]["webrtc"] == 0 and not any(s["encoders"].values()))

    await eventually(lambda: status(http, server), timeout, "no viewer and no encoder left", until=idle,
                     interval=0.2)


# -- one WebRTC viewer's life ---------------------------------------------------------------------
async def webrtc_cycle(http: aiohttp.ClientSession, base: str, n: int) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    via, ending = ("whep", "offer")[n % 2], ("close", "first-frame", "delete")[n % 3]
    try:
        pc.addTransceiver("video", direction="recvonly")
        if n % 4 < 2:
            pc.createDataChannel("control")
        loop = asyncio.get_running_loop()
        connected: asyncio.Future[str] = loop.create_future()
        track: asyncio.Future[MediaStreamTrack] = loop.create_future()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("connected", "failed") and not connected.done():
                connected.set_result(pc.connectionState)

        pc.on("track", lambda t: track.done() or track.set_result(t))
        await pc.setLocalDescription(await pc.createOffer())
        if via == "offer":
            async with http.post(base + "offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}) as r:
                assert r.status == 200, await r.text()
                answer, session = (await r.json())["sdp"], f"whep/{(await r.json())['id']}"
        else:
            async with http.post(base + "whep", data=pc.localDescription.sdp,
                                 headers={"Content-Type": "application/sdp"}) as r:
                assert r.status == 201, await r.text()
                answer, session = await r.text(), r.headers["Location"].lstrip("/")
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        assert await asyncio.wait_for(connected, 20) == "connected"
        if ending == "first-frame":
            await asyncio.wait_for((await track).recv(), 20)
        elif ending == "delete":
            async with http.delete(base + session) as r:
                assert r.status == 200
    finally:
        await pc.close()


# -- one MJPEG viewer's life ----------------------------------------------------------------------
async def mjpeg_cycle(port: int, n: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /video.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"\xff\xd9"), 20)  # the end of the first JPEG
        if n % 2:
            # Vanish with a reset instead of a goodbye.
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


async def run_cycles(count: int, concurrency: int, cycle: Callable[[int], Awaitable[None]]) -> float:
    limit = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with limit:
            await cycle(n)

    started = time.monotonic()
    await asyncio.gather(*(one(n) for n in range(count)))
    return time.monotonic() - started


async def test_connect_disconnect_cycles_leave_nothing_behind(leak_server: ServerProcess,
                                                              http: aiohttp.ClientSession) -> None:
    base, port = leak_server.url, leak_server.port

    async def webrtc(n: int) -> None:
        await webrtc_cycle(http, base, n)

    async def mjpeg(n: int) -> None:
        await mjpeg_cycle(port, n)

    await run_cycles(WARMUP, WEBRTC_CONCURRENCY, webrtc)
    await run_cycles(WARMUP, MJPEG_CONCURRENCY, mjpeg)
    await settle(http, leak_server)
    baseline = await figures(http, leak_server)
    joined = await mjpeg_joined(http, leak_server)

    webrtc_seconds = await run_cycles(CYCLES, WEBRTC_CONCURRENCY, webrtc)
    mjpeg_seconds = await run_cycles(CYCLES, MJPEG_CONCURRENCY, mjpeg)
    await settle(http, leak_server)

    def grown(now: dict[str, float]) -> dict[str, float]:
        return {k: now[k] - baseline[k] for k in TOLERANCE if now[k] - baseline[k] > TOLERANCE[k]}

    # Closing peers finish their last steps (timers, executor jobs) a moment after they are gone.
    after = await eventually(lambda: figures(http, leak_server), 10,
                             f"the figures back within {TOLERANCE} of {baseline}",
                             until=lambda now: not grown(now), interval=0.5)
    mb = 1024 * 1024
    print(f"\n{CYCLES} WebRTC cycles in {webrtc_seconds:.1f} s, "
          f"{CYCLES} MJPEG cycles in {mjpeg_seconds:.1f} s; "
          f"fds {baseline['process_open_fds']:.0f} -> {after['process_open_fds']:.0f}, "
          f"threads {baseline['camcast_threads']:.0f} -> {after['camcast_threads']:.0f}, "
          f"tasks {baseline['camcast_asyncio_tasks']:.0f} -> {after['camcast_asyncio_tasks']:.0f}, "
          f"RSS {baseline['process_resident_memory_bytes'] / mb:.0f} -> "
          f"{after['process_resident_memory_bytes'] / mb:.0f} MB")

    s = await status(http, leak_server)
    assert s["webrtc"]["sessions_total"] == CYCLES + WARMUP
    assert await mjpeg_joined(http, leak_server) - joined == CYCLES
    assert "did not close cleanly" not in leak_server.log()
