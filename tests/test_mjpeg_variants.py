"""MJPEG variants (`?width=`, `?quality=`) against the real server and real HTTP clients.

One test-pattern server (640x480 at 30 fps, JPEG quality 80) serves most of the module; each test
first waits until the variants of the one before are forgotten. Pictures are decoded with OpenCV.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
import pytest_asyncio

from conftest import StartServer
from support.mjpeg import MjpegReader, Part, collect, coverage, open_mjpeg, rate_of
from support.server import ServerProcess, running
from support.waiting import eventually
from test_metrics import scrape, total, value

FPS = 30.0
MIN_FPS = 25.0
Variants = dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(tmp_path_factory.mktemp("variants")) as server:
        yield server


async def _status(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "api/status") as response:
        assert response.status == 200, await response.text()
        return await response.json()


def _variants(status: dict[str, Any]) -> Variants:
    return {variant["name"]: variant for variant in status["mjpeg_variants"]}


async def _wait_status(http: aiohttp.ClientSession, url: str, check: Callable[[dict[str, Any]], bool],
                       what: str, timeout: float = 10.0) -> dict[str, Any]:
    status: dict[str, Any] = await eventually(lambda: _status(http, url), timeout, what, until=check)
    return status


@pytest_asyncio.fixture
async def server(shared: ServerProcess, http: aiohttp.ClientSession) -> ServerProcess:
    """The module's server once nobody watches and the variants of earlier tests are forgotten."""
    await _wait_status(http, shared.url, lambda s: not s["mjpeg_variants"] and s["viewers"]["mjpeg"] == 0,
                       "no MJPEG viewers and no variants", timeout=15)
    return shared


def _shape(body: bytes) -> tuple[int, ...]:
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return tuple(image.shape)


async def _snapshot(http: aiohttp.ClientSession, url: str) -> bytes:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "image/jpeg"
        return await response.read()


async def _next_shape(reader: MjpegReader) -> tuple[int, ...]:
    part = await reader.next_part()
    assert part is not None, "the stream ended"
    return _shape(part.body)


async def _live_parts(reader: MjpegReader, seconds: float) -> list[Part]:
    await collect(reader, 0.5)  # past the first frames, which may come from before the request
    return await collect(reader, seconds)


def _median_bytes(parts: list[Part]) -> float:
    return statistics.median(len(part.body) for part in parts)


# -- what a variant looks like -----------------------------------------------------------------------
async def test_a_width_variant_is_that_wide_lighter_and_live(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    async with open_mjpeg(http, server.url + "video.mjpg?width=320") as small, \
            open_mjpeg(http, server.url + "video.mjpg") as full:
        small_parts, full_parts = await asyncio.gather(_live_parts(small, 2.0), _live_parts(full, 2.0))
    assert {_shape(part.body) for part in small_parts} == {(240, 320, 3)}
    assert {_shape(part.body) for part in full_parts} == {(480, 640, 3)}
    assert _median_bytes(small_parts) < 0.6 * _median_bytes(full_parts)
    stamps = [part.header_time_us for part in small_parts]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert rate_of(stamps) >= MIN_FPS, "a variant gets every frame, like the full stream"

    body = await _snapshot(http, server.url + "snapshot.jpg?width=320")
    assert _shape(body) == (240, 320, 3)


async def test_widths_snap_down_to_a_step_and_never_exceed_the_capture(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    assert _shape(await _snapshot(http, server.url + "snapshot.jpg?width=300")) == (180, 240, 3)
    assert _shape(await _snapshot(http, server.url + "snapshot.jpg?width=20")) == (120, 160, 3)
    assert _shape(await _snapshot(http, server.url + "snapshot.jpg?width=4000")) == (480, 640, 3)
    variants = _variants(await _status(http, server.url))
    # As wide as the capture at its own quality is the camera's own stream: no variant for it.
    assert set(variants) == {"jpeg-240q80", "jpeg-160q80"}
    assert variants["jpeg-240q80"]["width"] == 240 and variants["jpeg-240q80"]["quality"] == 80


async def test_quality_changes_the_bytes_not_the_size(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    async with open_mjpeg(http, server.url + "video.mjpg?quality=20") as low, \
            open_mjpeg(http, server.url + "video.mjpg?quality=90") as high:
        low_parts, high_parts = await asyncio.gather(_live_parts(low, 1.0), _live_parts(high, 1.0))
        variants = _variants(await _status(http, server.url))
    assert {_shape(part.body) for part in low_parts + high_parts} == {(480, 640, 3)}
    assert _median_bytes(low_parts) < 0.7 * _median_bytes(high_parts)
    assert {name: (v["width"], v["quality"]) for name, v in variants.items()} == {
        "jpeg-640q20": (640, 20), "jpeg-640q90": (640, 90)}
    # Qualities snap to steps of ten (95 at the top).
    await _snapshot(http, server.url + "snapshot.jpg?quality=33")
    await _snapshot(http, server.url + "snapshot.jpg?quality=100")
    assert {"jpeg-640q30", "jpeg-640q95"} <= set(_variants(await _status(http, server.url)))


# -- one encode per variant, however many clients ---------------------------------------------------
async def test_clients_of_one_variant_share_one_encoder(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    url = server.url + "video.mjpg?width=320&quality=50"
    async with open_mjpeg(http, url) as first, open_mjpeg(http, url) as second:
        assert await first.next_part() is not None and await second.next_part() is not None
        status = await _wait_status(http, server.url, lambda s: s["viewers"]["mjpeg"] == 2, "two viewers")
        variants = _variants(status)
        assert list(variants) == ["jpeg-320q50"]
        variant = variants["jpeg-320q50"]
        assert (variant["width"], variant["quality"], variant["clients"], variant["encoding"]) == (
            320, 50, 2, True)
        before = await scrape(http, server.url)
        parts = await asyncio.gather(collect(first, 2.0), collect(second, 2.0))
        after = await scrape(http, server.url)
    assert value(after, "camcast_encoder_running", encoder="jpeg-320q50") == 1
    captured = total(after, "camcast_frames_captured") - total(before, "camcast_frames_captured")
    encoded = (total(after, "camcast_frames_encoded", encoder="jpeg-320q50")
               - total(before, "camcast_frames_encoded", encoder="jpeg-320q50"))
    assert captured >= FPS
    assert 0.8 * captured <= encoded <= captured + 2, f"{encoded} encodes for {captured} frames"
    # The same frame reaches both clients as the very same bytes.
    by_stamp = {part.header_time_us: part.body for part in parts[0]}
    common = [part for part in parts[1] if part.header_time_us in by_stamp]
    assert len(common) >= 0.8 * len(parts[1])
    assert all(part.body == by_stamp[part.header_time_us] for part in common)


async def test_a_variant_stops_and_is_forgotten_after_its_clients_leave(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    threads_before = value(await scrape(http, server.url), "camcast_threads")
    async with open_mjpeg(http, server.url + "video.mjpg?width=480") as reader:
        assert len(await collect(reader, 0.5)) > 0
        variant = _variants(await _status(http, server.url))["jpeg-480q80"]
        assert (variant["clients"], variant["encoding"]) == (1, True)
        assert value(await scrape(http, server.url), "camcast_threads") > threads_before
    await _wait_status(http, server.url, lambda s: not s["mjpeg_variants"], "the variant to be forgotten")

    def gone(metrics: dict[str, Any]) -> bool:
        series = metrics["camcast_encoder_running"]
        return (all(s.labels["encoder"] != "jpeg-480q80" for s in series)
                and value(metrics, "camcast_threads") <= threads_before)

    await eventually(lambda: scrape(http, server.url), 10, "its encoder and thread to end", until=gone)


# -- what a client may ask ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["video.mjpg", "snapshot.jpg"])
@pytest.mark.parametrize(("name", "raw"), [
    ("width", "abc"), ("width", "0"), ("width", "-320"), ("width", "1e9"), ("width", "nan"),
    ("quality", "abc"), ("quality", "0"), ("quality", "101"), ("quality", "inf"),
])
async def test_bad_arguments_are_a_400(
    server: ServerProcess, http: aiohttp.ClientSession, path: str, name: str, raw: str
) -> None:
    async with http.get(server.url + path, params={name: raw}) as response:
        assert response.status == 400
        assert name in await response.text()
    assert _variants(await _status(http, server.url)) == {}


async def test_too_many_variants_is_a_503_until_one_is_free(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    urls = [server.url + f"video.mjpg?width=160&quality={quality}" for quality in range(10, 90, 10)]
    async with contextlib.AsyncExitStack() as stack:
        for url in urls[:-1]:
            reader = await stack.enter_async_context(open_mjpeg(http, url))
            assert await reader.next_part() is not None
        async with open_mjpeg(http, urls[-1]) as last:
            assert await last.next_part() is not None
            assert len(_variants(await _status(http, server.url))) == 8
            for path in ("video.mjpg", "snapshot.jpg"):
                async with http.get(server.url + path, params={"width": "160", "quality": "90"}) as response:
                    assert response.status == 503
                    reason = await response.text()
                    assert "8 MJPEG variants" in reason and "jpeg-160q10" in reason
            # A live variant takes more clients, and the camera's own stream is never refused.
            async with open_mjpeg(http, urls[0]) as again, \
                    open_mjpeg(http, server.url + "video.mjpg") as full:
                assert await _next_shape(again) == (120, 160, 3)
                assert await _next_shape(full) == (480, 640, 3)
        await _wait_status(http, server.url, lambda s: s["viewers"]["mjpeg"] == 7, "the last client to leave")
        # Its variant lingers unused: a new one takes its place.
        async with open_mjpeg(http, server.url + "video.mjpg?width=160&quality=90") as ninth:
            assert await _next_shape(ninth) == (120, 160, 3)
            variants = _variants(await _status(http, server.url))
    assert len(variants) == 8
    assert "jpeg-160q90" in variants and "jpeg-160q80" not in variants


async def test_fps_caps_a_variant_client(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    async def watch(query: str) -> list[Part]:
        async with open_mjpeg(http, server.url + "video.mjpg" + query) as reader:
            return await _live_parts(reader, 3.0)

    capped, full = await asyncio.gather(watch("?width=320&fps=5"), watch("?width=320"))
    assert {_shape(part.body) for part in capped + full} == {(240, 320, 3)}
    rate = len(capped) / 3.0
    assert 3.5 <= rate <= 5.7, f"?fps=5 gave {rate:.1f} fps"
    assert rate_of([part.header_time_us for part in full]) >= MIN_FPS


async def test_the_default_stream_is_unchanged_beside_variants(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    async with open_mjpeg(http, server.url + "video.mjpg?width=160&quality=10") as variant, \
            open_mjpeg(http, server.url + "video.mjpg") as full, \
            open_mjpeg(http, server.url + "video.mjpg?width=640&quality=80") as own:
        assert await variant.next_part() is not None
        full_parts, own_parts, _ = await asyncio.gather(
            _live_parts(full, 2.0), _live_parts(own, 2.0), collect(variant, 2.5))
        status = await _status(http, server.url)
    assert status["encoders"]["jpeg"] is True
    assert list(_variants(status)) == ["jpeg-160q10"], "the camera's own size and quality is no variant"
    assert {_shape(part.body) for part in full_parts} == {(480, 640, 3)}
    stamps = [part.header_time_us for part in full_parts]
    assert all(part.stamp_us() == part.header_time_us for part in full_parts)
    assert rate_of(stamps) >= MIN_FPS and coverage(stamps, FPS) >= 0.9
    # Asking for what the camera already sends gets the very same bytes.
    by_stamp = {part.header_time_us: part.body for part in full_parts}
    common = [part for part in own_parts if part.header_time_us in by_stamp]
    assert len(common) >= 0.8 * len(own_parts)
    assert all(part.body == by_stamp[part.header_time_us] for part in common)


# -- several cameras, on demand, shutdown -------------------------------------------------------------
async def test_each_camera_has_its_own_variants(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = start_server("--camera", "a=testpattern", "--camera", "b=testpattern", "--size", "320x240",
                          "--fps", "15", "--on-demand", source=None)
    camera_b = server.url + "cameras/b/"
    # An idle camera wakes for a variant's snapshot.
    assert _shape(await _snapshot(http, camera_b + "snapshot.jpg?width=160")) == (120, 160, 3)
    async with open_mjpeg(http, camera_b + "video.mjpg?width=160&quality=50") as reader:
        assert await _next_shape(reader) == (120, 160, 3)
        assert _variants(await _status(http, camera_b))["jpeg-160q50"]["clients"] == 1
        assert _variants(await _status(http, server.url + "cameras/a/")) == {}
        # The server stops at once with a variant's client reading: its endless response ends.
        reading = asyncio.create_task(collect(reader, 5.0))
        code, seconds = await asyncio.to_thread(server.terminate)
        await reading
        assert await reader.next_part() is None
    assert code == 0, server.log()
    assert seconds < 2.0, f"took {seconds:.2f} s to exit"
