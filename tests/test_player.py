"""The web player in real headless Chromium against the real server, under the page's real CSP.

Playwright's wait_for_function evaluates strings, which the CSP forbids, so waits poll
`page.evaluate` instead (that runs outside the page's CSP, like a debugger).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Page, Request, Response, Route

from support.browser import open_page
from support.server import ServerProcess
from support.waiting import eventually

WAIT = 20.0  # generous: the machine is shared and may be busy
TOKEN = "player-Token_42"


async def until(page: Page, expression: str, timeout: float = WAIT) -> Any:
    """Poll a JS expression until it is truthy; fail with the player's readings if it never is."""
    try:
        return await eventually(lambda: page.evaluate(expression), timeout, repr(expression), interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; window.camcast = {await readings(page)}") from None


async def readings(page: Page) -> dict[str, Any]:
    return await page.evaluate("window.camcast")


def watch_failures(page: Page) -> list[str]:
    """Paths of every request that failed or answered >= 400, as the page saw them."""
    failed: list[str] = []

    def on_response(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url.split('/', 3)[-1]}")

    def on_failed(request: Request) -> None:
        failed.append(f"failed {request.url.split('/', 3)[-1]}")

    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    return failed


def page_errors(page: Page) -> list[str]:
    """Console errors and uncaught exceptions, without Chromium's line for each HTTP error status
    (those are checked by path through watch_failures)."""
    return [e for e in page.errors if "Failed to load resource: the server responded" not in e]  # type: ignore[attr-defined]


def fail_offer(status: int = 500) -> Callable[[Route], Awaitable[None]]:
    async def handler(route: Route) -> None:
        await route.fulfill(status=status, content_type="text/plain", body="offer refused for this test\n")
    return handler


# Endpoints whose server side may not exist yet: a 404 there is handled by the page, not an error.
OPTIONAL = ("api/record", "api/recordings")


def unexpected(failed: list[str], allowed: tuple[str, ...] = ()) -> list[str]:
    ok = OPTIONAL + allowed
    return [f for f in failed if not any(f.split(" ", 1)[1].split("?")[0] == path for path in ok)]


async def test_falls_back_to_mjpeg_when_webrtc_fails(server: ServerProcess, chromium) -> None:
    async with open_page(chromium, server.url) as page:
        failed = watch_failures(page)
        offers: list[str] = []
        page.on("request", lambda r: offers.append(r.method) if r.url.endswith("/offer") else None)
        await page.route("**/offer", fail_offer(500))
        await page.goto(server.url)

        await until(page, "window.camcast.transport === 'mjpeg' && window.camcast.state === 'playing'")
        assert offers, "the player never tried WebRTC"
        # The <img> shows the stream: its frames keep coming and their stamps read back.
        assert await page.evaluate("document.getElementById('mjpeg').naturalWidth") == 640
        assert await page.evaluate("getComputedStyle(document.getElementById('mjpeg')).display") != "none"
        first = (await readings(page))["framesDecoded"]
        await until(page, f"window.camcast.framesDecoded > {first} + 10")
        await until(page, "window.camcast.latencyMs !== null && window.camcast.latencySamples.length > 3")
        state = await readings(page)
        assert state["codec"] == "MJPEG"
        assert (state["width"], state["height"]) == (640, 480)
        assert state["fps"] > 5
        # Same machine, same clock: a few tens of ms; generous bounds for a busy machine.
        assert 0 <= state["latencyMs"] < 2000, state
        assert all(0 <= ms <= 10_000 for ms in state["latencySamples"])
        # The overlay shows the same reading, and the transport.
        overlay = await page.inner_text("#overlay")
        assert "MJPEG" in overlay and "latency" in overlay and "ms" in overlay
        assert await page.inner_text("#transport") == "MJPEG"
        assert not await page.evaluate("document.getElementById('video').srcObject")

        assert page_errors(page) == []
        assert unexpected(failed, allowed=("offer",)) == []


def without_candidates(sdp: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith("a=candidate"))


async def test_failed_attempt_ends_its_server_session_and_its_watch(server: ServerProcess, chromium) -> None:
    # Neither side learns an address: the answer arrives and a track with it, but no frame ever does.
    async with open_page(chromium, server.url) as page:
        ids: list[str] = []
        deletes: list[tuple[str, int]] = []

        async def unreachable(route: Route) -> None:
            offer = route.request.post_data_json
            response = await route.fetch(post_data={**offer, "sdp": without_candidates(offer["sdp"])})
            answer = await response.json()
            ids.append(answer["id"])
            await route.fulfill(response=response, json={**answer, "sdp": without_candidates(answer["sdp"])})

        def on_response(response: Response) -> None:
            if response.request.method == "DELETE":
                deletes.append((response.url.split("/", 3)[-1], response.status))

        page.on("response", on_response)
        await page.route("**/offer", unreachable)
        await page.goto(server.url)

        await until(page, "window.camcast.frameWatchers === 1")  # waiting for the first frame
        await until(page, "window.camcast.transport === 'mjpeg' && window.camcast.frameWatchers === 0")
        await eventually(lambda: deletes, WAIT, "the page to DELETE the attempt's session")
        # The server still held the attempt's session, and ended it when asked.
        assert deletes == [(f"whep/{ids[0]}", 200)]
        await wait_status(server, lambda s: s["viewers"]["webrtc"] == 0)
        assert page_errors(page) == []


async def test_transport_mjpeg_never_offers(server: ServerProcess, chromium) -> None:
    async with open_page(chromium, server.url) as page:
        failed = watch_failures(page)
        offers: list[str] = []
        page.on("request", lambda r: offers.append(r.url) if r.url.endswith("/offer") else None)
        await page.goto(server.url + "?transport=mjpeg")
        await until(page, "window.camcast.transport === 'mjpeg' && window.camcast.framesDecoded > 5")
        await asyncio.sleep(1.0)  # a while longer playing: still no offer
        assert offers == []
        assert (await readings(page))["mode"] == "mjpeg"
        assert page_errors(page) == []
        assert unexpected(failed) == []


async def test_transport_webrtc_never_falls_back(server: ServerProcess, chromium) -> None:
    async with open_page(chromium, server.url) as page:
        offers: list[str] = []
        page.on("request", lambda r: offers.append(r.url) if r.url.endswith("/offer") else None)
        await page.route("**/offer", fail_offer(500))
        await page.goto(server.url + "?transport=webrtc")
        await until(page, "window.camcast.state === 'reconnecting'")
        # It keeps trying WebRTC and never opens the MJPEG stream.
        await eventually(lambda: len(offers) >= 2, WAIT, "a second WebRTC offer", interval=0.2)
        assert await page.get_attribute("#mjpeg", "src") is None
        assert (await readings(page))["transport"] is None
        assert "reconnecting" in await page.inner_text("#notice")
        assert (await asyncio.to_thread(server.status))["viewers"]["mjpeg"] == 0


async def test_stamp_reader_reads_the_servers_capture_time(server: ServerProcess, chromium) -> None:
    # The snapshot carries its capture time as a header: the page's reader must find it in the pixels.
    async with open_page(chromium, server.url) as page:
        await page.goto(server.url + "?transport=mjpeg")
        await until(page, "window.camcast.transport === 'mjpeg'")
        result = await page.evaluate("""async () => {
            const { StampReader } = await import('/client/stamp.js');
            const response = await fetch('/snapshot.jpg');
            const header = response.headers.get('X-Timestamp');
            const bitmap = await createImageBitmap(await response.blob());
            const { stamp } = new StampReader().read(bitmap, bitmap.width, bitmap.height);
            return { header, stamp: stamp === null ? null : stamp.toString() };
        }""")
        assert result["stamp"] is not None
        header_us = round(float(result["header"]) * 1_000_000)
        assert abs(int(result["stamp"]) - header_us) <= 1, result
        assert page_errors(page) == []


async def test_token_form_then_playback_with_token(start_server, chromium) -> None:
    server = start_server("--token", TOKEN)
    async with open_page(chromium, server.url) as page:
        await page.route("**/offer", fail_offer(500))
        await page.goto(server.url)
        await until(page, "document.getElementById('token-dialog').open")
        # A wrong token: the form stays and says so.
        await page.fill("#token-input", "not-the-token")
        await page.click("#token-dialog button[type=submit]")
        await until(page, "document.querySelector('.token-message').textContent.includes('not accepted')")
        assert await page.evaluate("document.getElementById('token-dialog').open")

        await page.fill("#token-input", TOKEN)
        await page.click("#token-dialog button[type=submit]")
        await until(page, "window.camcast.transport === 'mjpeg' && window.camcast.framesDecoded > 5")
        assert not await page.evaluate("document.getElementById('token-dialog').open")
        assert await page.evaluate("sessionStorage.getItem('camcast.token')") == TOKEN
        src = await page.get_attribute("#mjpeg", "src")
        assert src is not None and f"token={TOKEN}" in src
        await until(page, "document.getElementById('status').textContent.includes('640x480')")

        # A reload keeps the token for this tab: no form again.
        await page.reload()
        await until(page, "window.camcast.transport === 'mjpeg' && window.camcast.framesDecoded > 5")
        assert not await page.evaluate("document.getElementById('token-dialog').open")
    assert TOKEN not in server.log()


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, {"width": 390, "height": 844}],
                         ids=["desktop", "phone"])
async def test_layout_fits_the_width_and_keeps_the_aspect(server: ServerProcess, chromium, viewport) -> None:
    async with open_page(chromium, server.url) as page:
        await page.set_viewport_size(viewport)
        await page.goto(server.url + "?transport=mjpeg")
        await until(page, "window.camcast.framesDecoded > 5")
        box = await page.evaluate("""() => {
            const r = document.getElementById('stage').getBoundingClientRect();
            const c = document.querySelector('.controls').getBoundingClientRect();
            return { width: r.width, height: r.height, bottom: r.bottom, controlsTop: c.top,
                     scroll: document.documentElement.scrollWidth };
        }""")
        assert box["scroll"] <= viewport["width"], "the page scrolls sideways"
        assert box["width"] <= viewport["width"]
        assert abs(box["width"] / box["height"] - 4 / 3) < 0.02, box
        assert box["bottom"] <= viewport["height"], "the picture does not fit the window"
        assert box["controlsTop"] >= box["bottom"] - 1, "the controls overlap the picture"
        assert page_errors(page) == []


async def wait_status(server: ServerProcess, check: Callable[[dict[str, Any]], bool],
                      timeout: float = WAIT) -> dict[str, Any]:
    return await eventually(lambda: asyncio.to_thread(server.status), timeout, "the status to match",
                            until=check, interval=0.2)


PLAYING_WEBRTC = "window.camcast.transport === 'webrtc' && window.camcast.state === 'playing'"


async def test_plays_over_webrtc_with_h264(server: ServerProcess, chromium) -> None:
    async with open_page(chromium, server.url) as page:
        failed = watch_failures(page)
        await page.goto(server.url)
        await until(page, PLAYING_WEBRTC)
        assert await page.evaluate("document.getElementById('video').videoWidth") == 640
        await until(page, "window.camcast.framesDecoded > 0 && window.camcast.codec !== null")
        first = (await readings(page))["framesDecoded"]
        await until(page, f"window.camcast.framesDecoded > {first} + 15")
        await until(page, "window.camcast.latencyMs !== null && window.camcast.rttMs !== null")
        state = await readings(page)
        assert state["codec"].lower() == "video/h264", state
        assert (state["width"], state["height"]) == (640, 480)
        assert state["fps"] > 5
        assert 0 <= state["latencyMs"] < 2000, state  # a few tens of ms here; generous when busy
        assert 0 <= state["rttMs"] < 2000  # ping/pong over the control channel
        overlay = await page.inner_text("#overlay")
        assert "WebRTC" in overlay and "H.264" in overlay and "latency" in overlay
        # No MJPEG behind the WebRTC picture: the server sees exactly one WebRTC viewer.
        assert await page.get_attribute("#mjpeg", "src") is None
        await wait_status(server, lambda s: s["viewers"]["webrtc"] == 1 and s["viewers"]["mjpeg"] == 0)
        assert page_errors(page) == []
        assert unexpected(failed) == []


async def test_switches_back_to_webrtc_once_it_works(server: ServerProcess, chromium) -> None:
    async with open_page(chromium, server.url) as page:
        refused: list[int] = []

        async def refuse_first(route: Route) -> None:
            if not refused:
                refused.append(1)
                await route.fulfill(status=503, body="busy\n")
            else:
                await route.continue_()

        await page.route("**/offer", refuse_first)
        await page.goto(server.url)
        await until(page, "window.camcast.transport === 'mjpeg' && window.camcast.state === 'playing'")
        # The player retries WebRTC in the background (every ~12 s) and moves over when it plays.
        await until(page, PLAYING_WEBRTC, timeout=WAIT + 15)
        assert await page.get_attribute("#mjpeg", "src") is None
        await wait_status(server, lambda s: s["viewers"]["webrtc"] == 1 and s["viewers"]["mjpeg"] == 0)
        assert page_errors(page) == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_reconnects_after_the_server_restarts(start_server, chromium) -> None:
    port = str(_free_port())
    server = start_server("--port", port)
    async with open_page(chromium, server.url) as page:
        await page.goto(server.url)
        await until(page, PLAYING_WEBRTC)
        await asyncio.to_thread(server.terminate)
        # The page notices the loss (the server closes the session) and leaves WebRTC.
        await until(page, "window.camcast.transport !== 'webrtc' || window.camcast.state !== 'playing'")
        again = start_server("--port", port)
        await until(page, PLAYING_WEBRTC, timeout=WAIT + 15)
        await until(page, "window.camcast.framesDecoded > 10")
        await wait_status(again, lambda s: s["viewers"]["webrtc"] == 1 and s["viewers"]["mjpeg"] == 0)


async def test_record_from_any_viewer_then_play_and_delete(server: ServerProcess, chromium) -> None:
    async with open_page(chromium, server.url) as rtc, open_page(chromium, server.url) as mjpeg:
        posts: list[str] = []
        mjpeg.on("request", lambda r: posts.append(r.url.split("/", 3)[-1]) if r.method == "POST" else None)
        await rtc.goto(server.url)
        await mjpeg.goto(server.url + "?transport=mjpeg")
        await until(rtc, PLAYING_WEBRTC)
        await until(mjpeg, "window.camcast.state === 'playing'")
        await until(mjpeg, "!document.getElementById('record').disabled")

        # Start on the MJPEG viewer (REST); the WebRTC viewer hears of it on its control channel.
        await mjpeg.click("#record")
        await until(rtc, "!document.getElementById('rec-badge').hidden && window.camcast.recording")
        await until(mjpeg, "!document.getElementById('rec-badge').hidden")
        assert posts == ["api/record/start"]
        await until(rtc, "document.getElementById('rec-time').textContent !== '0:00'")  # the clock runs
        # Stop on the WebRTC viewer (data channel); the MJPEG viewer's poll sees it.
        await rtc.click("#record")
        await until(mjpeg, "document.getElementById('rec-badge').hidden")
        await until(rtc, "document.getElementById('rec-badge').hidden && !window.camcast.recording")

        # The finished file appears in the list, plays in the panel's <video>, and can be deleted.
        await until(rtc, "document.querySelectorAll('.recording-row:not(.active)').length === 1")
        name = await rtc.get_attribute(".recording-row", "data-name")
        assert name and (server.recordings / name).is_file()
        await rtc.click(".recording-row [data-action=play]")
        await until(rtc, "document.querySelector('.recording-player video').readyState >= 2")
        duration = await rtc.evaluate("document.querySelector('.recording-player video').duration")
        assert 0.5 < duration < 30, duration
        href = await rtc.get_attribute(".recording-row [data-action=download]", "href")
        assert href == f"/recordings/{name}"

        await rtc.click(".recording-row [data-action=delete]")  # arms it
        assert await rtc.inner_text(".recording-row [data-action=delete]") == "Delete?"
        assert (server.recordings / name).is_file()
        await rtc.click(".recording-row [data-action=delete]")
        await until(rtc, "document.querySelectorAll('.recording-row').length === 0")
        assert await rtc.is_hidden(".recording-player")
        assert not (server.recordings / name).exists()
        assert "No recordings" in await rtc.inner_text(".recordings-message")
        assert page_errors(rtc) == [] and page_errors(mjpeg) == []
