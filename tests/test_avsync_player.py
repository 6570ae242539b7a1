"""The player's stats overlay shows the A/V offset Chromium plays with, once the stream has sound.

A real server subprocess (test pattern with its tone) and Debian's Chromium playing the bundled
player over WebRTC on loopback; the figure comes from the audio and video inbound-rtp
`estimatedPlayoutTimestamp` of getStats().
"""

from __future__ import annotations

import re
from typing import Any

from support.browser import open_page
from support.waiting import eventually

MINUS = "\u2212"  # the overlay writes a true minus sign
AV_LINE = re.compile(r"^A/V ([+\u2212\u00b1])(\d+) ms$")
AUDIO_SAMPLES = """async () => {
    const stats = await window.camcastPlayer.active.pc.getStats();
    for (const s of stats.values())
        if (s.type === 'inbound-rtp' && s.kind === 'audio') return s.totalSamplesReceived || 0;
    return 0; }"""
OVERLAY_LINES = ("() => [...document.querySelectorAll('#overlay div')]"
                 ".filter(d => !d.hidden).map(d => d.textContent)")


def av_figure(lines: list[str]) -> int | None:
    """The overlay's A/V offset in ms (+ = sound late), or None when it shows none."""
    for line in lines:
        match = AV_LINE.match(line)
        if match:
            return int(match[2]) * (-1 if match[1] == MINUS else 1)
    return None


async def play(page: Any, url: str) -> None:
    await page.goto(url + "?transport=webrtc")
    await eventually(lambda: page.evaluate("window.camcast.framesDecoded"), 20, "frames",
                     until=lambda n: (n or 0) > 10, interval=0.2)


async def test_the_overlay_shows_the_av_offset_with_sound_on(start_server: Any, chromium: Any) -> None:
    camcast = start_server("--size", "320x240")
    async with open_page(chromium, camcast.url) as page:
        await play(page, camcast.url)
        await page.locator("#sound").click()
        assert not await page.evaluate("document.querySelector('video').muted")
        first = await page.evaluate(AUDIO_SAMPLES)
        await eventually(lambda: page.evaluate(AUDIO_SAMPLES), 10, "audio samples received",
                         until=lambda n: n > first + 48_000, interval=0.2)
        lines = await eventually(lambda: page.evaluate(OVERLAY_LINES), 20, "an A/V figure in the overlay",
                                 until=lambda shown: av_figure(shown) is not None, interval=0.25)
        print("overlay:", lines)
        offset = av_figure(lines)
        assert offset is not None and abs(offset) < 1000, lines  # a playout offset, not a clock's
        assert not page.errors, page.errors


async def test_without_sound_the_overlay_has_no_av_figure(start_server: Any, chromium: Any) -> None:
    camcast = start_server("--size", "320x240", "--audio", "none")
    async with open_page(chromium, camcast.url) as page:
        await play(page, camcast.url)
        # The player reads its stats every second: a few readings, and the figure would be there.
        await eventually(lambda: page.evaluate("window.camcast.framesDecoded"), 20, "4 s of frames",
                         until=lambda n: (n or 0) > 120, interval=0.25)
        lines = await page.evaluate(OVERLAY_LINES)
        print("overlay:", lines)
        assert any("latency" in line for line in lines), lines  # the overlay is on and rendering
        assert av_figure(lines) is None, lines
