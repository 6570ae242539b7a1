"""Several cameras in one server: real servers, MJPEG clients, aiortc peers and recordings per camera.

Two servers serve the whole module. `pair` comes from a config file: camera a at 320x240 and b at
480x360, so the size of a picture proves which camera it came from. `quad` has four cameras named
on the command line (--camera a..d=testpattern, 160x120 at 15 fps to stay cheap).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from camcast.frames import now_us
from camcast.stamp import read_stamp
from support.cameras import (
    camera_status,
    cameras,
    decode_jpeg,
    ladder_sizes,
    serving,
    size_of,
    wait_cameras,
    write_config,
)
from support.mjpeg import collect, open_mjpeg
from support.server import ServerProcess
from support.waiting import eventually
from support.webrtc_viewer import Viewer
from test_metrics import scrape, total, value
from test_recorder import next_record, read_recording, record_state

pytestmark = pytest.mark.usefixtures("loopback_ice")

SIZES = {"a": (320, 240), "b": (480, 360)}
QUAD = ("a", "b", "c", "d")
MakeViewer = Callable[..., Viewer]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("pair")
    config = write_config(workdir / "cameras.toml", {
        name: {"source": "testpattern", "size": f"{w}x{h}"} for name, (w, h) in SIZES.items()})
    with serving(workdir / "server", ["--config", str(config)]) as server:
        yield server


@pytest.fixture(scope="module")
def quad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = [arg for name in QUAD for arg in ("--camera", f"{name}=testpattern")]
    with serving(tmp_path_factory.mktemp("quad"), [*args, "--size", "160x120", "--fps", "15"]) as server:
        yield server


@pytest_asyncio.fixture
async def viewer() -> AsyncIterator[MakeViewer]:
    """Factory for aiortc viewers of one camera (`viewer(server, name)`); all closed at the end."""
    made: list[Viewer] = []

    def make(server: ServerProcess, name: str, **options: Any) -> Viewer:
        made.append(Viewer(f"{server.url}cameras/{name}/", **options))
        return made[-1]

    yield make
    await asyncio.gather(*(v.close() for v in made), return_exceptions=True)


def viewers_by_camera(listing: dict[str, dict[str, Any]], kind: str) -> dict[str, int]:
    return {name: camera["viewers"][kind] for name, camera in listing.items()}


async def watch_nobody(server: ServerProcess, names: tuple[str, ...]) -> None:
    """Viewers of an earlier test are gone (the counts below are this test's own)."""
    idle = dict.fromkeys(names, 0)
    await wait_cameras(server, lambda c: viewers_by_camera(c, "mjpeg") == idle
                       and viewers_by_camera(c, "webrtc") == idle, "no viewers")


# -- listing and health -------------------------------------------------------------------------------
def test_cameras_are_listed_in_order_and_up(pair: ServerProcess, quad: ServerProcess) -> None:
    listing = cameras(pair)
    assert list(listing) == ["a", "b"]
    for name, (width, height) in SIZES.items():
        camera = listing[name]
        assert camera["url"] == f"/cameras/{name}/"
        assert (camera["width"], camera["height"], camera["size"]) == (width, height, f"{width}x{height}")
        assert (camera["state"], camera["up"], camera["on_demand"]) == ("up", True, False)
        assert camera["source"].startswith("testpattern")
    assert list(cameras(quad)) == list(QUAD)
    assert {c["state"] for c in cameras(quad).values()} == {"up"}

    code, _, body = quad.get("healthz")
    assert code == 200
    assert body.decode().splitlines() == ["ok", "a: up", "b: up", "c: up", "d: up"]
    code, _, body = pair.get("cameras/b/healthz")
    assert (code, body) == (200, b"ok\n")


def test_each_camera_has_its_own_status(pair: ServerProcess) -> None:
    for name, (width, height) in SIZES.items():
        status = camera_status(pair, name)
        assert (status["camera"], status["cameras"], status["state"]) == (name, 2, "up")
        assert (status["width"], status["height"]) == (width, height)
    assert pair.status()["camera"] == "a", "unprefixed routes mean the first camera"


@pytest.mark.parametrize("path", ["video.mjpg", "snapshot.jpg", "api/status", "api/record",
                                  "api/recordings", "healthz"])
def test_an_unknown_camera_is_a_404_naming_the_known_ones(pair: ServerProcess, path: str) -> None:
    code, _, body = pair.get(f"cameras/nope/{path}")
    assert code == 404
    assert "nope" in body.decode() and "a, b" in body.decode()


async def test_an_offer_to_an_unknown_camera_is_a_404(pair: ServerProcess, viewer: MakeViewer,
                                                      http: aiohttp.ClientSession) -> None:
    for via in ("offer", "whep"):
        v = viewer(pair, "nope", control=False)
        with pytest.raises(AssertionError, match=r"404.*a, b"):
            await v.connect(http, via=via)


# -- pictures -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("prefix", "name"), [("", "a"), ("cameras/a/", "a"), ("cameras/b/", "b")])
async def test_mjpeg_per_camera(pair: ServerProcess, http: aiohttp.ClientSession, prefix: str,
                                name: str) -> None:
    await watch_nobody(pair, ("a", "b"))
    asked = now_us()
    async with open_mjpeg(http, pair.url + prefix + "video.mjpg") as reader:
        parts = await collect(reader, 10.0, limit=5)
        listing = cameras(pair)
    assert len(parts) == 5
    assert {size_of(p.image()) for p in parts} == {SIZES[name]}
    # Each picture carries its own camera's capture time, and the stream moves on.
    stamps = [p.stamp_us() for p in parts]
    assert all(abs(s - p.header_time_us) <= 1 for s, p in zip(stamps, parts, strict=True))
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert stamps[-1] > asked
    other = "b" if name == "a" else "a"
    assert (listing[name]["viewers"]["mjpeg"], listing[other]["viewers"]["mjpeg"]) == (1, 0)


@pytest.mark.parametrize(("prefix", "name"), [("", "a"), ("cameras/a/", "a"), ("cameras/b/", "b")])
def test_snapshot_per_camera(pair: ServerProcess, prefix: str, name: str) -> None:
    asked = now_us()
    code, headers, body = pair.get(prefix + "snapshot.jpg")
    assert code == 200 and headers["Content-Type"] == "image/jpeg"
    image = decode_jpeg(body)
    assert size_of(image) == SIZES[name]
    assert abs(read_stamp(image) - asked) < 2_000_000, "a recent picture"


async def test_four_cameras_stream_at_once_each_counted_on_its_own(quad: ServerProcess,
                                                                   http: aiohttp.ClientSession) -> None:
    await watch_nobody(quad, QUAD)
    async with contextlib.AsyncExitStack() as stack:
        readers = [await stack.enter_async_context(open_mjpeg(http, f"{quad.url}cameras/{name}/video.mjpg"))
                   for name in ("b", "c", "d")]
        got = await asyncio.gather(*(collect(r, 10.0, limit=5) for r in readers))
        assert all(len(parts) == 5 for parts in got)
        assert {size_of(p.image()) for parts in got for p in parts} == {(160, 120)}
        listing = await wait_cameras(quad, lambda c: viewers_by_camera(c, "mjpeg")
                                     == {"a": 0, "b": 1, "c": 1, "d": 1}, "one MJPEG viewer on b, c, d")
        assert viewers_by_camera(listing, "webrtc") == dict.fromkeys(QUAD, 0)
    await wait_cameras(quad, lambda c: viewers_by_camera(c, "mjpeg") == dict.fromkeys(QUAD, 0),
                       "the viewers to leave")


# -- WebRTC -------------------------------------------------------------------------------------------
async def test_player_signalling_per_camera(pair: ServerProcess, viewer: MakeViewer,
                                            http: aiohttp.ClientSession) -> None:
    await watch_nobody(pair, ("a", "b"))
    va, vb = viewer(pair, "a", read_stamps=False), viewer(pair, "b", read_stamps=False)
    vb2 = viewer(pair, "b", codecs=["vp8"], read_stamps=False)
    await asyncio.gather(va.connect(http), vb.connect(http), vb2.connect(http))
    await asyncio.gather(va.wait_frames(10), vb.wait_frames(10), vb2.wait_frames(10))
    # Every viewer starts on the full size; the sizes of the two cameras' ladders never meet.
    assert (va.frames[0].width, va.frames[0].height) == SIZES["a"]
    assert {(f.width, f.height) for f in va.frames} <= ladder_sizes(*SIZES["a"])
    assert {(v.frames[0].width, v.frames[0].height) for v in (vb, vb2)} == {SIZES["b"]}
    assert {(f.width, f.height) for f in vb.frames + vb2.frames} <= ladder_sizes(*SIZES["b"])

    listing = cameras(pair)
    assert viewers_by_camera(listing, "webrtc") == {"a": 1, "b": 2}
    a, b = camera_status(pair, "a")["webrtc"], camera_status(pair, "b")["webrtc"]
    assert [s["id"] for s in a["sessions"]] == [va.answer["id"]]
    assert {s["id"] for s in b["sessions"]} == {vb.answer["id"], vb2.answer["id"]}
    assert {s["codec"] for s in b["sessions"]} == {"h264", "vp8"}
    assert a["encoders"]["h264"]["running"] and not a["encoders"]["vp8"]["running"]

    await vb2.close()
    await wait_cameras(pair, lambda c: viewers_by_camera(c, "webrtc") == {"a": 1, "b": 1},
                       "the VP8 peer of b to leave")


async def test_whep_per_camera(pair: ServerProcess, viewer: MakeViewer,
                               http: aiohttp.ClientSession) -> None:
    await watch_nobody(pair, ("a", "b"))
    vb = viewer(pair, "b", control=False, audio=True)
    await vb.connect(http, via="whep")
    location = vb.response_headers["Location"]
    assert re.fullmatch(r"/cameras/b/whep/[A-Za-z0-9_-]{16}", location), location
    frames = await vb.wait_frames(10)
    assert frames[0].key and (frames[0].width, frames[0].height) == SIZES["b"]
    assert {(f.width, f.height) for f in frames} <= ladder_sizes(*SIZES["b"])
    assert viewers_by_camera(cameras(pair), "webrtc") == {"a": 0, "b": 1}
    (session,) = camera_status(pair, "b")["webrtc"]["sessions"]
    assert session["id"] == location.rsplit("/", 1)[1] and session["via"] == "whep"

    assert await vb.delete(http) == 200
    await wait_cameras(pair, lambda c: viewers_by_camera(c, "webrtc") == {"a": 0, "b": 0},
                       "the WHEP session to end")
    assert await vb.delete(http) == 404


async def test_four_cameras_over_webrtc_at_once(quad: ServerProcess, viewer: MakeViewer,
                                                http: aiohttp.ClientSession) -> None:
    await watch_nobody(quad, QUAD)
    peers = {name: viewer(quad, name, control=False) for name in QUAD}
    await asyncio.gather(*(v.connect(http, via="whep" if name in "ac" else "offer")
                           for name, v in peers.items()))
    await asyncio.gather(*(v.wait_frames(10, timeout=15) for v in peers.values()))
    assert peers["a"].response_headers["Location"].startswith("/cameras/a/whep/")
    assert peers["c"].response_headers["Location"].startswith("/cameras/c/whep/")
    assert viewers_by_camera(cameras(quad), "webrtc") == dict.fromkeys(QUAD, 1)
    for name, v in peers.items():
        (session,) = camera_status(quad, name)["webrtc"]["sessions"]
        own_id = v.answer["id"] if name in "bd" else v.response_headers["Location"].rsplit("/", 1)[1]
        assert session["id"] == own_id


# -- recording ----------------------------------------------------------------------------------------
async def record_of(http: aiohttp.ClientSession, server: ServerProcess, name: str) -> dict[str, Any]:
    async with http.get(f"{server.url}cameras/{name}/api/record") as r:
        assert r.status == 200
        return await r.json()


async def wait_record(http: aiohttp.ClientSession, server: ServerProcess, name: str,
                      check: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
    state: dict[str, Any] = await eventually(lambda: record_of(http, server, name), timeout,
                                             f"camera {name}'s record state", until=check)
    return state


async def recordings_of(http: aiohttp.ClientSession, server: ServerProcess, prefix: str) -> list[str]:
    async with http.get(f"{server.url}{prefix}api/recordings") as r:
        assert r.status == 200
        return [entry["name"] for entry in await r.json()]


async def messages_until_pong(v: Viewer) -> list[dict[str, Any]]:
    """Everything the server sent this peer until it answers a ping sent now (in channel order)."""
    v.send(json.dumps({"type": "ping", "t": time.time() * 1000}))
    seen = []
    while (message := await v.next_message(skip=()))["type"] != "pong":
        seen.append(message)
    return seen


async def test_a_record_press_on_one_camera_leaves_the_other_untouched(
        pair: ServerProcess, viewer: MakeViewer, http: aiohttp.ClientSession) -> None:
    va, vb = viewer(pair, "a", read_stamps=False), viewer(pair, "b", read_stamps=False)
    await asyncio.gather(va.connect(http), vb.connect(http))
    await asyncio.gather(va.wait_open(), vb.wait_open())
    for v in (va, vb):  # each peer is greeted with its own camera's state
        assert (await next_record(v))["state"] == "stopped"

    pressed = now_us()
    va.send(json.dumps({"type": "record", "action": "start"}))
    started = await record_state(va, "recording")
    assert (await record_of(http, pair, "b"))["state"] == "stopped"
    await wait_record(http, pair, "a", lambda s: s["state"] == "recording" and s["frames"] >= 30)
    va.send(json.dumps({"type": "record", "action": "stop"}))
    stopped = await record_state(va, "stopped")
    done = now_us()
    assert stopped["name"] == started["name"]

    assert [m for m in await messages_until_pong(vb) if m.get("type") == "record"] == [], \
        "camera b's peer must hear nothing of camera a's recording"
    b_record = await record_of(http, pair, "b")
    assert (b_record["state"], b_record["frames"]) == ("stopped", 0)

    # The file is camera a's, in a's own folder, and nowhere else.
    path = pair.recordings / "a" / started["name"]
    assert path.is_file()
    assert not (pair.recordings / "b" / started["name"]).exists()
    assert not (pair.recordings / started["name"]).exists()
    rec = read_recording(path)
    assert (rec.codec, rec.width, rec.height) == ("h264", *SIZES["a"])
    assert len(rec.times) == stopped["frames"] and rec.keys[0]
    assert pressed - 200_000 < rec.stamps[0] and rec.stamps[-1] < done
    assert started["name"] in await recordings_of(http, pair, "cameras/a/")
    assert started["name"] in await recordings_of(http, pair, "")  # unprefixed: camera a
    assert started["name"] not in await recordings_of(http, pair, "cameras/b/")


async def test_record_rest_api_per_camera(pair: ServerProcess, http: aiohttp.ClientSession) -> None:
    async with http.post(pair.url + "cameras/b/api/record/start") as r:
        assert r.status == 200
        started = await r.json()
    assert started["state"] == "recording"
    await wait_record(http, pair, "b", lambda s: s["frames"] >= 20)
    assert (await record_of(http, pair, "a"))["state"] == "stopped"
    assert cameras(pair)["b"]["recording"] and not cameras(pair)["a"]["recording"]
    async with http.post(pair.url + "cameras/b/api/record/stop") as r:
        assert r.status == 200
        stopped = await r.json()
    name = stopped["name"]
    assert (stopped["state"], name) == ("stopped", started["name"])

    path: Path = pair.recordings / "b" / name
    rec = read_recording(path)
    assert (rec.width, rec.height) == SIZES["b"] and len(rec.times) == stopped["frames"]
    assert name in await recordings_of(http, pair, "cameras/b/")
    assert name not in await recordings_of(http, pair, "cameras/a/")

    # The file is served and deleted through its own camera only.
    async with http.get(f"{pair.url}cameras/b/recordings/{name}") as r:
        assert r.status == 200 and await r.read() == path.read_bytes()
    async with http.get(f"{pair.url}cameras/a/recordings/{name}") as r:
        assert r.status == 404
    async with http.get(f"{pair.url}recordings/{name}") as r:
        assert r.status == 404, "unprefixed is camera a"
    async with http.delete(f"{pair.url}cameras/a/api/recordings/{name}") as r:
        assert r.status == 404
    assert path.exists()
    async with http.delete(f"{pair.url}cameras/b/api/recordings/{name}") as r:
        assert r.status == 204
    assert not path.exists()
    assert name not in await recordings_of(http, pair, "cameras/b/")


# -- metrics ------------------------------------------------------------------------------------------
async def test_metrics_carry_each_camera(quad: ServerProcess, http: aiohttp.ClientSession) -> None:
    await watch_nobody(quad, QUAD)
    async with open_mjpeg(http, quad.url + "cameras/c/video.mjpg") as reader:
        await collect(reader, 10.0, limit=2)
        # Encoders of earlier viewers linger a moment: wait until only c's JPEG encoder runs.
        metrics = await eventually(
            lambda: scrape(http, quad.url), 10, "camera c's JPEG encoder alone running",
            until=lambda m: [value(m, "camcast_encoder_running", camera=n, encoder="jpeg") for n in QUAD]
            == [0, 0, 1, 0])
    for name in QUAD:
        assert total(metrics, "camcast_frames_captured", camera=name) > 0
        assert value(metrics, "camcast_source_up", camera=name) == 1
        assert value(metrics, "camcast_viewers", camera=name, kind="mjpeg") == (name == "c")
