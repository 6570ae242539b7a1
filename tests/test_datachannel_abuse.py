"""The `control` data channel under abuse: odd messages, huge ones, and a flood from one peer.

Every bad message gets an `error` reply, a flood is rate-limited (one "rate limited" error a
second, not one per message), and another peer's round trips and video carry on meanwhile.
Real aiortc peers over loopback against the real server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from camcast.control import ControlBus
from support.server import ServerProcess, running
from support.waiting import eventually
from support.webrtc_viewer import Viewer

pytestmark = pytest.mark.usefixtures("loopback_ice")

MakeViewer = Callable[..., Viewer]
RATE, BURST = 50, 100  # the server's per-peer limit (camcast.webrtc.channel)


@pytest.fixture(scope="module")
def dc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(tmp_path_factory.mktemp("datachannel"), ["--size", "320x240"]) as server:
        yield server


@pytest_asyncio.fixture
async def viewer() -> AsyncIterator[MakeViewer]:
    made: list[Viewer] = []

    def make(url: str, **options: Any) -> Viewer:
        made.append(Viewer(url, read_stamps=False, **options))
        return made[-1]

    yield make
    await asyncio.gather(*(v.close() for v in made), return_exceptions=True)


async def connected(make: MakeViewer, server: ServerProcess, http: aiohttp.ClientSession) -> Viewer:
    v = make(server.url)
    await v.connect(http)
    await v.wait_open()
    await v.next_message(skip=())  # the greeting (record state) comes first
    return v


async def session_of(http: aiohttp.ClientSession, server: ServerProcess, v: Viewer) -> dict[str, Any]:
    async with http.get(server.url + "api/status") as r:
        sessions = (await r.json())["webrtc"]["sessions"]
    (session,) = [s for s in sessions if s["id"] == v.answer["id"]]
    return session


async def round_trip(v: Viewer, t: float) -> float:
    started = time.monotonic()
    v.send(json.dumps({"type": "ping", "t": t}))
    while True:
        reply = await v.next_message(timeout=5)
        if reply.get("type") == "pong" and reply.get("t") == t:
            return time.monotonic() - started


async def test_every_odd_message_gets_one_error(dc_server: ServerProcess, viewer: MakeViewer,
                                                http: aiohttp.ClientSession) -> None:
    v = await connected(viewer, dc_server, http)
    odd: list[str | bytes] = [
        b"\x00\xff binary", b"{\"type\":\"ping\",\"t\":1}",  # binary, even when it would parse
        "", "not json", "{", "[]", "null", "42", '"a string"', "true",  # not JSON, or not an object
        '{"type": 5}', '{"type": "ping"}', '{"type": "ping", "t": "soon"}', '{"type": "nope"}',
        '{"type": "record", "action": "rewind"}', '{"type": "latency", "ms": -1}',
        json.dumps({"type": "ping", "t": 1, "pad": "x" * 65_000}),  # 64 KB of JSON text
        b"\x01" * 65_536,  # 64 KB of binary
        "\ud7ff" * 20, "[" * 10_000,
    ]
    for message in odd:
        v.send(message)
    replies = [await v.next_message() for _ in odd]
    for message, reply in zip(odd, replies, strict=True):
        assert reply["type"] == "error" and reply["message"], (message[:40], reply)
    assert "too long" in replies[-4]["message"] and "too long" in replies[-3]["message"]
    await v.send_invalid_utf8()
    assert (await v.next_message())["message"] == "text messages must be UTF-8"
    # Nothing more came (one reply per message), and the channel still works.
    assert await round_trip(v, 1.5) < 5
    assert v.messages.empty()
    frames = len(v.frames)
    await v.wait_frames(frames + 10)
    session = await session_of(http, dc_server, v)
    assert session["control_open"] and session["control_dropped"] == 0


async def test_a_flood_is_rate_limited_and_other_peers_carry_on(dc_server: ServerProcess,
                                                                viewer: MakeViewer,
                                                                http: aiohttp.ClientSession) -> None:
    flooder = await connected(viewer, dc_server, http)
    other = await connected(viewer, dc_server, http)
    await other.wait_frames(5)

    # 1000 messages in about a second from one peer, while the other pings every 100 ms.
    flooded = 1000

    async def flood() -> float:
        started = time.monotonic()
        for burst in range(20):
            for i in range(50):
                flooder.send(json.dumps({"type": "ping", "t": burst * 50 + i}))
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    rtts: list[float] = []

    async def probe(stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            rtts.append(await round_trip(other, 10_000 + n))
            await asyncio.sleep(0.1)  # a ping every 100 ms, as a player's are every second or so

    replies: list[Any] = []

    async def answered_or_dropped() -> int:
        """How many flood messages got a pong or were dropped by the server so far."""
        while not flooder.messages.empty():
            replies.append(flooder.messages.get_nowait())
        pongs = sum(1 for r in replies if r.get("type") == "pong")
        return pongs + (await session_of(http, dc_server, flooder))["control_dropped"]

    stop = asyncio.Event()
    prober = asyncio.create_task(probe(stop))
    started = time.monotonic()
    flood_seconds = await flood()
    # Replies are still on their way: every message ends as a pong or a drop.
    await eventually(answered_or_dropped, 15, f"a pong or a drop for each of {flooded} messages",
                     until=lambda count: count == flooded, interval=0.1)
    await eventually(lambda: len(rtts) >= 5 or prober.done(), 15, "the other peer's round trips")
    stop.set()
    await prober
    ended = time.monotonic()
    fps_during = other.fps_between(started, ended)

    pongs = [r for r in replies if r.get("type") == "pong"]
    limited = [r for r in replies if r.get("type") == "error" and "rate limited" in r["message"]]
    allowed = BURST + RATE * (flood_seconds + 0.5)
    print(f"\nflood of 1000 in {flood_seconds:.2f} s: {len(pongs)} pongs, {len(limited)} 'rate limited'; "
          f"other peer: {len(rtts)} round trips, max {max(rtts) * 1000:.0f} ms, {fps_during:.1f} fps")
    assert BURST <= len(pongs) <= allowed, len(pongs)
    assert 1 <= len(limited) <= flood_seconds / 1.0 + 2, "one error per second, not one per message"
    assert len(replies) == len(pongs) + len(limited)
    session = await session_of(http, dc_server, flooder)
    assert session["control_dropped"] >= flooded - allowed

    # The other peer never waited on the flood: its round trips stayed fast, its video flowed.
    assert len(rtts) >= 5 and max(rtts) < 1.0, rtts
    assert fps_during >= 9, fps_during  # 30 fps sent; generous for a busy machine
    # The flooder itself is fine once it slows down: its bucket refills.
    assert await round_trip(flooder, 0.5) < 5
    assert (await session_of(http, dc_server, flooder))["control_open"]


async def test_a_peer_keeps_only_latency_reports_the_metrics_accept(dc_server: ServerProcess,
                                                                    viewer: MakeViewer,
                                                                    http: aiohttp.ClientSession) -> None:
    v = await connected(viewer, dc_server, http)
    v.send('{"type": "latency", "ms": 42}')
    for bad in ("-1", "60001", "1e308", "true", '"12"'):
        v.send(f'{{"type": "latency", "ms": {bad}}}')
    for _ in range(5):
        assert (await v.next_message())["type"] == "error"
    await round_trip(v, 2.5)  # replies are in order: every report was handled
    session = await session_of(http, dc_server, v)
    assert session["latency_ms"] == 42


def test_a_broadcast_is_serialised_once_for_every_peer() -> None:
    bus = ControlBus()
    got: dict[str, list[str]] = {"a": [], "b": []}
    bus.attach("a", got["a"].append)
    bus.attach("b", got["b"].append)
    bus.broadcast({"type": "record", "recording": True})
    assert got["a"] == got["b"] == ['{"type":"record","recording":true}']
    assert got["a"][0] is got["b"][0]
    bus.broadcast({"type": "record", "bad": float("nan")})  # not JSON: sent to nobody, raises nothing
    assert len(got["a"]) == len(got["b"]) == 1
