"""Offers with only an audio m-line (/offer and WHEP): answered with the camera's sound in Opus, or
refused with a 400 that says why when the camera has none."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from support.audio_listener import Listener, audio_sections, dominant_hz, level
from support.rtspcamera import StartCamera, start_rtsp_camera  # noqa: F401 - a fixture
from support.server import ServerProcess
from support.waiting import eventually
from support.webrtc_viewer import OfferRejected

pytestmark = pytest.mark.usefixtures("loopback_ice")


@pytest_asyncio.fixture
async def listeners() -> AsyncIterator[list[Listener]]:
    made: list[Listener] = []
    yield made
    for listener in made:
        await listener.close()


async def status(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, Any]:
    async with http.get(server.url + "api/status") as r:
        return dict(await r.json())


@pytest.mark.parametrize("via", ["offer", "whep"])
async def test_an_audio_only_offer_gets_the_tone(
        via: str, start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession,
        listeners: list[Listener]) -> None:
    server = start_server("--size", "160x120")  # the test pattern: its tone
    listener = Listener(server.url, control=(via == "offer"))
    listeners.append(listener)
    await listener.connect(http, via)
    assert "m=video" not in listener.answer_sdp
    (audio,) = audio_sections(listener.answer_sdp)
    assert "opus/48000" in audio.lower() and "a=sendonly" in audio
    assert listener.tap is not None
    # The tone: 100 ms of 1 kHz every second. A whole second of packets holds one beep.
    await eventually(lambda: len(listener.tap.chunks) >= 60 and level(listener.tap.sound(50)) > 300, 15,
                     "a beep")
    assert abs(dominant_hz(listener.tap.sound(50)) - 1000) < 10
    state = await status(http, server)
    assert state["audio"]["listeners"] == 1 and state["audio"]["source"] == "tone"
    (session,) = state["webrtc"]["sessions"]
    assert session["via"] == via and session["codec"] is None and session["audio_packets_sent"] > 40
    await eventually(lambda: status(http, server), 10, "the listener counted as a viewer",
                     until=lambda s: s["viewers"]["webrtc"] == 1)


async def test_a_camera_without_sound_refuses_an_audio_only_offer(
        start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession,
        listeners: list[Listener]) -> None:
    server = start_server("--size", "160x120", "--audio", "none")
    for via in ("offer", "whep"):
        listener = Listener(server.url)
        listeners.append(listener)
        with pytest.raises(OfferRejected) as refused:
            await listener.connect(http, via)
        assert refused.value.status == 400
        assert "has no sound" in refused.value.text and "--audio none" in refused.value.text


async def test_a_stream_without_an_audio_track_refuses_an_audio_only_offer(
        start_rtsp_camera: StartCamera, start_server: Callable[..., ServerProcess],  # noqa: F811
        http: aiohttp.ClientSession, listeners: list[Listener]) -> None:
    camera = start_rtsp_camera(size=(160, 120), fps=15, gop=15)  # no audio track
    # --audio auto: the stream's own sound, when it has some (looked for at startup); --audio stream
    # finds out when the source opens.
    auto, explicit = start_server(source=camera.url), start_server("--audio", "stream", source=camera.url)
    assert (await status(http, auto))["audio"] is None
    await eventually(lambda: status(http, explicit), 15, "the stream opened without sound",
                     until=lambda s: s["audio"]["source"] == "stream (it has no audio track)")
    for server, why in ((auto, "--audio none"), (explicit, "no audio track")):
        listener = Listener(server.url)
        listeners.append(listener)
        with pytest.raises(OfferRejected) as refused:
            await listener.connect(http, "whep")
        assert refused.value.status == 400 and why in refused.value.text


async def test_an_offer_with_neither_video_nor_opus_is_422(server: ServerProcess,
                                                           http: aiohttp.ClientSession) -> None:
    offer = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
             "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\na=mid:0\r\n"
             "a=rtpmap:0 PCMU/8000\r\n")
    async with http.post(server.url + "whep", data=offer, headers={"Content-Type": "application/sdp"}) as r:
        assert r.status == 422
        assert "no video m-line" in await r.text()
