"""Recordings with sound: the mp4 recorder muxes the camera's shared Opus packets beside the video.

A real server (in this process, so the test reads the recorder's files directly), real PyAV and
ffprobe on the files. The test tone beeps from every whole second of the capture clock and the test
pattern flashes a white block in the first frame captured at or after it: both land in the file on
the same timeline, so the beep's onset and the flash's frame time give the A/V offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from aiohttp.test_utils import TestServer

from camcast.app import create_app
from camcast.appkeys import CAMERAS
from camcast.config import Config
from camcast.frames import now_us
from camcast.recorder import prepare_folder
from camcast.stamp import read_stamp
from support.avfile import av_offsets, beep_onsets, flashes
from support.browser import open_page
from support.server import launch
from support.waiting import eventually


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[Any, str]]:
    """The camera, and the server's URL."""
    config = Config(source="testpattern", recordings=tmp_path / "rec", ice_addresses=("127.0.0.1",),
                    **settings).validate()
    prepare_folder(config.recordings)
    app = create_app(config)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        await eventually(lambda: app[CAMERAS].first.healthy, 20, "the test pattern's first frame")
        yield app[CAMERAS].first, str(server.make_url("/"))
    finally:
        await server.close()


async def record(camera: Any, frames: int) -> Path:
    """Record until the file holds `frames` video frames; the finished file's path."""
    recorder = camera.recorder
    state = await recorder.start()
    await eventually(lambda: recorder.state()["frames"] >= frames, 20, f"{frames} frames recorded")
    await recorder.stop()
    return Path(recorder.settings.folder) / state["name"]


def first_stamp(path: Path) -> int:
    """The capture time (µs) of the file's first frame, from its stamp."""
    with av.open(str(path)) as container:
        frame = next(container.decode(container.streams.video[0]))
        return read_stamp(frame.to_ndarray(format="gray"))


def ffprobe_streams(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return list(json.loads(out)["streams"])


def stream_extents(path: Path) -> dict[str, tuple[float, float]]:
    """Per stream kind: (first, end) presentation time in seconds, from decoding the whole file."""
    extents: dict[str, tuple[float, float]] = {}
    with av.open(str(path)) as container:
        for stream in (container.streams.video[0], container.streams.audio[0]):
            first = end = None
            for frame in container.decode(stream):
                start = float(frame.pts * frame.time_base)
                length = frame.samples / frame.sample_rate if stream.type == "audio" else 1 / 30
                first = start if first is None else first
                end = start + length
            assert first is not None and end is not None, f"no {stream.type} frames"
            extents[stream.type] = (first, end)
            container.seek(0)
    return extents


def av_errors(path: Path) -> list[float]:
    """Per flash paired with a beep: the recording's own A/V offset (s; support.avfile)."""
    onsets = beep_onsets(path)
    errors = av_offsets(path, onsets)
    print(f"{path.name}: beeps at", [round(t, 3) for t in onsets], "A/V offsets (ms):",
          [round(e * 1000, 1) for e in errors])
    return errors


def assert_tracks_together(path: Path) -> tuple[float, float]:
    """Both tracks start together and last as long (decoded, and as ffprobe reads them);
    the sound's (start, end) in file time."""
    extents = stream_extents(path)
    (v0, v1), (a0, a1) = extents["video"], extents["audio"]
    print(f"{path.name}: video {v0:.3f}-{v1:.3f} s, audio {a0:.3f}-{a1:.3f} s")
    assert v0 == 0.0 and a0 < 0.02, "the sound starts with the picture"
    assert abs((v1 - v0) - (a1 - a0)) <= 0.05, "the sound lasts as long as the picture"
    streams = {s["codec_type"]: s for s in ffprobe_streams(path)}
    starts = float(streams["video"]["start_time"]), float(streams["audio"]["start_time"])
    durations = float(streams["video"]["duration"]), float(streams["audio"]["duration"])
    print(f"ffprobe: start_time video {starts[0]:.3f} audio {starts[1]:.3f} s, "
          f"duration video {durations[0]:.3f} audio {durations[1]:.3f} s")
    assert abs(starts[0] - starts[1]) <= 0.02
    assert abs(durations[0] - durations[1]) <= 0.05
    return a0, a1


async def test_a_recording_has_an_opus_track_as_long_as_its_video(tmp_path: Path) -> None:
    async with serving(tmp_path) as (camera, _url):
        assert camera.audio is not None  # the test pattern's default: the tone
        path = await record(camera, 75)
    streams = {s["codec_type"]: s for s in ffprobe_streams(path)}
    assert streams["video"]["codec_name"] == "h264"
    assert streams["audio"]["codec_name"] == "opus"
    assert int(streams["audio"]["sample_rate"]) == 48000 and int(streams["audio"]["channels"]) == 1
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "opus" and audio.codec_context.sample_rate == 48000
        # The track opens with a silent packet at 0 (mp4 tracks start there); the sound follows at once.
        packets = [p for p, _ in zip(container.demux(audio), range(2), strict=False)]
        assert float(packets[1].pts * audio.time_base) < 0.05
    assert_tracks_together(path)


async def test_the_beep_and_the_flash_line_up_in_the_file(tmp_path: Path) -> None:
    async with serving(tmp_path) as (camera, _url):
        path = await record(camera, 100)
    onsets, flashed = beep_onsets(path), flashes(path)
    assert len(onsets) >= 2 and len(flashed) >= 2, (onsets, flashed)
    offsets, errors = [], []
    for time, stamp in flashed:
        # A flash pairs with the beep of its second (none: a flash at the very start of the sound).
        near = [t for t in onsets if abs(t - time) < 0.5]
        if not near:
            continue
        offset = near[0] - time
        # The flash frame was captured `late` after the whole second the beep starts on (at most a
        # frame interval): that part of the offset is the pattern's, the rest the recording's.
        late = (stamp % 1_000_000) / 1e6
        offsets.append(offset)
        errors.append(offset + late)
    print("A/V offsets (ms):", [round(o * 1000, 1) for o in offsets],
          "after the flash's capture lateness:", [round(e * 1000, 1) for e in errors])
    assert len(offsets) >= 2, (onsets, flashed)
    assert all(abs(o) <= 0.02 + 1 / 30 for o in offsets), (onsets, flashed)
    assert all(abs(e) <= 0.02 for e in errors)


async def test_a_preroll_recording_has_sound_from_its_first_frame(tmp_path: Path) -> None:
    async with serving(tmp_path, preroll=2.0, keyframe_interval=1.0) as (camera, _url):
        recorder = camera.recorder
        assert camera.audio.running, "pre-roll keeps the sound's encode running too"
        await eventually(lambda: recorder.status()["preroll_buffered"] >= 2.0, 20, "2 s of pre-roll")
        pressed = now_us()
        state = await recorder.start()

        def recorded_past_the_press() -> bool:
            files = recorder.active_files()
            return any(started + duration * 1e6 >= pressed + 1.2e6
                       for started, duration, _ in files.values())

        await eventually(recorded_past_the_press, 20, "1.2 s recorded after the press")
        await recorder.stop()
        path = Path(recorder.settings.folder) / state["name"]
    lead = (pressed - first_stamp(path)) / 1e6
    print(f"the file starts {lead:.3f} s before the press")
    assert 1.9 <= lead <= 3.2, "the file starts at the keyframe at or before press - 2 s"
    assert_tracks_together(path)
    onsets = beep_onsets(path)
    assert any(t < lead - 0.5 for t in onsets), ("beeps from before the press", onsets, lead)
    errors = av_errors(path)
    assert len(errors) >= 2 and sum(t < lead for t in onsets) >= 1
    assert all(abs(e) <= 0.02 for e in errors)


async def test_each_segment_has_its_sound_and_it_goes_on_across_the_split(tmp_path: Path) -> None:
    async with serving(tmp_path, segment=1.0) as (camera, _url):
        recorder = camera.recorder
        await recorder.start()
        await eventually(lambda: recorder.files_written >= 4, 20, "a fourth segment")
        await recorder.stop()
        files = sorted(Path(recorder.settings.folder).glob("*.mp4"))
    assert len(files) >= 4, files
    sound_ends: list[tuple[int, int]] = []  # per file, its sound's first and last instant (µs, capture clock)
    for path in files[:-1]:  # the last one may be a few frames only
        a0, a1 = assert_tracks_together(path)
        start = first_stamp(path)
        sound_ends.append((start + round(a0 * 1e6), start + round(a1 * 1e6)))
        assert all(abs(e) <= 0.02 for e in av_errors(path))
    for (_, end), (begin, _) in itertools.pairwise(sound_ends):
        print(f"split: the sound ends at {end}, goes on at {begin} ({(begin - end) / 1000:+.1f} ms)")
        assert abs(begin - end) <= 25_000, "no gap nor overlap of more than a packet at a split"


async def test_a_killed_server_leaves_sound_that_plays(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    server = launch(tmp_path / "killed", ["--preroll", "1"])  # the pre-roll's sound too
    try:
        async with http.post(server.url + "api/record/start") as response:
            assert response.status == 200, await response.text()
        await eventually(lambda: asyncio.to_thread(lambda: server.status()["recording"]["elapsed"]), 20,
                         "2.5 s recorded", until=lambda elapsed: elapsed >= 2.5)
        os.kill(server.pid, signal.SIGKILL)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
        server.proc.wait(10)
    [path] = list((server.recordings).glob("*.mp4"))
    extents = stream_extents(path)  # decodes to the end: the cut leaves no broken fragment
    (v0, v1), (a0, a1) = extents["video"], extents["audio"]
    print(f"killed: video {v0:.3f}-{v1:.3f} s, audio {a0:.3f}-{a1:.3f} s")
    assert v1 >= 1.0 and a1 >= 1.0, "the fragments before the kill are there, sound included"
    assert abs(v1 - a1) <= 0.5


async def test_without_sound_a_recording_has_no_audio_track(tmp_path: Path) -> None:
    async with serving(tmp_path, audio="none") as (camera, _url):
        assert camera.audio is None
        path = await record(camera, 20)
    assert [s["codec_type"] for s in ffprobe_streams(path)] == ["video"]


async def test_the_opencv_recorder_says_once_that_it_records_no_sound(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="camcast.recorder")
    async with serving(tmp_path, recorder="opencv") as (camera, _url):
        assert camera.audio is not None
        await camera.recorder.start()
        await eventually(lambda: camera.recorder.state()["frames"] >= 5, 20, "5 frames recorded")
        await camera.recorder.stop()
    said = [r for r in caplog.records if "records no audio" in r.getMessage()]
    assert len(said) == 1, said


async def test_chromium_plays_the_recording_with_its_sound(tmp_path: Path, chromium: Any) -> None:
    async with serving(tmp_path) as (camera, url):
        path = await record(camera, 45)
        async with open_page(chromium, url) as page:
            # Chromium's own media page for the file, served by camcast (Range requests and all).
            await page.goto(url + "recordings/" + path.name)
            video = page.locator("video")
            await video.evaluate("v => { v.muted = true; return v.play(); }")
            await video.evaluate("v => new Promise(done => v.onended = done)", timeout=20_000)
            played = await video.evaluate(
                "v => ({error: v.error && v.error.message, duration: v.duration,"
                " audio: v.webkitAudioDecodedByteCount,"
                " frames: v.getVideoPlaybackQuality().totalVideoFrames})")
    print("Chromium:", played)
    assert played["error"] is None
    assert played["duration"] == pytest.approx(45 / 30, abs=0.1)
    assert played["audio"] > 0, "Chromium decoded the sound"
    assert played["frames"] >= 40
