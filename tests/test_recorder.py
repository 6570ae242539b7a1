"""The recorder: real servers, real aiortc peers on the control channel, real files read back with PyAV.

What a good recording is: H.264 at the capture size, first frame a keyframe, timestamps strictly
increasing, duration and frame count matching the wall time, no frame missing (the frame stamps
say which capture each frame came from).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import av
import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from camcast.app import create_app
from camcast.appkeys import CAMERAS
from camcast.config import Config
from camcast.frames import now_us
from camcast.recorder import prepare_folder
from camcast.recorder.naming import create_unique
from camcast.recorder.storage import apply_retention
from camcast.sources.pacing import Pacer
from camcast.stamp import read_stamp
from support.server import ServerProcess, camcast_command, clean_env, launch
from support.waiting import eventually
from support.webrtc_viewer import Viewer

FPS = 30
StartServer = Callable[..., ServerProcess]


# -- reading files back ---------------------------------------------------------------------------
@dataclass
class Recording:
    codec: str
    width: int
    height: int
    duration: float  # seconds, from the container
    times: list[float]  # presentation time of each frame, seconds
    keys: list[bool]
    stamps: list[int]  # capture time of each frame (µs), read from the picture


def read_recording(path: Path, stamps: bool = True) -> Recording:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        codec, width, height = ctx.name, ctx.width, ctx.height
        duration = (container.duration or 0) / 1e6
        times, keys, stamp_values = [], [], []
        for frame in container.decode(stream):
            times.append(float(frame.time))
            keys.append(bool(frame.key_frame))
            if stamps:
                stamp_values.append(read_stamp(frame.to_ndarray(format="gray")))
    return Recording(codec, width, height, duration, times, keys, stamp_values)


def assert_good_recording(rec: Recording, wall: float | None = None, written: int | None = None) -> None:
    """`written`: how many frames the server says it wrote to this file (all must be there)."""
    assert rec.codec == "h264"
    assert (rec.width, rec.height) == (640, 480)
    assert rec.times, "no frames"
    assert rec.keys[0], "the first frame must be a keyframe"
    assert rec.times[0] == pytest.approx(0.0, abs=1e-3), "timestamps start at 0"
    assert all(b > a for a, b in zip(rec.times, rec.times[1:], strict=False)), "timestamps must increase"
    if written is not None:
        assert len(rec.times) == written
    if rec.stamps:
        # Timestamps are the capture times, rebased: no drift, whatever the pace of the machine.
        drift = max(abs(t - (s - rec.stamps[0]) / 1e6) for t, s in zip(rec.times, rec.stamps, strict=True))
        assert drift < 0.002, drift
        # About every capture between the first and the last frame is there. Generous: on a busy
        # shared machine the capture or the shared encoder may skip frames (bench/ measures it).
        span = (rec.stamps[-1] - rec.stamps[0]) / 1e6
        assert span * FPS * 0.6 <= len(rec.times) <= span * FPS + 3  # + a late first capture
    assert len(rec.times) <= rec.duration * FPS * 1.05 + 1
    if wall is not None:
        assert rec.duration == pytest.approx(wall, rel=0.10)


def ffprobe_frames(path: Path) -> int | None:
    if shutil.which("ffprobe") is None:
        return None
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=30, check=True)
    stream = json.loads(out.stdout)["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 640, 480)
    return int(stream["nb_read_frames"])


def recordings_in(folder: Path, ext: str = "mp4") -> list[Path]:
    return sorted(folder.glob(f"*.{ext}"), key=lambda p: p.stat().st_mtime_ns)


# -- talking to the server --------------------------------------------------------------------------
async def post(http: aiohttp.ClientSession, server: ServerProcess, path: str) -> dict[str, Any]:
    async with http.post(server.url + path) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def next_record(viewer: Viewer, timeout: float = 8.0) -> dict[str, Any]:
    """The next `record` message this viewer receives (skipping pongs and the like)."""
    deadline = time.monotonic() + timeout
    while True:
        message = await asyncio.wait_for(viewer.messages.get(), max(0.01, deadline - time.monotonic()))
        if isinstance(message, dict) and message.get("type") == "record":
            return message


async def record_state(viewer: Viewer, state: str, timeout: float = 8.0) -> dict[str, Any]:
    while True:
        message = await next_record(viewer, timeout)
        if message["state"] == state:
            return message


async def connect(http: aiohttp.ClientSession, server: ServerProcess) -> Viewer:
    viewer = Viewer(server.url, codecs=("h264",), read_stamps=False)
    await viewer.connect(http)
    await viewer.wait_open()
    return viewer


# -- recording over the data channel ------------------------------------------------------------------
async def test_two_peers_record_over_the_data_channel(start_server: StartServer, http: aiohttp.ClientSession,
                                                      loopback_ice: None) -> None:
    server = start_server()
    a, b = await connect(http, server), await connect(http, server)
    try:
        for viewer in (a, b):  # every peer is greeted with the state at once
            assert (await next_record(viewer))["state"] == "stopped"

        pressed = now_us()
        a.send(json.dumps({"type": "record", "action": "start"}))
        told_a, told_b = await record_state(a, "recording"), await record_state(b, "recording")
        started_at = time.monotonic()
        assert told_a["name"] == told_b["name"] and told_a["name"].endswith(".mp4")
        assert told_a["started"].endswith("Z")

        # A peer that connects while recording is told at once.
        c = await connect(http, server)
        greeting = await next_record(c)
        assert (greeting["state"], greeting["name"]) == ("recording", told_a["name"])
        await c.close()

        # Anything else is answered with an error, and recording goes on.
        a.send(json.dumps({"type": "record", "action": "pause"}))
        assert (await a.next_message())["type"] == "error"

        await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - started_at)))  # record for about 3 s
        b.send(json.dumps({"type": "record", "action": "stop"}))
        stopped_b, stopped_a = await record_state(b, "stopped"), await record_state(a, "stopped")
        wall = time.monotonic() - started_at
        assert stopped_a["name"] == stopped_b["name"] == told_a["name"]
    finally:
        await a.close()
        await b.close()

    path = server.recordings / told_a["name"]
    rec = read_recording(path)
    assert_good_recording(rec, wall, written=stopped_a["frames"])
    # The file starts at the press: its first frame was captured within a frame or so of it.
    assert -100_000 < rec.stamps[0] - pressed < 500_000
    frames = ffprobe_frames(path)
    assert frames is None or frames == len(rec.times)
    recording = server.status()["recording"]
    assert recording["state"] == "stopped" and recording["dropped"] == 0


async def test_sigterm_finalizes_the_open_file(start_server: StartServer,
                                               http: aiohttp.ClientSession) -> None:
    server = start_server()
    state = await post(http, server, "api/record/start")
    started = time.monotonic()
    await asyncio.sleep(1.5)  # record for a while, then SIGTERM
    code, exit_seconds = server.terminate()
    wall = time.monotonic() - started - exit_seconds  # recorded until the signal, not until the exit
    assert code == 0
    path = server.recordings / state["name"]
    rec = read_recording(path)
    assert_good_recording(rec)
    assert rec.duration == pytest.approx(wall, abs=0.5)  # nothing lost: the last fragment was written
    assert b"mfro" in path.read_bytes()[-16:]  # the muxer's trailer (mfra index) is there


async def test_sigkill_loses_at_most_the_last_fragment(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    server = launch(tmp_path / "killed")
    try:
        state = await post(http, server, "api/record/start")
        started = time.monotonic()
        await asyncio.sleep(3.0)  # record for a few fragments, then SIGKILL
        kill_wall = time.monotonic() - started
        os.kill(server.pid, signal.SIGKILL)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
        server.proc.wait(10)
    rec = read_recording(server.recordings / state["name"])
    assert_good_recording(rec)
    # Fragments of about a second: all but the last ~1 s survive (plus slack for a busy machine).
    assert len(rec.times) >= (kill_wall - 1.6) * FPS, (len(rec.times), kill_wall)


async def test_preroll_starts_before_the_press(start_server: StartServer,
                                               http: aiohttp.ClientSession) -> None:
    server = start_server("--preroll", "1.5", "--keyframe-interval", "1")
    assert server.status()["encoders"]["h264"], "pre-roll keeps the H.264 encoder running"
    # The buffer holds its whole 1.5 s: the keyframe at or before press - 1.5 s is in it.
    await eventually(lambda: asyncio.to_thread(lambda: server.status()["recording"]["preroll_buffered"]), 20,
                     "1.5 s of pre-roll buffered", until=lambda seconds: seconds >= 1.5)
    pressed = now_us()
    state = await post(http, server, "api/record/start")
    await asyncio.sleep(1.0)  # a second after the press
    stopped = await post(http, server, "api/record/stop")
    rec = read_recording(server.recordings / state["name"])
    assert_good_recording(rec, written=stopped["frames"])
    # Starts at the keyframe at or before press - 1.5 s: between 1.5 s and 1.5 s + one GOP before.
    lead = (pressed - rec.stamps[0]) / 1e6
    assert 1.4 <= lead <= 2.7, lead


async def test_segments_roll_over_on_keyframes(start_server: StartServer,
                                               http: aiohttp.ClientSession) -> None:
    server = start_server("--segment", "1")
    await post(http, server, "api/record/start")
    await asyncio.sleep(3.6)  # record across three 1 s segments and into a fourth
    final = await post(http, server, "api/record/stop")
    files = recordings_in(server.recordings)
    assert len(files) >= 3, files
    assert len({f.name for f in files}) == len(files)
    assert final["name"] == files[-1].name
    previous_last = None
    for path in files:
        rec = read_recording(path)
        assert_good_recording(rec)
        if path is not files[-1]:
            assert rec.duration == pytest.approx(1.0, abs=0.3)
        if previous_last is not None:  # segments follow each other without a gap or an overlap
            assert rec.stamps[0] - previous_last == pytest.approx(1e6 / FPS, abs=20_000)
        previous_last = rec.stamps[-1]


# -- retention --------------------------------------------------------------------------------------
def _fake(folder: Path, name: str, size: int, age_days: float) -> Path:
    path = folder / name
    path.write_bytes(b"\0" * size)
    stamp = time.time() - age_days * 86400
    os.utime(path, (stamp, stamp))
    return path


def test_retention_deletes_the_oldest_first(tmp_path: Path) -> None:
    import threading

    lock = threading.Lock()
    old = _fake(tmp_path, "2020-01-01T00-00-00Z.mp4", 1000, 30)
    a = _fake(tmp_path, "2024-01-01T00-00-00Z.mp4", 400_000, 3)
    b = _fake(tmp_path, "2024-01-02T00-00-00Z.mp4", 400_000, 2)
    c = _fake(tmp_path, "2024-01-03T00-00-00Z.mp4", 400_000, 1)
    active = _fake(tmp_path, "2019-01-01T00-00-00Z.mp4", 400_000, 40)  # being written
    mine = _fake(tmp_path, "holiday.mp4", 400_000, 50)  # not named like a recording: never touched

    deleted = apply_retention(tmp_path, 7, 0, lambda n: n == active.name, lock)
    assert deleted == [old.name]
    deleted = apply_retention(tmp_path, 0, 900_000, lambda n: n == active.name, lock)
    assert deleted == [a.name, b.name]  # oldest first, until under the limit
    assert c.exists() and active.exists() and mine.exists()
    # The newest recording stays even when it alone is over the limit.
    assert apply_retention(tmp_path, 0, 1, lambda n: False, lock) == [active.name]
    assert c.exists()


def test_retention_forgets_what_it_deleted(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from camcast.recorder import RecorderSettings
    from camcast.recorder.core import Recorder

    feed = SimpleNamespace(supports_preroll=False, kind="mp4", fps=FPS)
    recorder = Recorder(feed, RecorderSettings(folder=tmp_path, keep_days=7), lambda message: None)
    old = _fake(tmp_path, "2020-01-01T00-00-00Z.mp4", 1000, 30)
    kept = _fake(tmp_path, "2024-01-01T00-00-00Z.mp4", 1000, 0)
    for path in (old, kept):
        recorder.library.remember(path, now_us(), 1.0)
    assert recorder._apply_retention() == [old.name]
    # The duration cache follows the folder: a deleted file's entry must not stay for good.
    assert set(recorder.library._durations) == {kept.name}


async def test_retention_runs_at_startup_and_after_each_file(start_server: StartServer,
                                                             http: aiohttp.ClientSession,
                                                             tmp_path: Path) -> None:
    folder = tmp_path / "server-0" / "recordings"
    folder.mkdir(parents=True)
    old = _fake(folder, "2020-01-01T00-00-00Z.mp4", 1000, 30)
    big = _fake(folder, "2024-01-01T00-00-00Z.mp4", 3_000_000, 2)
    server = start_server("--keep-days", "7", "--max-recordings-bytes", "2M")
    assert not old.exists() and big.exists()
    state = await post(http, server, "api/record/start")
    await asyncio.sleep(0.5)  # a short recording: retention runs again when its file closes
    await post(http, server, "api/record/stop")
    assert not big.exists() and (folder / state["name"]).exists()


# -- OpenCV backend ---------------------------------------------------------------------------------
async def test_opencv_backend_writes_a_readable_avi(start_server: StartServer,
                                                    http: aiohttp.ClientSession) -> None:
    server = start_server("--recorder", "opencv")
    state = await post(http, server, "api/record/start")
    assert state["name"].endswith(".avi")
    await asyncio.sleep(1.5)  # record for 1.5 s
    await post(http, server, "api/record/stop")
    capture = cv2.VideoCapture(str(server.recordings / state["name"]))
    try:
        frames = 0
        while True:
            ok, image = capture.read()
            if not ok:
                break
            assert image.shape == (480, 640, 3)
            frames += 1
    finally:
        capture.release()
    assert frames >= 1.0 * FPS


def test_opencv_codec_that_cannot_open_is_a_startup_error(tmp_path: Path) -> None:
    args = ["--source", "testpattern", "--host", "127.0.0.1", "--port", "0", "--recordings",
            str(tmp_path / "rec"), "--recorder", "opencv", "--recorder-fourcc", "ZZZZ",
            "--recorder-container", "avi"]
    done = subprocess.run(camcast_command(*args), capture_output=True, text=True, timeout=30,
                          env=clean_env(), cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("camcast: error: --recorder opencv:") and "ZZZZ" in lines[-1]
    assert "Traceback" not in done.stderr and not any("ERROR" in line for line in lines)
    assert list((tmp_path / "rec").iterdir()) == []  # no empty file left behind


# -- failures in-process (the writer's file can be replaced) ----------------------------------------
@contextlib.asynccontextmanager
async def in_process(tmp_path: Path, source_factory: Any = None, **settings: Any
                     ) -> AsyncIterator[tuple[Any, list[dict[str, Any]]]]:
    config = Config(source="testpattern", recordings=tmp_path / "rec", ice_addresses=("127.0.0.1",),
                    **settings).validate()
    prepare_folder(config.recordings)
    app = create_app(config, source_factory)
    messages: list[dict[str, Any]] = []
    # Sinks get each broadcast as JSON text, as a data channel would carry it.
    app[CAMERAS].first.control.attach("test-viewer", lambda text: messages.append(json.loads(text)))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        # The test pattern runs (no "no signal" frames).
        await eventually(lambda: app[CAMERAS].first.healthy, 20, "the test pattern's first frame")
        yield app, messages
    finally:
        await server.close()


class FullDisk:
    """A file that takes `room` bytes and then fails like a full disk."""

    def __init__(self, raw: BinaryIO, room: int) -> None:
        self._raw = raw
        self._room = room

    def write(self, data: bytes | memoryview) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._raw.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def _stopped_and_told(recorder: Any, messages: list[dict[str, Any]]) -> bool:
    """The state flips to stopped a moment before the error and the new state are broadcast."""
    return (recorder.state()["state"] == "stopped" and any(m["type"] == "error" for m in messages)
            and messages[-1]["type"] == "record")


async def test_write_error_stops_cleanly_and_streaming_goes_on(tmp_path: Path) -> None:
    async with in_process(tmp_path) as (app, messages):
        recorder = app[CAMERAS].first.recorder

        def create(folder: Path, start_us: int, ext: str) -> tuple[Path, Any]:
            path, raw = create_unique(folder, start_us, ext)
            return path, FullDisk(raw, 400_000)

        recorder.create = create
        state = await recorder.start()
        await eventually(lambda: _stopped_and_told(recorder, messages), 20,
                         "the recording stopped and the error and state told")
        errors = [m for m in messages if m["type"] == "error"]
        assert len(errors) == 1 and "No space left on device" in errors[0]["message"]
        assert messages[-1] == {"type": "record", **recorder.state()}
        assert recorder.state()["error"]
        rec = read_recording(Path(app[CAMERAS].first.recorder.settings.folder) / state["name"])
        assert rec.keys[0] and len(rec.times) >= 10  # the fragments written before the error play
        # Streaming goes on, and a new recording (with room) works.
        recorder.create = create_unique
        packets = app[CAMERAS].first.recorder.feed._packets  # type: ignore[attr-defined]
        published = packets.published
        await eventually(lambda: packets.published > published + 5, 10, "more encoded packets")
        again = await recorder.start()
        assert again["state"] == "recording" and again["error"] is None
        await recorder.stop()


async def test_low_disk_space_stops_the_recording(tmp_path: Path) -> None:
    async with in_process(tmp_path) as (app, messages):
        recorder = app[CAMERAS].first.recorder
        state = await recorder.start()
        await asyncio.sleep(1.2)  # record a while, then the disk runs low
        free = shutil.disk_usage(recorder.settings.folder).free
        recorder.min_free_bytes = free * 2  # now "less than the threshold is free"
        await eventually(lambda: _stopped_and_told(recorder, messages), 20,
                         "the recording stopped and the error and state told")
        errors = [m["message"] for m in messages if m["type"] == "error"]
        assert len(errors) == 1 and "low disk space" in errors[0]
        assert_good_recording(read_recording(recorder.settings.folder / state["name"]))
        # Starting again is refused with the reason, and nothing is created.
        with pytest.raises(Exception, match="low disk space"):
            await recorder.start()
        assert len(list(recorder.settings.folder.iterdir())) == 1


class ShrinkingPattern:
    """640x480 frames, then 320x240 ones: the encoder restarts (a new generation)."""

    description = "shrinking"
    stamps = True

    def __init__(self, switch_after: int) -> None:
        self._switch = switch_after
        self._count = 0
        self._pacer: Pacer | None = None

    def open(self) -> None:
        self._pacer = Pacer(FPS)

    def read(self) -> np.ndarray | None:
        assert self._pacer is not None
        self._pacer.wait()
        self._count += 1
        size = (480, 640) if self._count <= self._switch else (240, 320)
        image = np.full((*size, 3), 80, np.uint8)
        cv2.circle(image, (self._count * 4 % size[1], size[0] // 2), 20, (0, 200, 255), -1)
        return image

    def close(self) -> None:
        self._pacer = None


async def test_a_new_frame_size_starts_a_new_file(tmp_path: Path) -> None:
    async with in_process(tmp_path, lambda: ShrinkingPattern(switch_after=45)) as (app, messages):
        recorder = app[CAMERAS].first.recorder
        first = await recorder.start()
        await eventually(lambda: recorder.state()["name"] != first["name"], 20, "a second file")
        await asyncio.sleep(0.5)  # the second file gets half a second of frames
        second = await recorder.stop()
        a = read_recording(recorder.settings.folder / first["name"], stamps=False)
        b = read_recording(recorder.settings.folder / second["name"], stamps=False)
        assert (a.width, a.height, b.width, b.height) == (640, 480, 320, 240)
        assert a.keys[0] and b.keys[0]
        names = [m["name"] for m in messages if m["type"] == "record" and m["state"] == "recording"]
        assert names == [first["name"], second["name"]]  # viewers hear of the new file


# -- a real full disk (a tiny tmpfs), told to a real peer ---------------------------------------------
@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
                          capture_output=True, timeout=10)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10)


async def test_a_full_disk_stops_recording_and_tells_viewers(start_server: StartServer, tiny_disk: Path,
                                                             http: aiohttp.ClientSession,
                                                             loopback_ice: None) -> None:
    server = start_server("--recordings", str(tiny_disk), "--min-free-mb", "0", "--min-free-percent", "0")
    viewer = await connect(http, server)
    try:
        await next_record(viewer)
        state = await post(http, server, "api/record/start")
        error = await viewer.next_message(timeout=20)
        assert error["type"] == "error" and "No space left on device" in error["message"]
        assert (await record_state(viewer, "stopped"))["error"]
        frames = len(viewer.frames)
        await viewer.wait_frames(frames + 15)  # streaming goes on
    finally:
        await viewer.close()
    rec = read_recording(tiny_disk / state["name"])
    assert rec.keys[0] and len(rec.times) >= 10
    code, _, _ = server.get("healthz")
    assert code == 200
