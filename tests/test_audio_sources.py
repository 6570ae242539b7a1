"""A camera's own sound (an RTSP camera's AAC or G.711 track, a file's AAC) and ALSA devices:
decoded and resampled once, sent to every listener in the one shared Opus encode."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
import pytest_asyncio

from support.audio_listener import AudioTap, Listener, audio_packets, dominant_hz, level
from support.rtspcamera import StartCamera, start_rtsp_camera  # noqa: F401 - a fixture
from support.server import ServerProcess, camcast_command, clean_env
from support.waiting import eventually
from support.webrtc_viewer import Viewer

pytestmark = pytest.mark.usefixtures("loopback_ice")

SINE_HZ = 660  # neither the test tone's 1 kHz nor a multiple of the 50 Hz packet rate


@pytest_asyncio.fixture
async def peers() -> AsyncIterator[list[Any]]:
    """Viewers and listeners made in a test, closed at its end."""
    made: list[Any] = []
    yield made
    await asyncio.gather(*(p.close() for p in made), return_exceptions=True)


async def status(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, Any]:
    async with http.get(server.url + "api/status") as r:
        return dict(await r.json())


async def packet_rate(pc: Any, seconds: float = 2.0) -> float:
    first, started = await audio_packets(pc), time.monotonic()
    await asyncio.sleep(seconds)  # the measuring window, not a wait for a condition
    return (await audio_packets(pc) - first) / (time.monotonic() - started)


async def heard(tap: AudioTap, packets: int = 50, timeout: float = 15.0) -> np.ndarray:
    """The last `packets` decoded packets once that many more than now arrived, and were not silent."""
    start = len(tap.chunks)
    await eventually(lambda: len(tap.chunks) - start >= packets and level(tap.sound(packets)) > 500,
                     timeout, f"{packets} packets of sound")
    return tap.sound(packets)


def write_file(path: Path, video_s: float, audio_s: float, hz: float = SINE_HZ) -> Path:
    """An MP4 with 15 fps H.264 (320x240) for `video_s` and a 44.1 kHz stereo AAC sine for `audio_s`."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=15, options={"bframes": "0", "g": "15"})
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = out.add_stream("aac", rate=44100)
        audio.layout = "stereo"
        for i in range(int(video_s * 15)):
            picture = np.full((240, 320, 3), (i * 8) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 15)
            out.mux(video.encode(frame))
        for start in range(0, int(audio_s * 44100), 1024):
            wave = (0.3 * np.sin(2 * np.pi * hz * np.arange(start, start + 1024) / 44100)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 44100, start
            out.mux(audio.encode(frame))
        out.mux(video.encode())
        out.mux(audio.encode())
    return path


@pytest.mark.parametrize(("codec", "described"), [("aac", "stream aac 44100 Hz stereo"),
                                                   ("pcma", "stream pcm_alaw 8000 Hz mono")])
async def test_an_rtsp_cameras_own_sound_reaches_a_viewer(
        codec: str, described: str, start_rtsp_camera: StartCamera,  # noqa: F811
        start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession, peers: list[Any]) -> None:
    camera = start_rtsp_camera(size=(160, 120), fps=15, gop=15, audio=codec, audio_freq=SINE_HZ)
    server = start_server(source=camera.url)  # --audio auto: the camera's own sound
    viewer = Viewer(server.url, audio=True, read_stamps=False)
    peers.append(viewer)
    await viewer.connect(http)
    await viewer.wait_frames(5, timeout=20)
    tap = AudioTap.of(viewer.pc)
    sound = await heard(tap)
    assert abs(dominant_hz(sound) - SINE_HZ) < 10, dominant_hz(sound)
    assert 40 <= await packet_rate(viewer.pc) <= 60
    audio = (await status(http, server))["audio"]
    assert audio["source"] == described and audio["encoding"] and audio["encoder_starts"] == 1


async def test_ten_viewers_and_three_listeners_share_one_opus_encode(
        start_rtsp_camera: StartCamera, start_server: Callable[..., ServerProcess],  # noqa: F811
        http: aiohttp.ClientSession, peers: list[Any]) -> None:
    camera = start_rtsp_camera(size=(160, 120), fps=15, gop=15, audio="aac", audio_freq=SINE_HZ)
    server = start_server(source=camera.url)
    viewers = [Viewer(server.url, audio=True, read_stamps=False) for _ in range(10)]
    listeners = [Listener(server.url) for _ in range(3)]
    peers.extend([*viewers, *listeners])
    await asyncio.gather(*(v.connect(http) for v in viewers))
    vias = ("offer", "whep", "offer")
    await asyncio.gather(*(one.connect(http, via) for one, via in zip(listeners, vias, strict=True)))
    await asyncio.gather(*(v.wait_frames(5, timeout=30) for v in viewers))
    await eventually(lambda: status(http, server), 15, "13 listeners",
                     until=lambda s: s["audio"]["listeners"] == 13)
    # What the server sends each session over 3 s (a busy test process may read its packets late,
    # so what each peer received is checked against it afterwards).
    before, started = await status(http, server), time.monotonic()
    await asyncio.sleep(3.0)  # the measuring window, not a wait for a condition
    after, seconds = await status(http, server), time.monotonic() - started
    sent = {s["id"]: s["audio_packets_sent"] for s in after["webrtc"]["sessions"]}
    rates = [(sent[s["id"]] - s["audio_packets_sent"]) / seconds for s in before["webrtc"]["sessions"]]
    assert len(rates) == 13 and all(40 <= r <= 60 for r in rates), rates
    assert 40 <= (after["audio"]["packets_encoded"] - before["audio"]["packets_encoded"]) / seconds <= 60
    least = min(sent.values())
    for peer in [*viewers, *listeners]:
        await eventually(lambda peer=peer: audio_packets(peer.pc), 20, "the packets sent to arrive",
                         until=lambda n: n >= 0.95 * least)
    audio = (await status(http, server))["audio"]
    assert audio["encoder_starts"] == 1 and audio["encoding"], audio
    for listener in listeners:
        assert listener.tap is not None
        assert abs(dominant_hz(await heard(listener.tap)) - SINE_HZ) < 10


async def test_a_files_aac_track_is_heard(tmp_path: Path, start_server: Callable[..., ServerProcess],
                                          http: aiohttp.ClientSession, peers: list[Any]) -> None:
    video = write_file(tmp_path / "sine.mp4", video_s=3, audio_s=3)
    server = start_server(source=str(video))
    listener = Listener(server.url)
    peers.append(listener)
    await listener.connect(http)
    assert listener.tap is not None
    assert abs(dominant_hz(await heard(listener.tap)) - SINE_HZ) < 10
    assert (await status(http, server))["audio"]["source"] == "stream aac 44100 Hz stereo"


async def test_audio_that_stops_mid_file_leaves_video_and_silent_packets(
        tmp_path: Path, start_server: Callable[..., ServerProcess], http: aiohttp.ClientSession,
        peers: list[Any]) -> None:
    # 4 s of picture, 1 s of sound, looped: for 3 s of every 4 the stream has no audio packets.
    video = write_file(tmp_path / "short-sound.mp4", video_s=4, audio_s=1)
    server = start_server(source=str(video))
    viewer = Viewer(server.url, audio=True, read_stamps=False)
    peers.append(viewer)
    await viewer.connect(http)
    await viewer.wait_frames(5, timeout=20)
    tap = AudioTap.of(viewer.pc)
    await heard(tap, packets=20)
    start = len(tap.chunks)
    # Through a whole loop (sound, then 3 s without): the pictures keep coming at the file's rate,
    # and the sound goes on as silence, 50 packets a second.
    frames_before = len(viewer.frames)
    rate = await packet_rate(viewer.pc, 5.0)
    assert 40 <= rate <= 60
    assert len(viewer.frames) - frames_before >= 5 * 15 * 0.7
    loudness = [level(c) for c in tap.chunks[start:]]
    assert sum(1 for v in loudness if v < 50) >= 100, "the 3 s without sound are silence"
    assert sum(1 for v in loudness if v > 500) >= 20, "the next loop's sound came back"
    assert (await status(http, server))["audio"]["silent_packets"] > 100


def test_an_alsa_device_that_does_not_exist_exits_2_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(camcast_command("--source", "testpattern", "--host", "127.0.0.1", "--port", "0",
                                            "--audio", "alsa:hw:9,9"),
                            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean_env())
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("camcast: error: --audio alsa:hw:9,9: ")
    assert "hw:9,9" in lines[0].split(": ", 2)[2] or "ALSA" in lines[0]
    assert "serving" not in result.stdout


@pytest.mark.parametrize(("value", "word"), [("bogus", "auto | none | tone | stream | alsa:DEVICE"),
                                             ("stream", "the source's own sound needs"),
                                             ("alsa:", "expected an ALSA device")])
def test_bad_audio_values_exit_2_with_one_line(tmp_path: Path, value: str, word: str) -> None:
    result = subprocess.run(camcast_command("--source", "testpattern", "--host", "127.0.0.1", "--port", "0",
                                            "--audio", value),
                            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean_env())
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0], result.stderr
