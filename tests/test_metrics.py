"""GET /metrics: Prometheus text that parses, holds the pipeline's metrics, and grows while watched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from camcast.app import create_app
from camcast.appkeys import CAMERAS, METRICS
from camcast.config import load_config
from support.mjpeg import collect, open_mjpeg
from support.waiting import eventually
from support.webrtc_viewer import Viewer

Scrape = dict[str, list[Sample]]  # metric family name -> its samples


async def scrape(http: aiohttp.ClientSession, url: str) -> Scrape:
    async with http.get(url + "metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(metrics: Scrape, family: str, sample: str | None = None, **labels: str) -> float:
    """The one sample of `family` (named `sample`, default the family) whose labels include `labels`."""
    name = sample or family
    found = [s.value for s in metrics[family]
             if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (family, name, labels, metrics.get(family))
    return found[0]


def total(metrics: Scrape, family: str, **labels: str) -> float:
    """A counter's value (its sample carries the `_total` suffix)."""
    return value(metrics, family, family + "_total", **labels)


async def test_metrics_parse_and_grow_while_an_mjpeg_client_watches(server, http) -> None:
    before = await scrape(http, server.url)
    for family in ("camcast_frames_captured", "camcast_capture_fps", "camcast_encode_seconds",
                   "camcast_encoder_running", "camcast_viewers", "camcast_hub_dropped",
                   "camcast_bytes_sent", "camcast_source_up", "camcast_source_reconnects",
                   "camcast_display_latency_seconds", "camcast_frames_encoded", "camcast_build_info"):
        assert family in before, family
    assert value(before, "camcast_source_up") == 1
    assert value(before, "camcast_source_reconnects", "camcast_source_reconnects_total") == 0
    assert value(before, "camcast_viewers", kind="mjpeg") == 0
    for encoder in ("jpeg", "h264", "vp8"):
        value(before, "camcast_encode_seconds", "camcast_encode_seconds_count", encoder=encoder)
        value(before, "camcast_encoder_running", encoder=encoder)
    for hub in ("frames", "jpeg", "h264-packets", "vp8-packets"):
        value(before, "camcast_hub_dropped", "camcast_hub_dropped_total", hub=hub)

    async with open_mjpeg(http, server.url + "video.mjpg") as reader:
        parts = await collect(reader, 10.0, limit=10)
        during = await scrape(http, server.url)
        await collect(reader, 10.0, limit=5)
        later = await scrape(http, server.url)
    assert len(parts) == 10
    assert value(during, "camcast_viewers", kind="mjpeg") == 1
    assert value(during, "camcast_encoder_running", encoder="jpeg") == 1
    assert value(during, "camcast_capture_fps") > 5  # 30 fps asked; generous on a busy machine

    def grew(family: str, sample: str, **labels: str) -> bool:
        return value(later, family, sample, **labels) > value(before if family != "camcast_bytes_sent"
                                                               else during, family, sample, **labels)

    assert grew("camcast_frames_captured", "camcast_frames_captured_total")
    assert grew("camcast_frames_encoded", "camcast_frames_encoded_total", encoder="jpeg")
    assert grew("camcast_encode_seconds", "camcast_encode_seconds_count", encoder="jpeg")
    assert grew("camcast_bytes_sent", "camcast_bytes_sent_total", kind="mjpeg")
    sent = value(later, "camcast_bytes_sent", "camcast_bytes_sent_total", kind="mjpeg")
    assert sent >= sum(len(p.body) for p in parts)
    count = value(later, "camcast_encode_seconds", "camcast_encode_seconds_count", encoder="jpeg")
    inf = value(later, "camcast_encode_seconds", "camcast_encode_seconds_bucket", encoder="jpeg", le="+Inf")
    assert inf == count
    assert value(later, "camcast_viewers_joined", "camcast_viewers_joined_total", kind="mjpeg") == 1


async def test_metrics_need_the_token_when_one_is_set(start_server, http) -> None:
    server = start_server("--token", "metrics-token")
    async with http.get(server.url + "metrics") as response:
        assert response.status == 401
    async with http.get(server.url + "metrics", headers={"Authorization": "Bearer metrics-token"}) as r:
        assert r.status == 200
        families = {f.name for f in text_string_to_metric_families(await r.text())}
    assert "camcast_auth_rejected" in families


@pytest.fixture
async def app_url() -> AsyncIterator[tuple[web.Application, str]]:
    """The app in this process (to reach its control bus and hubs), served on 127.0.0.1."""
    app = create_app(load_config(["--source", "testpattern", "--size", "320x240", "--fps", "15"], env={}))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield app, f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_latency_reports_feed_a_histogram(app_url, http) -> None:
    app, url = app_url
    bus = app[CAMERAS].first.control
    for ms in (20, 45.5, 180, 1200):
        assert await bus.dispatch({"type": "latency", "ms": ms}, "peer-1") is None
    for bad in ("12", None, True, -5, 1e9, float("nan"), [1]):
        reply = await bus.dispatch({"type": "latency", "ms": bad}, "peer-1")
        assert reply is not None and reply["type"] == "error", bad
    assert (await bus.dispatch({"type": "latency"}, "peer-1"))["type"] == "error"  # type: ignore[index]

    metrics = await scrape(http, url)
    family = "camcast_display_latency_seconds"
    assert value(metrics, family, family + "_count") == 4
    assert value(metrics, family, family + "_sum") == pytest.approx(1.4455)
    assert value(metrics, family, family + "_bucket", le="0.05") == 2
    assert value(metrics, family, family + "_bucket", le="0.2") == 3
    assert value(metrics, family, family + "_bucket", le="+Inf") == 4
    assert value(metrics, "camcast_latency_reports_rejected", "camcast_latency_reports_rejected_total") == 8
    assert app[CAMERAS].first.latency.rejected == 8


async def test_video_encode_time_is_observed_per_codec(app_url, http) -> None:
    app, url = app_url
    stream = app[CAMERAS].first
    # A subscriber to the H.264 packets is what a WebRTC peer or the recorder is: it starts the encoder.
    with stream.packets["h264"].subscribe(maxsize=8) as packets:
        for _ in range(3):
            await asyncio.wait_for(packets.get(), 20)
        metrics = await scrape(http, url)
    assert value(metrics, "camcast_encoder_running", encoder="h264") == 1
    assert value(metrics, "camcast_encoder_running", encoder="vp8") == 0
    count = value(metrics, "camcast_encode_seconds", "camcast_encode_seconds_count", encoder="h264")
    assert count >= 3
    assert value(metrics, "camcast_encode_seconds", "camcast_encode_seconds_sum", encoder="h264") > 0
    assert value(metrics, "camcast_keyframes", "camcast_keyframes_total", encoder="h264") >= 1
    assert value(metrics, "camcast_hub_subscribers", hub="h264-packets") == 1


async def test_each_app_has_its_own_registry() -> None:
    config = load_config(["--source", "testpattern"], env={})
    first, second = create_app(config), create_app(config)
    assert first[METRICS].registry is not second[METRICS].registry


async def test_recording_state_and_bytes(server, http) -> None:
    metrics = await scrape(http, server.url)
    assert value(metrics, "camcast_recording") == 0
    assert value(metrics, "camcast_recording_bytes") == 0
    async with http.post(server.url + "api/record/start") as response:
        assert response.status == 200, await response.text()
    try:
        # The file grows as the writer thread writes fragments.
        metrics = await eventually(lambda: scrape(http, server.url), 20, "recording bytes",
                                   until=lambda m: value(m, "camcast_recording_bytes") > 0)
        assert value(metrics, "camcast_recording") == 1
        assert value(metrics, "camcast_recording_files", "camcast_recording_files_total") == 1
        assert value(metrics, "camcast_encoder_running", encoder="h264") == 1
    finally:
        async with http.post(server.url + "api/record/stop") as response:
            assert response.status == 200
    metrics = await scrape(http, server.url)
    assert value(metrics, "camcast_recording") == 0
    assert value(metrics, "camcast_recorder_dropped", "camcast_recorder_dropped_total") == 0


async def test_webrtc_viewers_and_their_latency_reports(start_server, http, loopback_ice) -> None:
    # With a token, as a deployed server runs: the player's /offer and a WHEP player, both by header.
    server = start_server("--token", "rtc-token")
    auth = {"Authorization": "Bearer rtc-token"}
    player = Viewer(server.url, read_stamps=False, headers=auth)
    whep = Viewer(server.url, read_stamps=False, control=False, headers=auth)
    try:
        await player.connect(http)
        await whep.connect(http, via="whep")
        await player.wait_open()
        await player.wait_frames(5, timeout=20)
        await whep.wait_frames(5, timeout=20)
        for ms in (35, 80):
            player.send(f'{{"type":"latency","ms":{ms}}}')
        player.send('{"type":"latency","ms":-3}')  # a client with a broken clock: refused
        assert (await player.next_message())["type"] == "error"
        player.send('{"type":"ping","t":1}')  # replies come in order: the reports are handled
        assert (await player.next_message())["type"] == "pong"

        async with http.get(server.url + "metrics", headers=auth) as response:
            text = await response.text()
        metrics = {f.name: f.samples for f in text_string_to_metric_families(text)}
        family = "camcast_display_latency_seconds"
        assert value(metrics, family, family + "_count") == 2
        assert value(metrics, family, family + "_sum") == pytest.approx(0.115)
        assert total(metrics, "camcast_latency_reports_rejected") == 1
        assert value(metrics, "camcast_viewers", kind="webrtc") == 2
        assert value(metrics, "camcast_bytes_sent", "camcast_bytes_sent_total", kind="webrtc") > 0
        assert value(metrics, "camcast_control_peers") == 1
        encoders = [e for e in ("h264", "vp8") if value(metrics, "camcast_encoder_running", encoder=e)]
        assert encoders
        assert value(metrics, "camcast_encode_seconds", "camcast_encode_seconds_count", encoder=encoders[0])
    finally:
        await player.close()
        await whep.close()
