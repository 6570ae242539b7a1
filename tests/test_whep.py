"""WHEP (POST /whep, DELETE /whep/<id>) and offer validation, with real aiortc peers over loopback."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection

from support.server import ServerProcess, launch
from support.waiting import eventually
from support.webrtc_viewer import OfferRejected, Viewer

pytestmark = pytest.mark.usefixtures("loopback_ice")

MAX_PEERS = 2
SDP = "application/sdp"


@pytest.fixture(scope="module")
def whep_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = launch(tmp_path_factory.mktemp("whep"), ["--size", "160x120", "--max-peers", str(MAX_PEERS)])
    try:
        yield server
    finally:
        code, _ = server.terminate()
        assert code == 0, server.describe()
        assert "Traceback" not in server.log(), server.describe()


@pytest_asyncio.fixture
async def viewer() -> AsyncIterator[Callable[..., Viewer]]:
    made: list[Viewer] = []

    def make(url: str, **options: Any) -> Viewer:
        options = {"control": False, "audio": True, "read_stamps": False} | options  # like a WHEP player
        made.append(Viewer(url, **options))
        return made[-1]

    yield make
    await asyncio.gather(*(v.close() for v in made), return_exceptions=True)


async def peers(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, Any]:
    async with http.get(server.url + "api/status") as r:
        status = await r.json()
    return {"count": status["webrtc"]["peers"], "viewers": status["viewers"]["webrtc"],
            "ids": {s["id"]: s for s in status["webrtc"]["sessions"]}}


async def wait_peers(http: aiohttp.ClientSession, server: ServerProcess, count: int,
                     timeout: float = 10.0) -> dict[str, Any]:
    return await eventually(lambda: peers(http, server), timeout, f"{count} peers",
                            until=lambda state: state["count"] == state["viewers"] == count)


async def offer_sdp(video: bool = True, audio: bool = False, video_direction: str = "recvonly") -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if video:
            pc.addTransceiver("video", direction=video_direction)
        if audio:
            pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def post(http: aiohttp.ClientSession, url: str, body: str | bytes,
               content_type: str = SDP) -> tuple[int, str]:
    async with http.post(url, data=body, headers={"Content-Type": content_type}) as r:
        return r.status, await r.text()


async def test_whep_create_play_delete(whep_server: ServerProcess, viewer: Callable[..., Viewer],
                                       http: aiohttp.ClientSession) -> None:
    await wait_peers(http, whep_server, 0)
    v = viewer(whep_server.url)
    await v.connect(http, via="whep")
    headers = v.response_headers
    assert re.fullmatch(r"/whep/[A-Za-z0-9_-]{16}", headers["Location"])
    assert headers["Content-Type"] == SDP
    assert v.answer["sdp"].startswith("v=0")
    audio = v.answer["sdp"].split("m=audio", 1)[1].split("m=", 1)[0]
    assert "opus/48000" in audio and "a=sendonly" in audio  # the test pattern's tone
    frames = await v.wait_frames(10)
    assert frames[0].key
    session_id = headers["Location"].rsplit("/", 1)[1]
    state = await peers(http, whep_server)
    assert state["count"] == 1 and state["ids"][session_id]["via"] == "whep"

    assert await v.delete(http) == 200
    await wait_peers(http, whep_server, 0)
    assert await v.delete(http) == 404  # already gone


async def test_whep_cors_for_players_on_other_origins(whep_server: ServerProcess,
                                                      viewer: Callable[..., Viewer],
                                                      http: aiohttp.ClientSession) -> None:
    origin = {"Origin": "https://player.example.org"}
    preflight = {**origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    async with http.options(whep_server.url + "whep", headers=preflight) as r:
        assert r.status in (200, 204)
        assert r.headers["Access-Control-Allow-Origin"] in ("*", origin["Origin"])
        methods = r.headers["Access-Control-Allow-Methods"]
        assert "POST" in methods and "DELETE" in methods
        allowed = r.headers["Access-Control-Allow-Headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
    v = viewer(whep_server.url, headers=origin)
    await v.connect(http, via="whep")
    assert v.response_headers["Access-Control-Allow-Origin"] in ("*", origin["Origin"])
    assert "location" in v.response_headers["Access-Control-Expose-Headers"].lower()
    async with http.delete(v.session_url, headers=origin) as r:
        assert r.status == 200 and "Access-Control-Allow-Origin" in r.headers
    async with http.options(whep_server.url + "whep") as r:  # plain OPTIONS: what the endpoint takes
        assert r.status == 204 and r.headers["Accept-Post"] == SDP


async def test_bad_offers_get_4xx_with_the_reason(whep_server: ServerProcess,
                                                  http: aiohttp.ClientSession) -> None:
    whep, offer = whep_server.url + "whep", whep_server.url + "offer"
    good = await offer_sdp()
    cases: list[tuple[str, str | bytes, str, int, str]] = [
        (whep, "hello", SDP, 400, "not SDP"),
        (whep, "", SDP, 400, "empty"),
        (whep, b"v=0\r\n\xff\xfe", SDP, 400, "UTF-8"),
        (whep, "v=0\r\ns=-\r\n", SDP, 400, "no media"),
        (whep, good[: len(good) // 2], SDP, 400, "refused"),  # cut off mid-way: no ICE/DTLS lines
        (whep, good.replace("a=ice-ufrag", "a=x-ufrag"), SDP, 400, ""),
        # Audio alone is served (the camera's sound); audio without Opus is nothing to send.
        (whep, (await offer_sdp(video=False, audio=True)).replace("opus/", "x-opus/"), SDP, 422, "no video"),
        (whep, await offer_sdp(video_direction="sendonly"), SDP, 422, "recvonly"),
        (whep, good.replace("H264", "H265").replace("VP8", "AV1X"), SDP, 422, "H.264"),
        (whep, good, "application/json", 415, SDP),
        (offer, "not json", "application/json", 400, "JSON"),
        (offer, '{"type": "offer"}', "application/json", 400, "sdp"),
        (offer, '{"sdp": "v=0", "type": "answer"}', "application/json", 400, "offer"),
        (offer, '{"sdp": "garbage", "type": "offer"}', "application/json", 400, "not SDP"),
    ]
    for url, body, content_type, status, reason in cases:
        got_status, text = await post(http, url, body, content_type)
        assert (got_status, reason in text) == (status, True), (url, body[:40], got_status, text)
    state = await peers(http, whep_server)
    assert state["count"] == 0
    async with http.get(whep_server.url + "healthz") as r:
        assert r.status == 200


async def test_max_peers_gives_503_until_a_session_ends(whep_server: ServerProcess,
                                                        viewer: Callable[..., Viewer],
                                                        http: aiohttp.ClientSession) -> None:
    await wait_peers(http, whep_server, 0)
    sessions = [viewer(whep_server.url) for _ in range(MAX_PEERS)]
    for v in sessions:
        await v.connect(http, via="whep")
    with pytest.raises(OfferRejected) as full:
        await viewer(whep_server.url).connect(http, via="whep")
    assert full.value.status == 503 and "--max-peers" in full.value.text
    status, _ = await post(http, whep_server.url + "offer", "{}", "application/json")
    assert status == 400  # a bad offer is still a bad offer
    assert await sessions[0].delete(http) == 200
    await wait_peers(http, whep_server, MAX_PEERS - 1)
    again = viewer(whep_server.url)
    await again.connect(http, via="whep")
    await again.wait_frames(3)


async def test_delete_ends_an_offer_session_too(whep_server: ServerProcess, viewer: Callable[..., Viewer],
                                                http: aiohttp.ClientSession) -> None:
    # The player releases an attempt it gave up on with the id /offer answered: one id space.
    await wait_peers(http, whep_server, 0)
    v = viewer(whep_server.url)
    await v.connect(http)  # POST /offer
    v.session_url = f"{whep_server.url}whep/{v.answer['id']}"
    await wait_peers(http, whep_server, 1)
    assert await v.delete(http) == 200
    await wait_peers(http, whep_server, 0)
    assert await v.delete(http) == 404


async def test_a_viewer_can_pin_a_rendition_by_hand(tmp_path: Any, viewer: Callable[..., Viewer],
                                                    http: aiohttp.ClientSession) -> None:
    server = launch(tmp_path, ["--size", "640x480"])
    try:
        pinned = viewer(server.url, query="?rendition=medium")
        await pinned.connect(http, via="whep")
        frames = await pinned.wait_frames(15)
        assert {(f.width, f.height) for f in frames} == {(320, 240)}
        state = await peers(http, server)
        (session,) = state["ids"].values()
        assert session["rendition"] == "medium" and session["adaptive"] is False

        auto = viewer(server.url, query="?rendition=auto")
        await auto.connect(http)
        assert {(f.width, f.height) for f in await auto.wait_frames(5)} == {(640, 480)}

        with pytest.raises(OfferRejected) as refused:
            await viewer(server.url, query="?rendition=ultra").connect(http, via="whep")
        assert refused.value.status == 400 and "high, medium, low" in str(refused.value)
    finally:
        code, _ = server.terminate()
        assert code == 0, server.describe()
