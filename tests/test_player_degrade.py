"""The player watches its own picture, in real headless Chromium against the real server.

A WebRTC picture that stalls or falls behind is said so on screen at once, then replaced by a light
MJPEG variant while WebRTC is retried in the background; the MJPEG fallback steps to lighter
variants when its frames arrive late and back up when they are on time; the overlay names the
rendition the server sends. Each trouble is real: in the browser (the receiver's track stopped, so
no more frames; its jitter buffer target raised step by step, so each frame is shown later than the
last) or on the way (Chromium inside the viewer's namespace of the emulated network, support.netlab,
behind a tbf-shaped link that also loses the media when told to; needs root, as CI has).
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

from support.browser import CHROMIUM, CHROMIUM_ARGS, open_page
from support.netlab import NetLab, Side, anetlab, launch_server
from support.server import ServerProcess
from support.waiting import eventually
from test_player import (
    PLAYING_WEBRTC,
    WAIT,
    page_errors,
    readings,
    unexpected,
    until,
    wait_status,
    watch_failures,
)

PHONE = {"width": 390, "height": 844}
WEAK_NOTICE = "weak connection — switching…"
LIGHT_MJPEG = ("window.camcast.transport === 'mjpeg' && window.camcast.state === 'playing'"
               " && /width=320&quality=50/.test(document.getElementById('mjpeg').getAttribute('src'))")

# What the viewer sees: how long the picture has not changed, and the words over it.
SCREEN = """() => {
    const player = window.camcastPlayer;
    const notice = document.getElementById('notice');
    return {
        transport: window.camcast.transport,
        frozenMs: performance.now() - player.lastFrameAt,
        notice: notice.hidden ? '' : notice.innerText,
        link: window.camcast.link,
        weakReason: window.camcast.weakReason,
    };
}"""


async def watch_screen(page: Page, condition: str, timeout: float = WAIT) -> list[dict[str, Any]]:
    """Look at the screen every 100 ms until `condition` holds; every look, in order."""
    looks: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not await page.evaluate(condition):
        looks.append(await page.evaluate(SCREEN))
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition!r}; last: {looks[-1]}; "
                                 f"window.camcast = {await readings(page)}")
        await asyncio.sleep(0.1)
    return looks


async def box(page: Page, selector: str) -> dict[str, float]:
    return await page.evaluate(f"""() => {{
        const r = document.querySelector({selector!r}).getBoundingClientRect();
        return {{ left: r.left, top: r.top, right: r.right, bottom: r.bottom }};
    }}""")


def inside(inner: dict[str, float], outer: dict[str, float]) -> bool:
    return (inner["left"] >= outer["left"] - 0.5 and inner["right"] <= outer["right"] + 0.5
            and inner["top"] >= outer["top"] - 0.5 and inner["bottom"] <= outer["bottom"] + 0.5)


async def test_a_stalled_stream_is_said_so_then_plays_light_mjpeg_then_webrtc_again(
        server: ServerProcess, chromium) -> None:
    async with open_page(chromium, server.url) as page:
        failed = watch_failures(page)
        await page.goto(server.url)
        await until(page, PLAYING_WEBRTC)
        first_id = await page.evaluate("window.camcastPlayer.active.id")
        assert await page.is_hidden("#notice")

        # The browser stops getting frames: the receiving track ends, the connection stays up.
        await page.evaluate("window.camcastPlayer.active.pc.getReceivers().forEach((r) => r.track.stop())")
        stopped = time.monotonic()
        looks = await watch_screen(page, "window.camcast.link === 'weak'")
        said_after = time.monotonic() - stopped
        assert await page.inner_text("#notice") == WEAK_NOTICE
        assert said_after < 5, f"the notice took {said_after:.1f} s"  # no frame for 2 s, then at once
        assert (await readings(page))["weakReason"].startswith("no new frame")
        notice = await box(page, "#notice > span")
        assert inside(notice, await box(page, "#stage")), notice

        # It does not recover: a light MJPEG variant takes over; the words stay until it plays.
        looks += await watch_screen(page, LIGHT_MJPEG)
        frozen = [look for look in looks if look["frozenMs"] > 2500]
        assert frozen, "the picture never froze long enough to test the notice"
        assert all(look["notice"] for look in frozen), [look for look in frozen if not look["notice"]]
        assert await page.evaluate("document.getElementById('mjpeg').naturalWidth") == 320
        assert await page.is_visible("#link-note")
        assert "variant 320 px · q50" in await page.inner_text("#overlay")
        assert (await readings(page))["degraded"]
        # The stalled session was ended on the server, not left to time out.
        await wait_status(server, lambda s: first_id not in [x["id"] for x in s["webrtc"]["sessions"]])

        # WebRTC is retried in the background and comes back once it plays.
        await until(page, PLAYING_WEBRTC, timeout=WAIT + 15)
        assert await page.evaluate("window.camcastPlayer.active.id") != first_id
        assert await page.get_attribute("#mjpeg", "src") is None
        await until(page, "window.camcast.rendition === 'high'")
        assert await page.is_hidden("#link-note")
        state = await readings(page)
        assert not state["degraded"] and state["link"] == "ok"
        assert (state["width"], state["height"]) == (640, 480)
        await wait_status(server, lambda s: s["viewers"]["webrtc"] == 1 and s["viewers"]["mjpeg"] == 0)
        assert page_errors(page) == []
        assert unexpected(failed) == []


async def test_a_stream_falling_behind_is_said_so_then_replaced(server: ServerProcess, chromium) -> None:
    async with open_page(chromium, server.url) as page:
        await page.set_viewport_size(PHONE)
        failed = watch_failures(page)
        await page.goto(server.url)
        await until(page, PLAYING_WEBRTC)
        await until(page, "window.camcast.latencyMs !== null && window.camcast.latencyMs < 500")

        # Each frame is shown a little later than the last (the playout delay grows 0.4 s every
        # 0.7 s), with no pause long enough to count as a stall: the latency runs away.
        await page.evaluate("""() => {
            const receiver = window.camcastPlayer.active.pc.getReceivers()[0];
            let target = 0;
            const timer = setInterval(() => {
                target = Math.min(4000, target + 400);
                receiver.jitterBufferTarget = target;
                if (target >= 4000) clearInterval(timer);
            }, 700);
        }""")
        looks = await watch_screen(page, "window.camcast.link === 'weak'")
        first = await page.evaluate(SCREEN)
        assert "behind" in first["weakReason"], first
        assert first["notice"] == WEAK_NOTICE
        assert all(look["frozenMs"] < 2000 for look in looks), "it stalled instead of falling behind"
        # On a phone the words fit on the picture.
        notice = await box(page, "#notice > span")
        assert inside(notice, await box(page, "#stage")), notice

        await until(page, LIGHT_MJPEG)
        await until(page, "window.camcast.latencyMs !== null && window.camcast.latencyMs < 1000")
        assert inside(await box(page, "#link-note"), await box(page, "#stage"))
        assert page_errors(page) == []
        assert unexpected(failed) == []


async def test_overlay_names_the_rendition_and_the_servers_estimate(server: ServerProcess, chromium) -> None:
    async with open_page(chromium, server.url) as page:
        await page.goto(server.url)
        await until(page, PLAYING_WEBRTC)
        await until(page, "window.camcast.rendition === 'high'")
        # The server's estimate of this viewer's link (from Chromium's REMB) joins it.
        await until(page, "window.camcast.estimateBps > 0", timeout=WAIT)
        overlay = await page.inner_text("#overlay")
        assert "rendition high · est " in overlay and "bit/s" in overlay, overlay
        session_id = await page.evaluate("window.camcastPlayer.active.id")
        status = await asyncio.to_thread(server.status)
        session = next(s for s in status["webrtc"]["sessions"] if s["id"] == session_id)
        assert session["rendition"] == "high" and session["estimate_bps"] > 0
        assert await page.is_hidden("#link-note")

        # A smaller picture is named from its size against the camera's ladder.
        names = await page.evaluate("""async (ladder) => {
            const { renditionOfWidth } = await import('/client/rendition.js');
            return [640, 320, 160, 500].map((width) => renditionOfWidth(width, 640, ladder));
        }""", status["renditions"])
        assert names == ["high", "medium", "low", None]
        assert page_errors(page) == []


# --- on an emulated network ----------------------------------------------------------------------

TOP_BPS = 1_500_000  # the top rendition (medium: 300 kbit/s, low: 75 kbit/s)


@contextlib.asynccontextmanager
async def chromium_inside(side: Side, workdir: Path) -> AsyncIterator[Browser]:
    """Debian's Chromium running inside `side`'s namespace (so its sockets are there), driven from
    here over Playwright's pipe."""
    wrapper = workdir / "chromium-in-namespace"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.join(side.command(str(CHROMIUM)))} \"$@\"\n")
    wrapper.chmod(0o755)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(wrapper), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


Behind = tuple[NetLab, ServerProcess, Page]


@contextlib.asynccontextmanager
async def player_behind_a_link(tmp_path: Path, query: str = "") -> AsyncIterator[Behind]:
    """The server in one namespace, a player page in Chromium in the other, joined by the link."""
    async with anetlab() as lab:
        server = await asyncio.to_thread(launch_server, lab, tmp_path / "server", ["--bitrate", str(TOP_BPS)])
        try:
            async with (chromium_inside(lab.viewer, tmp_path) as browser,
                        open_page(browser, server.url) as page):
                await page.goto(server.url + query)
                yield lab, server, page
        finally:
            code, _ = await asyncio.to_thread(server.terminate)
        assert code == 0, server.describe()
        assert "Traceback" not in server.log(), server.describe()


async def frames_keep_coming(page: Page, seconds: float = 3.0, at_least: int = 10) -> None:
    before = (await readings(page))["framesDecoded"]
    await until(page, f"window.camcast.framesDecoded >= {before + at_least}", timeout=seconds + WAIT)


async def test_on_a_link_that_narrows_then_loses_the_media_the_player_says_so_and_keeps_a_picture(
        tmp_path: Path) -> None:
    async with player_behind_a_link(tmp_path) as (lab, server, page):
        failed = watch_failures(page)
        await until(page, PLAYING_WEBRTC)
        await until(page, "window.camcast.rendition === 'high'")

        # The link narrows below the top rendition (which sends about 1.3 Mbit/s of this picture):
        # the server moves the viewer down; the player stays on WebRTC, names the rendition in its
        # overlay and says on the picture why it is smaller.
        lab.server.shape(900_000)
        await until(page, """(() => {
            const s = window.camcast;
            return ['medium', 'low'].includes(s.rendition) && s.width < 640 && s.transport === 'webrtc'
                && s.state === 'playing' && !document.getElementById('link-note').hidden
                && document.getElementById('overlay').innerText.includes(`rendition ${s.rendition}`);
        })()""", timeout=WAIT + 10)
        await frames_keep_coming(page)
        state = await readings(page)
        assert state["transport"] == "webrtc" and not state["degraded"], state

        # The media no longer gets through at all (HTTP still does): the notice at once, then the
        # light MJPEG variant.
        lab.server.clear()
        lab.server.loss(1.0, media_only=True)
        looks = await watch_screen(page, "window.camcast.link === 'weak'")
        assert await page.inner_text("#notice") == WEAK_NOTICE
        looks += await watch_screen(page, LIGHT_MJPEG, timeout=WAIT)
        assert all(look["notice"] for look in looks if look["frozenMs"] > 2500)
        await frames_keep_coming(page)

        # The media flows again: WebRTC, retried in the background, takes over once it plays.
        lab.server.clear_loss()
        await until(page, PLAYING_WEBRTC, timeout=WAIT + 20)
        await until(page, "window.camcast.rendition === 'high'")
        assert await page.get_attribute("#mjpeg", "src") is None
        await frames_keep_coming(page)
        status = await lab.server.acall(server.status)
        assert status["viewers"]["webrtc"] == 1 and status["viewers"]["mjpeg"] == 0, status["viewers"]
        assert page_errors(page) == []
        assert unexpected(failed) == []


async def test_mjpeg_on_a_slow_link_steps_down_then_back_up_when_it_is_fast_again(tmp_path: Path) -> None:
    async with player_behind_a_link(tmp_path, "?transport=mjpeg") as (lab, server, page):
        failed = watch_failures(page)
        await until(page, "window.camcast.state === 'playing' && window.camcast.mjpegLevel === 0")
        # 2 Mbit/s: the camera's own MJPEG (about 20 KB a frame at 30 fps) does not fit; 320 px does.
        lab.server.shape(2_000_000)
        await until(page, "window.camcast.mjpegLevel >= 1", timeout=WAIT)
        src = await page.get_attribute("#mjpeg", "src")
        assert src is not None and "width=" in src and "quality=" in src, src
        # Frames are on time again on a lighter variant.
        await until(page, "window.camcast.state === 'playing' && window.camcast.latencyMs !== null"
                          " && window.camcast.latencyMs < 500", timeout=WAIT + 10)
        width = await page.evaluate("document.getElementById('mjpeg').naturalWidth")
        assert width < 640
        assert await page.is_visible("#link-note")
        assert "variant" in await page.inner_text("#overlay")

        # The link is fast again: after a while on time, a step back up.
        lab.server.clear()
        level = (await readings(page))["mjpegLevel"]
        await until(page, f"window.camcast.mjpegLevel < {level} && window.camcast.state === 'playing'",
                    timeout=WAIT + 25)
        await until(page, f"document.getElementById('mjpeg').naturalWidth > {width}")
        # Each switch opened a new stream; the one it replaced is closed.
        await eventually(lambda: lab.server.acall(server.status), WAIT, "one MJPEG viewer left",
                         until=lambda status: status["viewers"]["mjpeg"] == 1)
        assert page_errors(page) == []
        assert unexpected(failed) == []
