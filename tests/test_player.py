"""The web player in real headless Chromium against the real server, under the page's real CSP.

Playwright's wait_for_function evaluates strings, which the CSP forbids, so waits poll
`page.evaluate` instead (that runs outside the page's CSP, like a debugger).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Page, Request, Response, Route

from support.browser import open_page
from support.server import ServerProcess

WAIT = 20.0  # generous: the machine is shared and may be busy
TOKEN = "player-Token_42"


async def until(page: Page, expression: str, timeout: float = WAIT) -> Any:
    """Poll a JS expression until it is truthy; fail with the player's readings if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            readings = await page.evaluate("window.camcast")
            raise AssertionError(f"timed out waiting for {expression!r}; window.camcast = {readings}")
        await asyncio.sleep(0.1)


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


async def test_transport_mjpeg_never_offers(server: ServerProcess, chromium) -> None:
    async with open_page(chromium, server.url) as page:
        failed = watch_failures(page)
        offers: list[str] = []
        page.on("request", lambda r: offers.append(r.url) if r.url.endswith("/offer") else None)
        await page.goto(server.url + "?transport=mjpeg")
        await until(page, "window.camcast.transport === 'mjpeg' && window.camcast.framesDecoded > 5")
        await asyncio.sleep(1.0)
        assert offers == []
        assert (await readings(page))["mode"] == "mjpeg"
        assert page_errors(page) == []
        assert unexpected(failed) == []


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
