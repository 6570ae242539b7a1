"""Cameras that encode: their H.264 reaches viewers and recordings without a decode or an encode.

A real RTSP camera (GStreamer's RTSP server with x264enc, a 4 s GOP, stamped frames) and MP4 files
stand in for IP cameras; real aiortc viewers and Chromium watch; recordings are opened with ffprobe.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
import pytest_asyncio

from camcast.frames import now_us
from camcast.stamp import read_stamp
from camcast.webrtc.compat import h264_profile_codec
from support.browser import open_page
from support.h264files import write_bframes_mp4, write_passthrough_mp4
from support.mjpeg import collect, open_mjpeg
from support.rtspcamera import RtspCamera, start_rtsp_camera
from support.server import ServerProcess, launch
from support.waiting import eventually
from support.webrtc_viewer import Viewer

__all__ = ["start_rtsp_camera"]

pytestmark = pytest.mark.usefixtures("loopback_ice")

GOP_SECONDS = 4.0


@pytest.fixture(autouse=True)
def viewers_take_high_profile() -> None:
    """aiortc decodes High profile but offers only constrained baseline: these viewers offer High
    too, as browsers do, so the camera's own stream can be answered."""
    h264_profile_codec("64001f")


@pytest_asyncio.fixture
async def viewers() -> AsyncIterator[Callable[..., Viewer]]:
    made: list[Viewer] = []

    def make(url: str, **options: Any) -> Viewer:
        # Held on the top rendition: a busy machine's viewers must not be moved off the camera's packets.
        made.append(Viewer(url, **({"codecs": ("h264",), "query": "?rendition=high"} | options)))
        return made[-1]

    yield make
    await asyncio.gather(*(v.close() for v in made), return_exceptions=True)


@pytest.fixture
def servers(tmp_path: Path) -> Any:
    made: list[ServerProcess] = []

    def make(*args: str) -> ServerProcess:
        made.append(launch(tmp_path / f"server{len(made)}", list(args), source=None))
        return made[-1]

    yield make
    for server in made:
        code, _ = server.terminate()
        assert code == 0, server.describe()
        assert "Traceback" not in server.log(), server.describe()


async def status(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, Any]:
    async with http.get(server.url + "api/status") as r:
        assert r.status == 200
        return dict(await r.json())


async def after_a_camera_keyframe(http: aiohttp.ClientSession, server: ServerProcess) -> float:
    """Wait until the camera's keyframe has just passed (its next one is a GOP away); returns when."""
    before = (await status(http, server))["passthrough"]["keyframes"]
    await eventually(lambda: status(http, server), GOP_SECONDS * 2 + 5, "the camera's next keyframe",
                     until=lambda s: s["passthrough"]["keyframes"] > before, interval=0.05)
    return time.monotonic()


def first_frame_stamp(path: Path) -> int:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return read_stamp(frame.to_ndarray(format="bgr24"))


def ffprobe(path: Path) -> dict[str, Any]:
    command = ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout
    return dict(json.loads(out))


async def test_an_rtsp_camera_plays_from_its_own_packets_and_new_viewers_start_at_once(
        start_rtsp_camera: Any, servers: Any, viewers: Callable[..., Viewer],
        http: aiohttp.ClientSession) -> None:
    camera: RtspCamera = start_rtsp_camera(gop=120, profile="high", size=(640, 480))
    server = servers("--source", camera.url)
    first = viewers(server.url)
    await first.connect(http)
    await first.wait_frames(30, timeout=GOP_SECONDS * 2 + 10)
    state = await eventually(lambda: status(http, server), 15, "the first viewer on the camera's own packets",
                             until=lambda s: s["webrtc"]["sessions"][0]["switching_to"] is None)
    assert state["passthrough"]["mode"] == "passthrough"
    assert state["passthrough"]["profile_level_id"].startswith("64")  # the camera's High profile
    # ... answered as such to a viewer that offers it.
    assert f"profile-level-id={state['passthrough']['profile_level_id']}" in first.answer["sdp"]

    # A viewer arriving just after the camera's keyframe would wait a whole GOP on a plain relay.
    await after_a_camera_keyframe(http, server)
    second = viewers(server.url)
    await second.connect(http)
    frames = await second.wait_frames(1, timeout=GOP_SECONDS)
    waited = frames[0].arrived - second.offer_sent_at
    assert waited < GOP_SECONDS / 2, f"the first frame took {waited:.2f} s"
    assert (frames[0].width, frames[0].height) == (640, 480)

    # After the start-up keyframe every viewer takes the camera's packets: camcast's own H.264
    # encoders are stopped, and the pictures keep coming (30 fps, stamped by the camera).
    await eventually(lambda: status(http, server), GOP_SECONDS * 2 + 10, "every viewer on the camera's "
                     "packets and no H.264 encoder running", until=on_camera_packets, interval=0.2)
    count = len(second.frames)
    await second.wait_frames(count + 60, timeout=10)
    late = second.frames[-30:]
    assert all(f.latency_ms is not None and f.latency_ms < 2000 for f in late), [f.latency_ms for f in late]
    assert (await status(http, server))["encoders"]["h264"] is False


async def test_a_recording_of_an_rtsp_camera_is_its_own_bitstream(
        start_rtsp_camera: Any, servers: Any, http: aiohttp.ClientSession) -> None:
    camera: RtspCamera = start_rtsp_camera(gop=60, profile="high", size=(320, 240))
    server = servers("--source", camera.url)
    await eventually(lambda: status(http, server), 10, "the camera's stream passed through",
                     until=lambda s: s["passthrough"]["keyframes"] >= 1)
    pressed_us = now_us()
    async with http.post(server.url + "api/record/start") as r:
        assert r.status == 200, await r.text()
    await asyncio.sleep(3)  # the length of the recording, not a wait for a condition
    async with http.post(server.url + "api/record/stop") as r:
        assert r.status == 200, await r.text()
    files = await eventually(lambda: sorted((server.workdir / "recordings").glob("*.mp4")), 10, "the file")
    info = ffprobe(files[-1])
    (video,) = [s for s in info["streams"] if s["codec_type"] == "video"]
    assert video["codec_name"] == "h264" and video["profile"] == "High", video
    assert (video["width"], video["height"]) == (320, 240)
    assert float(info["format"]["duration"]) >= 2.5
    # It starts at the camera's keyframe before the press (nothing is re-encoded to start at it).
    assert first_frame_stamp(files[-1]) <= pressed_us + 100_000
    state = await status(http, server)
    assert state["encoders"]["h264"] is False


async def test_the_camera_rebooting_keeps_viewers_and_the_recording_going(
        start_rtsp_camera: Any, servers: Any, viewers: Callable[..., Viewer],
        http: aiohttp.ClientSession) -> None:
    camera: RtspCamera = start_rtsp_camera(gop=30, profile="high", size=(320, 240))
    server = servers("--source", camera.url)
    viewer = viewers(server.url)
    await viewer.connect(http)
    await viewer.wait_frames(30, timeout=15)
    async with http.post(server.url + "api/record/start") as r:
        assert r.status == 200, await r.text()
    await eventually(lambda: sorted((server.workdir / "recordings").glob("*.mp4")), 10, "a file")
    # While the camera is away the viewer sees camcast's "no signal" card, not a frozen picture.
    camera.stop()
    await eventually(lambda: status(http, server), 10, "the source lost", until=lambda s: not s["source_up"])
    count = len(viewer.frames)
    await viewer.wait_frames(count + 15, timeout=10)
    camera.start()
    count = len(viewer.frames)
    await viewer.wait_frames(count + 60, timeout=30)  # it plays again after the reboot
    files = await eventually(lambda: sorted((server.workdir / "recordings").glob("*.mp4")), 20,
                             "a new file after the reboot", until=lambda f: len(f) >= 2)
    state = await status(http, server)
    assert state["recording"]["state"] == "recording" and state["reconnects"] >= 1
    async with http.post(server.url + "api/record/stop") as r:
        assert r.status == 200
    for file in files:
        assert ffprobe(file)["streams"][0]["codec_name"] == "h264"


async def test_mjpeg_and_snapshots_decode_the_camera_only_while_asked(
        tmp_path: Path, servers: Any, http: aiohttp.ClientSession) -> None:
    video = write_passthrough_mp4(tmp_path / "high.mp4", seconds=2.0, size=(320, 240), gop=30)
    server = servers("--source", str(video))
    async with http.get(server.url + "snapshot.jpg") as r:
        assert r.status == 200 and (await r.read())[:2] == b"\xff\xd8"
    async with http.get(server.url + "video.mjpg") as r:
        assert r.status == 200
        assert b"\xff\xd8" in await r.content.readexactly(4096)
        assert (await status(http, server))["encoders"]["jpeg"] is True
    state = await eventually(lambda: status(http, server), 10, "the JPEG encoder stopped",
                             until=lambda s: not s["encoders"]["jpeg"])
    assert state["passthrough"]["mode"] == "passthrough"


async def test_b_frames_or_transcode_are_encoded_again_and_said_so(
        tmp_path: Path, servers: Any, viewers: Callable[..., Viewer], http: aiohttp.ClientSession) -> None:
    reordered = write_bframes_mp4(tmp_path / "bframes.mp4", seconds=2.0, size=(320, 240))
    server = servers("--source", str(reordered))
    viewer = viewers(server.url)
    await viewer.connect(http)
    await viewer.wait_frames(30, timeout=15)
    state = await status(http, server)
    assert state["passthrough"]["mode"] == "encode" and state["encoders"]["h264"] is True
    assert "B-frames" in server.log()

    plain = write_passthrough_mp4(tmp_path / "plain.mp4", seconds=2.0, size=(320, 240))
    transcoded = servers("--source", str(plain), "--transcode")
    other = viewers(transcoded.url)
    await other.connect(http)
    await other.wait_frames(30, timeout=15)
    state = await status(http, transcoded)
    assert state["passthrough"]["possible"] is False and state["encoders"]["h264"] is True


def on_camera_packets(state: dict[str, Any]) -> bool:
    sessions = state["webrtc"]["sessions"]
    return bool(sessions) and all(s["switching_to"] is None and s["rendition"] == "high" for s in sessions) \
        and not state["encoders"]["h264"] and not state["encoders"]["h264-bridge"]


async def test_chromium_plays_an_rtsp_camera_passed_through(
        start_rtsp_camera: Any, servers: Any, chromium: Any) -> None:
    camera: RtspCamera = start_rtsp_camera(gop=120, profile="high", size=(640, 480))
    server = servers("--source", camera.url)
    async with open_page(chromium, server.url) as page:
        await page.goto(server.url + "?transport=webrtc&rendition=high")
        await eventually(lambda: page.evaluate("window.camcast && window.camcast.framesDecoded"), 20,
                         "Chromium decoding", until=lambda n: (n or 0) > 30, interval=0.2)
        await eventually(server.status, GOP_SECONDS * 2 + 10, "Chromium on the camera's packets",
                         until=on_camera_packets, interval=0.2)
        before = await page.evaluate("window.camcast.framesDecoded")
        await eventually(lambda: page.evaluate("window.camcast.framesDecoded"), 10, "more frames",
                         until=lambda n: n >= before + 60, interval=0.2)


async def test_an_mjpeg_camera_s_jpegs_reach_mjpeg_clients_byte_for_byte(
        servers: Any, viewers: Callable[..., Viewer], http: aiohttp.ClientSession) -> None:
    upstream = servers("--source", "testpattern", "--size", "320x240", "--fps", "15", "--stamp")
    server = servers("--source", upstream.url + "video.mjpg")
    async with open_mjpeg(http, upstream.url + "video.mjpg") as original, \
            open_mjpeg(http, server.url + "video.mjpg") as relayed:
        theirs, ours = await asyncio.gather(collect(original, 3.0), collect(relayed, 2.0))
    camera_bytes = {part.body for part in theirs}
    assert len(ours) >= 10
    assert sum(part.body in camera_bytes for part in ours) >= len(ours) - 2  # the edges of the windows
    state = await status(http, server)
    assert state["passthrough"]["mode"] == "jpeg passthrough"
    assert state["encoders"]["jpeg"] is False and state["passthrough"]["jpegs_relayed"] > 0
    async with http.get(server.url + "snapshot.jpg") as r:
        snapshot = await r.read()
    assert r.status == 200 and snapshot.startswith(b"\xff\xd8")
    assert (await status(http, server))["encoders"]["jpeg"] is False  # the camera's own, not a re-encode

    # WebRTC viewers get it decoded and encoded once; the JPEG encoder still never runs.
    viewer = viewers(server.url, query="")
    await viewer.connect(http)
    frames = await viewer.wait_frames(15, timeout=15)
    assert (frames[-1].width, frames[-1].height) == (320, 240)
    assert all(f.latency_ms is not None and f.latency_ms < 3000 for f in frames[-5:])
    assert (await status(http, server))["encoders"]["jpeg"] is False


async def test_an_rtsp_camera_over_udp(start_rtsp_camera: Any, servers: Any, viewers: Callable[..., Viewer],
                                       http: aiohttp.ClientSession) -> None:
    camera: RtspCamera = start_rtsp_camera(gop=30, profile="main", size=(320, 240))
    server = servers("--source", camera.url, "--rtsp-transport", "udp")
    viewer = viewers(server.url)
    await viewer.connect(http)
    await viewer.wait_frames(30, timeout=15)
    state = await status(http, server)
    assert state["passthrough"]["mode"] == "passthrough"
    assert state["passthrough"]["profile_level_id"].startswith("4d")  # Main
    async with http.get(server.url + "metrics") as r:
        metrics = await r.text()
    assert 'camcast_source_mode{camera="default",mode="passthrough"} 1.0' in metrics
    relayed = [line for line in metrics.splitlines()
               if line.startswith('camcast_passthrough_units_total{camera="default",kind="h264"}')]
    assert relayed and float(relayed[0].split()[-1]) > 0
