"""MJPEG, snapshot, status and shutdown against the real server with the test pattern (640x480 at 30 fps).

Rates use generous bounds (the machine is shared and noisy); the stamp in every picture gives
its capture time, so rates and gaps are measured from the source's own clock.
"""

from __future__ import annotations

import asyncio
import cmath
import itertools
import math
import re
import socket
import statistics
from collections.abc import Callable

import aiohttp
import cv2
import numpy as np
import pytest

from camcast.encoding.jpeg import SharedJpegEncoder
from camcast.frames import Frame, JpegPart, now_us
from camcast.hub import Hub
from camcast.mjpeg import MjpegClient
from camcast.stamp import read_stamp
from conftest import StartServer
from support.mjpeg import MjpegReader, Part, collect, coverage, open_mjpeg, rate_of
from support.server import ServerProcess
from support.waiting import eventually

FPS = 30.0
MIN_FPS = 25.0  # for a 30 fps target


async def _get_json(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def _status(http: aiohttp.ClientSession, server: ServerProcess) -> dict:
    return await _get_json(http, server.url + "api/status")


async def _wait_status(http: aiohttp.ClientSession, server: ServerProcess,
                       check: Callable[[dict], bool], what: str, timeout: float = 10.0) -> dict:
    """Poll /api/status until `check` holds; fails with the last status."""
    return await eventually(lambda: _status(http, server), timeout, what, until=check)


async def _warm_parts(reader: MjpegReader, seconds: float, warmup: float = 0.5) -> list[Part]:
    await collect(reader, warmup)
    return await collect(reader, seconds)


async def test_stream_headers_parts_and_stamps(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(server.url + "video.mjpg") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        assert "no-cache" in response.headers["Cache-Control"]
        reader = MjpegReader(response.content, "frame")
        parts = await _warm_parts(reader, 2.0)
    assert len(parts) >= 2 * MIN_FPS * 0.9
    latencies_ms = []
    previous = 0
    for part in parts:
        assert part.headers["content-type"] == "image/jpeg"
        assert int(part.headers["content-length"]) == len(part.body)
        image = part.image()
        assert image.shape == (480, 640, 3)
        stamp = read_stamp(image)
        assert abs(stamp - part.header_time_us) <= 1, "X-Timestamp must be the stamped capture time"
        assert stamp > previous, "capture times must increase"
        previous = stamp
        latencies_ms.append((part.received_us - stamp) / 1000)
    # Same clock on both ends: the stamp is a moment just before the part arrived.
    assert min(latencies_ms) > -5, latencies_ms
    assert statistics.median(latencies_ms) < 100, latencies_ms
    assert max(latencies_ms) < 1000, latencies_ms
    stamps = [part.header_time_us for part in parts]
    assert rate_of(stamps) >= MIN_FPS
    assert len(parts) / ((parts[-1].received_us - parts[0].received_us) / 1e6) >= MIN_FPS


def test_opencv_reads_the_stream(server: ServerProcess) -> None:
    capture = cv2.VideoCapture(server.url + "video.mjpg")
    try:
        assert capture.isOpened(), "OpenCV could not open the MJPEG URL"
        stamps = []
        for _ in range(20):
            ok, image = capture.read()
            assert ok and image is not None
            assert image.shape == (480, 640, 3)
            stamps.append(read_stamp(image))
    finally:
        capture.release()
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert abs(now_us() - stamps[-1]) < 2_000_000  # OpenCV buffers a little; still live


async def test_twenty_clients_all_get_the_full_rate(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    async def watch() -> list[int]:
        async with open_mjpeg(http, server.url + "video.mjpg") as reader:
            parts = await _warm_parts(reader, 2.5, warmup=1.0)
        return [part.header_time_us for part in parts]

    watchers = [asyncio.create_task(watch()) for _ in range(20)]
    await _wait_status(http, server, lambda s: s["viewers"]["mjpeg"] == 20, "20 MJPEG viewers")
    results = await asyncio.gather(*watchers)
    for i, stamps in enumerate(results):
        assert rate_of(stamps) >= MIN_FPS, f"client {i}: {rate_of(stamps):.1f} fps"
        assert coverage(stamps, FPS) >= 0.9, f"client {i} missed frames: {coverage(stamps, FPS):.2f}"
    await _wait_status(http, server, lambda s: s["viewers"]["mjpeg"] == 0, "no MJPEG viewer left")


_TIMESTAMP = re.compile(rb"X-Timestamp: ([0-9]+\.[0-9]{6})\r\n")


async def test_a_client_that_never_reads_does_not_slow_the_others(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    # Big frames fill the socket buffers of the stalled client within a second or two.
    server = start_server("--size", "1280x720")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(stalled, ("127.0.0.1", server.port))
    request = f"GET /video.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n"
    await loop.sock_sendall(stalled, request.encode())
    try:
        async with open_mjpeg(http, server.url + "video.mjpg") as reader:
            await collect(reader, 2.0)  # meanwhile the stalled client's buffers fill up
            parts = await collect(reader, 3.0)
        stamps = [part.header_time_us for part in parts]
        assert rate_of(stamps) >= MIN_FPS, f"{rate_of(stamps):.1f} fps next to a stalled client"
        assert coverage(stamps, FPS) >= 0.9
        status = await _status(http, server)
        assert status["viewers"]["mjpeg"] == 2
        assert status["fps"] >= MIN_FPS

        # When the stalled client reads again it gets what was buffered, then a jump to live
        # pictures: the server skipped frames for it instead of queueing them.
        stall_ended_us = now_us()
        stalled_reader, writer = await asyncio.open_connection(sock=stalled)
        seen: list[int] = []
        data = b""
        live_at: int | None = None
        deadline = loop.time() + 5
        while live_at is None and loop.time() < deadline:
            chunk = await asyncio.wait_for(stalled_reader.read(1 << 16), 5)
            assert chunk, "the stalled client's stream ended"
            data += chunk
            found = [round(float(m) * 1e6) for m in _TIMESTAMP.findall(data)]
            data = data[-200:]
            for stamp in found:
                if not seen or stamp != seen[-1]:
                    seen.append(stamp)
                if stamp >= stall_ended_us - 300_000:
                    live_at = stamp
        writer.close()
    finally:
        stalled.close()
    assert live_at is not None, "the stalled client never caught up with live pictures"
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert max(gaps) > 1_000_000, "a stalled client must lose frames, not queue them"


async def test_snapshot_is_the_newest_frame(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    async def snapshot() -> int:
        """One snapshot, checked; returns its capture time."""
        async with http.get(server.url + "snapshot.jpg") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "image/jpeg"
            assert "no-cache" in response.headers["Cache-Control"]
            body = await response.read()
            received = now_us()
        assert body.startswith(b"\xff\xd8") and body.endswith(b"\xff\xd9")
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (480, 640, 3)
        stamp = read_stamp(image)
        assert abs(stamp - round(float(response.headers["X-Timestamp"]) * 1e6)) <= 1
        assert 0 <= received - stamp < 500_000
        return stamp

    first = await snapshot()
    # Asked again, it shows a later frame once there is one (never an older one).
    later = await eventually(snapshot, 5, "a snapshot of a newer frame", until=lambda stamp: stamp != first)
    assert later > first
    # A snapshot does not start the shared MJPEG encoder.
    assert (await _status(http, server))["encoders"]["jpeg"] is False


async def test_concurrent_snapshots_of_one_frame_cost_one_encode() -> None:
    frames: Hub[Frame] = Hub("frames")
    encoder = SharedJpegEncoder(frames, Hub("jpeg"), 80)
    try:
        frames.publish(Frame(np.zeros((480, 640, 3), np.uint8), 1, now_us()))
        parts = await asyncio.gather(*(encoder.snapshot() for _ in range(20)))
        assert encoder.frames_encoded == 1
        assert all(part is parts[0] for part in parts)
        assert await encoder.snapshot() is parts[0]  # polled again before a new frame: no encode
        frames.publish(Frame(np.zeros((480, 640, 3), np.uint8), 2, now_us()))
        part = await encoder.snapshot()
        assert part is not None and part.seq == 2 and encoder.frames_encoded == 2
    finally:
        await encoder.close()


class _Socket:
    """Just enough of a transport for MjpegClient.send: a send buffer that is full or empty."""

    def __init__(self) -> None:
        self.pending = 0
        self.written: list[bytes] = []

    def get_write_buffer_size(self) -> int:
        return self.pending

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        pass


async def test_fps_query_schedules_from_frames_written_not_skipped() -> None:
    sock = _Socket()
    client = MjpegClient(sock, 1.0, chunked=False)  # type: ignore[arg-type]
    part = JpegPart(b"jpeg", b"part", b"chunk", 1, now_us())
    sock.pending = 1
    assert client.send(part, 100.0) == -1  # busy: skipped
    sock.pending = 0
    # Free again a moment later: this frame goes out, not one a whole interval later.
    assert client.send(part, 100.1) == len(part.chunk)
    assert client.send(part, 100.5) == 0  # then ?fps=1 holds the next one back
    assert client.send(part, 101.1) > 0
    assert sock.written == [b"part", b"part"]


async def test_fps_query_caps_one_clients_rate(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    async def watch(query: str) -> list[Part]:
        async with open_mjpeg(http, server.url + "video.mjpg" + query) as reader:
            return await _warm_parts(reader, 3.0, warmup=0.6)

    capped, full = await asyncio.gather(watch("?fps=5"), watch(""))
    rate = len(capped) / 3.0
    assert 3.5 <= rate <= 5.7, f"?fps=5 gave {rate:.1f} fps"
    assert rate_of([p.header_time_us for p in full]) >= MIN_FPS, "a capped client must not slow others"


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1e9", "nan", "inf"])
async def test_bad_fps_query_is_a_400(server: ServerProcess, http: aiohttp.ClientSession, value: str) -> None:
    async with http.get(server.url + "video.mjpg", params={"fps": value}) as response:
        assert response.status == 400
        assert "fps" in await response.text()


async def test_status_viewers_and_the_lazy_jpeg_encoder(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    # The meter needs a moment after startup to settle on a sliding window of frames.
    status = await _wait_status(http, server, lambda s: MIN_FPS <= s["fps"] <= FPS * 1.2,
                                f"a frame rate of {MIN_FPS:g} to {FPS * 1.2:g} fps")
    assert status["source"] == "testpattern"
    assert status["source_up"] is True
    assert (status["size"], status["width"], status["height"]) == ("640x480", 640, 480)
    assert status["fps_target"] == FPS
    assert status["uptime"] > 0
    assert status["viewers"]["mjpeg"] == 0 and status["viewers"]["webrtc"] == 0
    assert status["encoders"]["jpeg"] is False, "nobody watches: the JPEG encoder must be idle"

    async with open_mjpeg(http, server.url + "video.mjpg") as reader:
        assert await reader.next_part() is not None
        status = await _status(http, server)
        assert status["viewers"]["mjpeg"] == 1
        assert status["encoders"]["jpeg"] is True
        async with open_mjpeg(http, server.url + "video.mjpg") as second:
            assert await second.next_part() is not None
            assert (await _status(http, server))["viewers"]["mjpeg"] == 2
        await _wait_status(http, server, lambda s: s["viewers"]["mjpeg"] == 1, "one MJPEG viewer left")

    await _wait_status(http, server, lambda s: s["viewers"]["mjpeg"] == 0, "no MJPEG viewer left")
    # The encoder lingers briefly for a quick reconnect, then stops.
    later = await _wait_status(http, server, lambda s: not s["encoders"]["jpeg"], "the JPEG encoder to stop")
    assert later["uptime"] > status["uptime"], "the uptime counts"


async def test_sigterm_with_a_client_open_exits_quickly(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    async with open_mjpeg(http, server.url + "video.mjpg") as reader:
        assert len(await collect(reader, 0.5)) > 0
        # Keep reading while the server shuts down: the endless response must end cleanly,
        # between parts, rather than hang or be cut short.
        reading = asyncio.create_task(collect(reader, 3.0))
        code, seconds = await asyncio.to_thread(server.terminate)
        rest = await reading
        assert await reader.next_part() is None
    assert code == 0, server.log()
    assert seconds < 2.0, f"took {seconds:.2f} s to exit"
    assert len(rest) < FPS * 2


def _phase_residuals(stamps: list[int], fps: float) -> list[float]:
    """Each capture time's offset from a fixed grid of 1/fps ticks, in ticks (-0.5..0.5)."""
    interval = 1e6 / fps
    phases = [(s - stamps[0]) / interval for s in stamps]
    mean = sum(cmath.exp(2j * math.pi * p) for p in phases)
    offset = cmath.phase(mean) / (2 * math.pi)
    return [(p - offset + 0.5) % 1.0 - 0.5 for p in phases]


async def test_test_pattern_is_paced_without_drift(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    async with open_mjpeg(http, server.url + "video.mjpg") as reader:
        parts = await _warm_parts(reader, 4.0)
    stamps = [part.header_time_us for part in parts]
    span = (stamps[-1] - stamps[0]) / 1e6
    ticks = span * FPS + 1
    # Never faster than asked; on a busy machine a late frame is skipped, so a little slower at worst.
    assert len(stamps) <= ticks + 1
    assert len(stamps) >= 0.9 * ticks
    # Drift-free pacing keeps every capture on one grid of 1/fps ticks (a pacer that sleeps a
    # fixed interval after each frame slides along it and spreads the residuals evenly).
    residuals = _phase_residuals(stamps, FPS)
    on_grid = sum(abs(r) < 0.2 for r in residuals) / len(residuals)
    assert on_grid >= 0.8, f"only {on_grid:.0%} of frames on the 1/fps grid"
