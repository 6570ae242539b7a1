"""The wall of cameras (/ with several cameras) and a camera's own player (/cameras/<name>/), in
real headless Chromium against a real server with four test-pattern cameras.

As in test_player.py, waits poll `page.evaluate` (the page's CSP forbids Playwright's string waits).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Page, Request, Response, Route

from support.browser import open_page
from support.server import ServerProcess

WAIT = 25.0  # generous: four cameras and a browser share two busy cores
CAMERAS = ("a", "b", "c", "d")
StartServer = Callable[..., ServerProcess]


def start_wall_server(start_server: StartServer) -> ServerProcess:
    args = [arg for name in CAMERAS for arg in ("--camera", f"{name}=testpattern")]
    return start_server(*args, source=None)


@pytest.fixture
def wall_server(start_server: StartServer) -> ServerProcess:
    return start_wall_server(start_server)


async def stats(page: Page) -> dict[str, dict[str, Any]]:
    return await page.evaluate("window.camcastWall.stats()")


async def wait_stats(page: Page, check: Callable[[dict[str, dict[str, Any]]], bool],
                     what: str, timeout: float = WAIT) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        current = await page.evaluate("window.camcastWall ? window.camcastWall.stats() : null")
        if current is not None and check(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; stats = {current}")
        await asyncio.sleep(0.2)


async def until(page: Page, expression: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression!r}; stats = {await stats(page)}")
        await asyncio.sleep(0.1)


async def wait_frames_grow(page: Page, names: tuple[str, ...], transports: dict[str, str],
                           by: int = 10) -> None:
    """Every named tile keeps its transport and shows `by` more frames than now."""
    first = await stats(page)

    def grown(now: dict[str, dict[str, Any]]) -> bool:
        return all(now[n]["transport"] == transports[n]
                   and now[n]["framesDecoded"] >= first[n]["framesDecoded"] + by for n in names)
    await wait_stats(page, grown, f"{by} more frames on {names}")


async def cameras(server: ServerProcess) -> dict[str, dict[str, Any]]:
    code, _, body = await asyncio.to_thread(server.get, "api/cameras")
    assert code == 200, body
    return {camera["name"]: camera for camera in json.loads(body)}


async def wait_cameras(server: ServerProcess, check: Callable[[dict[str, dict[str, Any]]], bool],
                       timeout: float = WAIT) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        current = await cameras(server)
        if check(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"/api/cameras never matched: {current}")
        await asyncio.sleep(0.2)


def viewers(current: dict[str, dict[str, Any]], kind: str) -> dict[str, int]:
    return {name: camera["viewers"][kind] for name, camera in current.items()}


def page_errors(page: Page) -> list[str]:
    return [e for e in page.errors if "Failed to load resource: the server responded" not in e]  # type: ignore[attr-defined]


def watch_failures(page: Page) -> list[str]:
    failed: list[str] = []

    def on_response(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url.split('/', 3)[-1]}")

    def on_failed(request: Request) -> None:
        # Closing an endless MJPEG response is how a tile lets go of it, not a failure.
        if not request.url.split("?")[0].endswith("video.mjpg"):
            failed.append(f"failed {request.url.split('/', 3)[-1]}")

    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    return failed


def all_on(transport: str, names: tuple[str, ...] = CAMERAS) -> Callable[[dict[str, dict[str, Any]]], bool]:
    return lambda now: set(now) == set(names) and all(
        tile["transport"] == transport and tile["framesDecoded"] > 0 for tile in now.values())


def inactive_section(sdp: str, index: int) -> str:
    """The answer with its `index`-th video m-section's direction turned to a=inactive."""
    lines = sdp.splitlines(keepends=True)
    out: list[str] = []
    video = -1
    for line in lines:
        if line.startswith("m="):
            video += line.startswith("m=video")
        if video == index and line.rstrip("\r\n") in ("a=sendonly", "a=sendrecv", "a=recvonly"):
            line = "a=inactive" + line[len(line.rstrip("\r\n")):]
        out.append(line)
    rewritten = "".join(out)
    assert rewritten.count("a=inactive") == sdp.count("a=inactive") + 1, "no direction line rewritten"
    return rewritten


def refuse_camera(name: str, how: str) -> Callable[[Route], Awaitable[None]]:
    """Let /wall/offer through, but make the answer refuse camera `name` (its m-line inactive,
    its JSON entry ok:false, or both)."""
    async def handler(route: Route) -> None:
        offer = route.request.post_data_json
        response = await route.fetch()
        answer = await response.json()
        index = offer["cameras"].index(name)
        if how in ("sdp", "both"):
            answer["sdp"] = inactive_section(answer["sdp"], index)
        if how in ("json", "both"):
            answer["cameras"] = [{"name": e["name"], "ok": False, "error": "refused for this test"}
                                 if e["name"] == name else e for e in answer["cameras"]]
        await route.fulfill(response=response, json=answer)
    return handler


async def test_every_camera_plays_over_one_webrtc_session(wall_server: ServerProcess, chromium) -> None:
    async with open_page(chromium, wall_server.url) as page:
        failed = watch_failures(page)
        offers: list[dict[str, Any]] = []

        def on_request(request: Request) -> None:
            if request.url.endswith("/wall/offer"):
                offers.append(request.post_data_json)

        page.on("request", on_request)
        await page.goto(wall_server.url)

        await wait_stats(page, all_on("webrtc"), "every tile on WebRTC with a frame")
        await wait_frames_grow(page, CAMERAS, dict.fromkeys(CAMERAS, "webrtc"), by=15)
        # One offer for all four, one video m-line each, in the server's order.
        assert len(offers) == 1, offers
        assert offers[0]["cameras"] == list(CAMERAS)
        assert offers[0]["sdp"].count("m=video") == 4 and "m=application" not in offers[0]["sdp"]
        tiles = await page.evaluate("""() => [...document.querySelectorAll('.tile')].map((t) => ({
            camera: t.dataset.camera, transport: t.dataset.transport, href: t.getAttribute('href'),
            name: t.querySelector('.tile-name').textContent,
            state: t.querySelector('.tile-state').textContent,
            rec: !t.querySelector('.tile-rec').hidden, mjpeg: t.querySelector('img').getAttribute('src'),
            width: t.querySelector('video').videoWidth }))""")
        assert [t["camera"] for t in tiles] == list(CAMERAS)
        for tile in tiles:
            name = tile["name"]
            assert tile == {"camera": name, "transport": "webrtc", "href": f"/cameras/{name}/", "name": name,
                            "state": "up", "rec": False, "mjpeg": None, "width": 640}
        # The server sees one WebRTC viewer on each camera and no MJPEG behind the pictures.
        await wait_cameras(wall_server, lambda now: viewers(now, "webrtc") == dict.fromkeys(CAMERAS, 1)
                           and viewers(now, "mjpeg") == dict.fromkeys(CAMERAS, 0))

        # Recording camera b lights b's record dot only.
        await page.evaluate("fetch('/cameras/b/api/record/start', { method: 'POST' })")
        await until(page, "!document.querySelector('.tile[data-camera=b] .tile-rec').hidden")
        assert await page.evaluate(
            "[...document.querySelectorAll('.tile-rec')].filter((r) => !r.hidden).length") == 1
        await page.evaluate("fetch('/cameras/b/api/record/stop', { method: 'POST' })")
        await until(page, "document.querySelector('.tile[data-camera=b] .tile-rec').hidden")

        assert failed == []

        # A click on a tile opens that camera's player; leaving the wall ended its session at once.
        await page.click(".tile[data-camera=c]")
        await page.wait_for_url(f"{wall_server.url}cameras/c/")
        await until(page, "window.camcast && window.camcast.state === 'playing'")
        only_c = {"a": 0, "b": 0, "c": 1, "d": 0}
        await wait_cameras(wall_server, lambda now: viewers(now, "webrtc") == only_c, timeout=10)
        assert page_errors(page) == []


@pytest.mark.parametrize("how", ["sdp", "json"], ids=["inactive-m-line", "ok-false"])
async def test_one_tile_falls_back_to_mjpeg_alone(wall_server: ServerProcess, chromium, how: str) -> None:
    async with open_page(chromium, wall_server.url) as page:
        await page.route("**/wall/offer", refuse_camera("c", how))
        await page.goto(wall_server.url)

        expected = {name: "mjpeg" if name == "c" else "webrtc" for name in CAMERAS}
        await wait_stats(page, lambda now: set(now) == set(CAMERAS) and all(
            now[n]["transport"] == expected[n] and now[n]["framesDecoded"] > 0 for n in CAMERAS),
            "c on MJPEG, the others on WebRTC")
        await wait_frames_grow(page, CAMERAS, expected, by=10)
        assert await page.get_attribute(".tile[data-camera=c]", "data-transport") == "mjpeg"
        src = await page.get_attribute(".tile[data-camera=c] img", "src")
        assert src is not None and src.startswith("/cameras/c/video.mjpg")
        assert await page.evaluate("document.querySelector('.tile[data-camera=c] img').naturalWidth") == 640
        for name in ("a", "b", "d"):
            assert await page.get_attribute(f".tile[data-camera={name}] img", "src") is None
        await wait_cameras(wall_server, lambda now: viewers(now, "mjpeg") == {"a": 0, "b": 0, "c": 1, "d": 0}
                           and all(viewers(now, "webrtc")[n] == 1 for n in ("a", "b", "d")))
        assert page_errors(page) == []


async def test_every_tile_on_mjpeg_while_webrtc_fails_then_back(wall_server: ServerProcess, chromium) -> None:
    async with open_page(chromium, wall_server.url) as page:
        refused: list[str] = []

        async def refuse(route: Route) -> None:
            refused.append(route.request.url)
            await route.fulfill(status=503, content_type="text/plain", body="busy for this test\n")

        await page.route("**/wall/offer", refuse)
        await page.goto(wall_server.url)
        await wait_stats(page, all_on("mjpeg"), "every tile on MJPEG")
        await wait_frames_grow(page, CAMERAS, dict.fromkeys(CAMERAS, "mjpeg"), by=10)
        assert refused, "the wall never tried WebRTC"
        await wait_cameras(wall_server, lambda now: viewers(now, "mjpeg") == dict.fromkeys(CAMERAS, 1))

        # WebRTC is tried again in the background (after ~12 s) and every tile moves back to it.
        await page.unroute("**/wall/offer")
        await wait_stats(page, all_on("webrtc"), "every tile back on WebRTC", timeout=WAIT + 15)
        await wait_cameras(wall_server, lambda now: viewers(now, "mjpeg") == dict.fromkeys(CAMERAS, 0)
                           and viewers(now, "webrtc") == dict.fromkeys(CAMERAS, 1))
        assert page_errors(page) == []


async def test_transport_mjpeg_never_offers(wall_server: ServerProcess, chromium) -> None:
    async with open_page(chromium, wall_server.url) as page:
        offers: list[str] = []
        page.on("request", lambda r: offers.append(r.url) if r.url.endswith("/offer") else None)
        await page.goto(wall_server.url + "?transport=mjpeg")
        await wait_stats(page, all_on("mjpeg"), "every tile on MJPEG")
        await wait_frames_grow(page, CAMERAS, dict.fromkeys(CAMERAS, "mjpeg"), by=10)
        assert offers == []
        assert page_errors(page) == []


async def test_a_cameras_player_plays_that_camera(wall_server: ServerProcess, chromium) -> None:
    async with open_page(chromium, wall_server.url) as page:
        failed = watch_failures(page)
        paths: list[str] = []
        page.on("request", lambda r: paths.append(r.url.split("/", 3)[-1].split("?")[0]))
        await page.goto(wall_server.url + "cameras/b/")
        await until(page, "window.camcast && window.camcast.transport === 'webrtc' "
                          "&& window.camcast.state === 'playing' && window.camcast.framesDecoded > 10")
        # It talks to camera b's routes only, and b's status says so.
        status = await page.evaluate("fetch('/cameras/b/api/status').then((r) => r.json())")
        assert (status["camera"], status["cameras"]) == ("b", 4)
        assert "cameras/b/offer" in paths and "cameras/b/api/status" in paths
        assert not [p for p in paths if p in ("offer", "api/status", "api/record", "api/recordings")]
        only_b = {"a": 0, "b": 1, "c": 0, "d": 0}
        await wait_cameras(wall_server, lambda now: viewers(now, "webrtc") == only_b)
        # Named, with a way back to every camera.
        assert await page.title() == "b · camcast"
        assert await page.inner_text("#camera-name") == "b"
        await until(page, "!document.getElementById('all-cameras').hidden")
        assert await page.get_attribute("#all-cameras", "href") == "/"
        assert failed == []
        await page.click("#all-cameras")
        await page.wait_for_url(wall_server.url)
        await until(page, "document.querySelectorAll('.tile').length === 4")
        assert page_errors(page) == []


async def test_token_from_the_address_reaches_every_tile(start_server: StartServer, chromium) -> None:
    token = "wall-Token_7"
    server = start_server("--token", token, "--camera", "a=testpattern", "--camera", "b=testpattern",
                          source=None)
    async with open_page(chromium, server.url) as page:
        await page.goto(f"{server.url}?token={token}")
        await wait_stats(page, all_on("webrtc", ("a", "b")), "both tiles on WebRTC")
        assert page.url == server.url, "the token stayed in the address bar"
        assert not await page.evaluate("document.getElementById('token-dialog').open")
        # The same tab remembers it; the MJPEG tiles carry it in their URLs.
        await page.goto(f"{server.url}?transport=mjpeg")
        await wait_stats(page, all_on("mjpeg", ("a", "b")), "both tiles on MJPEG")
        src = await page.get_attribute(".tile[data-camera=b] img", "src")
        assert src is not None and src.startswith("/cameras/b/video.mjpg") and f"token={token}" in src
        assert page_errors(page) == []
    assert token not in server.log()


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, {"width": 390, "height": 844}],
                         ids=["desktop", "phone"])
async def test_layout_fits_the_width_and_keeps_the_aspect(wall_server: ServerProcess, chromium,
                                                         viewport: dict[str, int]) -> None:
    async with open_page(chromium, wall_server.url) as page:
        await page.set_viewport_size(viewport)
        await page.goto(wall_server.url)
        await wait_stats(page, all_on("webrtc"), "every tile on WebRTC with a frame")
        boxes = await page.evaluate("""() => ({
            scroll: document.documentElement.scrollWidth,
            tiles: [...document.querySelectorAll('.tile-stage')].map((s) => {
                const r = s.getBoundingClientRect();
                return { left: r.left, top: r.top, width: r.width, height: r.height };
            }) })""")
        assert boxes["scroll"] <= viewport["width"], "the page scrolls sideways"
        tiles = boxes["tiles"]
        assert len(tiles) == 4
        for tile in tiles:
            assert abs(tile["width"] / tile["height"] - 4 / 3) < 0.02, tile
            assert tile["left"] >= 0 and tile["left"] + tile["width"] <= viewport["width"]
        columns = len({round(tile["left"]) for tile in tiles})
        if viewport["width"] < 560:
            assert columns == 1
            assert tiles[0]["width"] > viewport["width"] * 0.9
        else:
            # Every camera at once, as large as fits: no scrolling, more than one column, centred.
            assert columns > 1 and all(tile["width"] >= 320 for tile in tiles)
            assert all(tile["top"] + tile["height"] <= viewport["height"] for tile in tiles), tiles
            left = min(tile["left"] for tile in tiles)
            right = viewport["width"] - max(tile["left"] + tile["width"] for tile in tiles)
            assert abs(left - right) < 12, (left, right)
        name = "desktop" if viewport["width"] >= 560 else "phone"
        await page.screenshot(path=f"/tmp/wall-{name}.png")
        await page.goto(wall_server.url + "cameras/b/")
        await until(page, "window.camcast && window.camcast.state === 'playing'")
        await page.screenshot(path=f"/tmp/wall-player-{name}.png")
        assert page_errors(page) == []
