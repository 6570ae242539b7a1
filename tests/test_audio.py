"""Sound: one Opus encode for every listener, the test tone and its flash, and the player's unmute."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
from aiortc.mediastreams import MediaStreamError

from camcast.audio import FRAME_SAMPLES, tone
from camcast.frames import now_us
from camcast.sources.testpattern import FLASH
from camcast.sources.testpattern import TestPattern as Pattern
from support.browser import open_page
from support.server import ServerProcess, launch
from support.waiting import eventually
from support.webrtc_viewer import Viewer

pytestmark = pytest.mark.usefixtures("loopback_ice")


@pytest_asyncio.fixture
async def listeners() -> AsyncIterator[Callable[..., Viewer]]:
    made: list[Viewer] = []

    def make(url: str) -> Viewer:
        made.append(Viewer(url, audio=True, read_stamps=False))
        return made[-1]

    yield make
    await asyncio.gather(*(v.close() for v in made), return_exceptions=True)


@pytest.fixture
def server(tmp_path: Path) -> Any:
    made: list[ServerProcess] = []

    def make(*args: str) -> ServerProcess:
        made.append(launch(tmp_path / f"s{len(made)}", list(args)))
        return made[-1]

    yield make
    for process in made:
        code, _ = process.terminate()
        assert code == 0, process.describe()


async def audio_packets(viewer: Viewer) -> int:
    """Opus RTP packets the viewer's audio receiver has taken in."""
    stats = await viewer.pc.getStats()
    return sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp" and s.kind == "audio")


async def count_audio(viewer: Viewer, seconds: float) -> int:
    """Opus packets the viewer receives in `seconds` (its track is read, as a player would)."""
    (track,) = [r.track for r in viewer.pc.getReceivers() if r.track and r.track.kind == "audio"]

    async def drain() -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    reader = asyncio.create_task(drain())
    try:
        first = await audio_packets(viewer)
        await asyncio.sleep(seconds)  # the measuring window, not a wait for a condition
        return await audio_packets(viewer) - first
    finally:
        reader.cancel()


async def status(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, Any]:
    async with http.get(server.url + "api/status") as r:
        return dict(await r.json())


async def test_one_opus_encode_serves_every_listener(server: Any, listeners: Callable[..., Viewer],
                                                     http: aiohttp.ClientSession) -> None:
    camcast = server("--size", "160x120")
    viewers = [listeners(camcast.url) for _ in range(10)]
    await asyncio.gather(*(v.connect(http) for v in viewers))
    await asyncio.gather(*(v.wait_frames(5, timeout=20) for v in viewers))
    before = (await status(http, camcast))["audio"]["packets_encoded"]
    counts = await asyncio.gather(*(count_audio(v, 2.0) for v in viewers))
    after = await status(http, camcast)
    # 20 ms packets: 50 a second reach each of the ten from the one encoder.
    assert all(c >= 75 for c in counts), counts
    assert 75 <= after["audio"]["packets_encoded"] - before <= 130
    assert after["audio"]["listeners"] == 10 and after["audio"]["encoding"] is True
    assert all(s["audio_packets_sent"] > 75 for s in after["webrtc"]["sessions"])
    await asyncio.gather(*(v.close() for v in viewers))
    await eventually(lambda: status(http, camcast), 10, "the Opus encoder to stop with its last listener",
                     until=lambda s: not s["audio"]["encoding"])


async def test_no_sound_answers_the_audio_m_line_inactive(server: Any, listeners: Callable[..., Viewer],
                                                          http: aiohttp.ClientSession) -> None:
    camcast = server("--size", "160x120", "--audio", "none")
    viewer = listeners(camcast.url)
    await viewer.connect(http)
    audio = viewer.answer["sdp"].split("m=audio", 1)[1].split("m=", 1)[0]
    assert "a=inactive" in audio
    assert (await status(http, camcast))["audio"] is None


def test_the_tone_beeps_for_100_ms_from_every_whole_second() -> None:
    second = 1_800_000_000 * 1_000_000
    assert np.abs(tone(second)).max() > 5000  # loud from the second on
    assert np.abs(tone(second + 60_000)).max() > 5000
    assert np.abs(tone(second + 100_000)).max() == 0  # silent after 100 ms
    assert np.abs(tone(second - FRAME_SAMPLES * 1_000_000 // 48_000)).max() == 0
    # 1 kHz: 20 cycles in a 20 ms frame.
    crossings = np.count_nonzero(np.diff(np.signbit(tone(second))))
    assert 38 <= crossings <= 41


def test_the_test_pattern_flashes_the_first_frame_of_every_second() -> None:
    pattern = Pattern(160, 120, 30, flash=True)
    pattern.open()
    seconds: list[int] = []
    white_at: list[int] = []
    try:
        while len(seconds) < 50:
            image = pattern.read()
            assert image is not None
            second = now_us() // 1_000_000
            block = image[-FLASH:, -FLASH:]
            if block.min() == 255:
                white_at.append(second)
            else:
                assert block.max() == 0
            seconds.append(second)
    finally:
        pattern.close()
    assert white_at == sorted(set(seconds))  # one white frame per second, the second's first


async def test_chromium_plays_the_sound_once_unmuted(server: Any, chromium: Any) -> None:
    camcast = server("--size", "320x240")
    async with open_page(chromium, camcast.url) as page:
        await page.goto(camcast.url + "?transport=webrtc")
        await eventually(lambda: page.evaluate("window.camcast.framesDecoded"), 20, "frames",
                         until=lambda n: (n or 0) > 10, interval=0.2)
        button = page.locator("#sound")
        await eventually(button.is_visible, 10, "the sound button")
        assert await button.inner_text() == "Sound off"
        await button.click()
        assert await button.get_attribute("aria-pressed") == "true"
        samples = """async () => {
            const stats = await window.camcastPlayer.active.pc.getStats();
            for (const s of stats.values())
                if (s.type === 'inbound-rtp' && s.kind === 'audio') return s.totalSamplesReceived || 0;
            return 0; }"""
        first = await page.evaluate(samples)
        await eventually(lambda: page.evaluate(samples), 10, "audio samples received",
                         until=lambda n: n > first + 48_000, interval=0.2)
        await eventually(lambda: page.evaluate("window.camcast.soundLevel || 0"), 10,
                         "the level meter to move with the beep", until=lambda level: level > 0.05,
                         interval=0.05)
        assert not await page.evaluate("document.querySelector('video').muted")
