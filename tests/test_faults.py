"""Faults: sources that hang, fail or change size, encoder errors, peers that fail or never connect.

These run the app in this process (create_app with a source factory, served on 127.0.0.1) so a
test can hand it a misbehaving source, break its encoder, or shorten aioice's timers; the viewers
are real (aiohttp MJPEG readers, aiortc peers over loopback). A camera unplugged mid-stream (a video
file that goes away) is tested against the real server in test_sources, a full disk in
test_recorder; here a recordings folder that cannot be written at startup.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import cv2
import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection

from camcast.app import create_app
from camcast.appkeys import CAMERAS, PEERS
from camcast.config import Config
from camcast.encoding import video as video_module
from camcast.frames import Frame
from camcast.recorder import prepare_folder
from camcast.sources.pacing import Pacer
from camcast.webrtc import peer as peer_module
from support.mjpeg import MjpegReader, boundary_of
from support.server import camcast_command, clean_env
from support.waiting import eventually
from support.webrtc_viewer import Viewer

pytestmark = pytest.mark.usefixtures("loopback_ice")

FPS = 20.0


class App:
    def __init__(self, app: web.Application, url: str) -> None:
        self.app = app
        self.url = url

    @property
    def camera(self) -> Any:
        return self.app[CAMERAS].first

    async def status(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.get(self.url + "api/status") as r:
            return await r.json()

    async def health(self, http: aiohttp.ClientSession) -> int:
        async with http.get(self.url + "healthz") as r:
            return r.status


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, source_factory: Callable[[], Any] | None = None,
                **settings: Any) -> AsyncIterator[App]:
    config = Config(source="testpattern", width=320, height=240, fps=FPS, recordings=tmp_path / "rec",
                    ice_addresses=("127.0.0.1",), **settings).validate()
    prepare_folder(config.recordings)
    app = create_app(config, source_factory)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield App(app, f"http://127.0.0.1:{runner.addresses[0][1]}/")
    finally:
        await runner.cleanup()


class MjpegWatcher:
    """Reads /video.mjpg in the background and keeps each part's picture size and arrival time."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.parts: list[tuple[float, tuple[int, int]]] = []
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._run(http, url + "video.mjpg"))

    async def _run(self, http: aiohttp.ClientSession, url: str) -> None:
        try:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=10)) as r:
                reader = MjpegReader(r.content, boundary_of(r.headers["Content-Type"]))
                async for part in reader:
                    height, width = part.image().shape[:2]
                    self.parts.append((time.monotonic(), (width, height)))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # reported by close()
            self.error = exc

    def since(self, moment: float) -> list[tuple[int, int]]:
        return [size for arrived, size in self.parts if arrived >= moment]

    def longest_gap(self, start: float, end: float) -> float:
        times = [start] + [t for t, _ in self.parts if start <= t <= end] + [end]
        return max(b - a for a, b in itertools.pairwise(times))

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        assert self.error is None, f"the MJPEG stream broke: {self.error!r}"


# -- sources that misbehave ---------------------------------------------------------------------
class Pattern:
    """A plain moving picture at FPS; `size(n)` gives the (width, height) of frame n."""

    description = "pattern"
    stamps = True

    def __init__(self, size: Callable[[int], tuple[int, int]] = lambda n: (320, 240)) -> None:
        self._size = size
        self._pacer: Pacer | None = None
        self.count = 0

    def open(self) -> None:
        self._pacer = Pacer(FPS)

    def read(self) -> np.ndarray | None:
        assert self._pacer is not None
        self._pacer.wait()
        self.count += 1
        width, height = self._size(self.count)
        image = np.full((height, width, 3), 90, np.uint8)
        cv2.circle(image, (self.count * 3 % width, height // 2), max(2, height // 8), (0, 200, 255), -1)
        return image

    def close(self) -> None:
        self._pacer = None


class HangingPattern(Pattern):
    """Delivers `good` frames, then hangs in read() until `release` is set; then returns a red frame."""

    RED = (0, 0, 255)

    def __init__(self, good: int, release: threading.Event) -> None:
        super().__init__()
        self._good = good
        self._release = release

    def read(self) -> np.ndarray | None:
        if self.count >= self._good:
            self._release.wait()
            image = np.zeros((240, 320, 3), np.uint8)
            image[:] = self.RED
            return image
        return super().read()


class FailingPattern(Pattern):
    """Delivers `good` frames, then fails the way a camera does when unplugged."""

    def __init__(self, good: int, how: str) -> None:
        super().__init__()
        self._good, self._how = good, how

    def read(self) -> np.ndarray | None:
        if self.count >= self._good:
            if self._how == "raise":
                raise OSError(19, "No such device")
            return None
        return super().read()


def factory(*sources: Any) -> Callable[[], Any]:
    """A source factory that hands out `sources` in turn, then plain patterns."""
    queue = list(sources)
    return lambda: queue.pop(0) if queue else Pattern()


# -- sources ------------------------------------------------------------------------------------
async def test_a_source_that_hangs_in_read_is_replaced(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    release = threading.Event()
    hanging = HangingPattern(good=20, release=release)
    published: list[Frame] = []
    try:
        async with serve(tmp_path, factory(hanging)) as app:
            tap = app.camera.frames.subscribe(maxsize=10_000)
            watcher = MjpegWatcher(http, app.url)
            try:
                await eventually(lambda: hanging.count >= 20, what="the source to hang")
                hung_at = time.monotonic()
                # Lost by the 2 s watchdog (plus slack for a busy machine); a new source opens at once.
                capture = app.camera.supervisor
                assert capture is not None
                await eventually(lambda: capture.reconnects == 1, 6, "the watchdog to call it lost")
                lost = time.monotonic()
                lost_after = lost - hung_at
                captured = capture.frames_captured
                await eventually(lambda: capture.frames_captured > captured + 5, 10, "a new source's frames")
                assert await _is(app, http, 200)
                recovered = time.monotonic()
                recovered_after = recovered - hung_at
                await eventually(lambda: len(watcher.since(recovered)) >= 10, 10,
                                 "MJPEG pictures from the new source")
                status = await app.status(http)
                assert status["source_up"] and status["reconnects"] == 1
                # MJPEG viewers got pictures all along once it was lost (before, the watchdog's 2 s
                # without any).
                assert watcher.longest_gap(lost, time.monotonic()) < 1.0
                assert watcher.longest_gap(hung_at, time.monotonic()) < 4.0
                print(f"\nhung source lost after {lost_after:.1f} s, replaced after {recovered_after:.1f} s")
                assert capture._stuck_reads() == 2  # the hung one, the new one
            finally:
                await watcher.close()
            # The hung read returns only now: the abandoned thread must not publish what it read.
            release.set()
            await eventually(lambda: capture._stuck_reads() == 1, 10, "the abandoned read to return")
            while (frame := tap.get_nowait()) is not None:
                published.append(frame)
            tap.close()
            started = time.monotonic()
        assert time.monotonic() - started < 3, "shutdown waited on the capture threads"
    finally:
        release.set()
    red = [f for f in published if f.image[200:, :, 2].mean() > 250 and f.image[200:, :, :2].max() == 0]
    assert not red, "a frame read by the abandoned source was published"
    assert any(f.live for f in published)


async def _is(app: App, http: aiohttp.ClientSession, code: int) -> bool:
    return await app.health(http) == code


async def test_shutdown_does_not_wait_for_a_read_that_hangs(tmp_path: Path,
                                                            http: aiohttp.ClientSession) -> None:
    release = threading.Event()
    try:
        async with serve(tmp_path, factory(*(HangingPattern(2, release) for _ in range(5)))) as app:
            # Every source hangs: the watchdog abandons them one after another, up to the limit.
            capture = app.camera.supervisor
            await eventually(lambda: capture.reconnects >= 3, 20, "three stalls")
            await asyncio.sleep(0.5)  # a moment more: at the limit, no fourth thread starts
            assert capture._stuck_reads() == 3 and capture.reconnects == 3  # no more threads than that
            started = time.monotonic()
        assert time.monotonic() - started < 3
    finally:
        release.set()


@pytest.mark.parametrize("how", ["none", "raise"])
async def test_a_source_that_starts_failing_is_reopened(tmp_path: Path, http: aiohttp.ClientSession,
                                                        how: str) -> None:
    async with serve(tmp_path, factory(FailingPattern(20, how))) as app:
        watcher = MjpegWatcher(http, app.url)
        try:
            await eventually(lambda: app.camera.supervisor.reconnects == 1, 10, "the source lost")
            lost = time.monotonic()
            await eventually(lambda: _is(app, http, 200), 10, "the source back")
            assert watcher.longest_gap(lost, time.monotonic()) < 1.0
            assert (await app.status(http))["reconnects"] == 1
        finally:
            await watcher.close()


# -- frames that change size --------------------------------------------------------------------
def changing_size(n: int) -> tuple[int, int]:
    """320x240, then 160x120, then an odd 161x121 (the H.264 encoder needs even sizes)."""
    return (320, 240) if n <= 40 else (160, 120) if n <= 80 else (161, 121)


async def test_viewers_survive_frames_of_a_new_size(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    pattern = Pattern(changing_size)
    async with serve(tmp_path, factory(pattern), keyframe_interval=60) as app:
        watcher = MjpegWatcher(http, app.url)
        viewer = Viewer(app.url, read_stamps=False)
        try:
            await viewer.connect(http)
            await viewer.wait_frames(5, timeout=15)
            await eventually(lambda: pattern.count > 100, 15, "all three sizes")
            await eventually(lambda: {(f.width, f.height) for f in viewer.frames[-5:]} == {(160, 120)}, 10,
                             "the peer decoding the odd size (cropped to 160x120)")
            frames = len(viewer.frames)
            await viewer.wait_frames(frames + 10)
            sizes = [(f.width, f.height) for f in viewer.frames]
            assert sizes[0] == (320, 240)
            # Each new size started on a keyframe (the encoder restarted), and the peer decoded on.
            firsts = [i for i in range(1, len(sizes)) if sizes[i] != sizes[i - 1]]
            assert firsts and all(viewer.frames[i].key for i in firsts), firsts
            assert viewer.decode_errors == 0
            assert {(320, 240), (160, 120), (161, 121)} <= set(watcher.since(0)), "MJPEG keeps every size"
            encoder = app.camera.video_encoders["h264"]
            assert encoder.errors == 0 and encoder.restarts >= 2
        finally:
            await viewer.close()
            await watcher.close()


# -- encoder errors -------------------------------------------------------------------------------
class BreakingContext:
    """Wraps a real codec context; `encode` fails while the shared `failures` budget lasts."""

    def __init__(self, ctx: Any, plan: dict[str, int]) -> None:
        self._ctx = ctx
        self._plan = plan

    def encode(self, picture: Any) -> Any:
        self._plan["frames"] += 1
        if self._plan["frames"] >= self._plan["fail_at"] and self._plan["failures"] > 0:
            self._plan["failures"] -= 1
            raise av.FFmpegError(-5, "injected encoder failure")
        return self._ctx.encode(picture)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


async def test_an_encoder_error_restarts_it_with_a_keyframe_for_every_peer(
        tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    plan = {"frames": 0, "fail_at": 1_000_000, "failures": 5}
    real_open = video_module._open_context
    monkeypatch.setattr(video_module, "_open_context",
                        lambda *args: BreakingContext(real_open(*args), plan))
    caplog.set_level(logging.INFO, logger="camcast.encoding")
    async with serve(tmp_path, keyframe_interval=60) as app:
        viewers = [Viewer(app.url, read_stamps=False) for _ in range(2)]
        try:
            for v in viewers:
                await v.connect(http)
                await v.wait_frames(5, timeout=15)
            marks = [len(v.frames) for v in viewers]
            plan["fail_at"] = plan["frames"] + 1  # five frames in a row fail from now on
            encoder = app.camera.video_encoders["h264"]
            await eventually(lambda: encoder.errors == 5, 10, "the injected failures")
            for v, mark in zip(viewers, marks, strict=True):
                # Every peer resyncs on the new encoder's first keyframe and decodes on.
                key = await v.wait_keyframe(mark, timeout=10)
                after = v.frames.index(key)
                await v.wait_frames(after + 10)
                assert v.decode_errors == 0
            assert encoder.restarts == 1 + 5  # its first start, then a reopen after each failure
        finally:
            for v in viewers:
                await v.close()
    errors = [r for r in caplog.records if "encoder error" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR, "logged once, not per frame"
    assert any("recovered" in r.getMessage() for r in caplog.records)


async def test_an_encoder_crash_is_restarted(tmp_path: Path, http: aiohttp.ClientSession,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever escapes a shared encoder's loop, the worker runs again while anyone watches."""
    broken = {"left": 1}
    real_encode = video_module.SharedVideoEncoder._encode

    def encode(self: Any, frame: Frame) -> Any:
        if broken["left"] and self.frames_encoded > 5:
            broken["left"] -= 1
            raise RuntimeError("a bug the per-frame guard does not catch")
        return real_encode(self, frame)

    monkeypatch.setattr(video_module.SharedVideoEncoder, "_encode", encode)
    async with serve(tmp_path) as app:
        viewer = Viewer(app.url, read_stamps=False)
        try:
            await viewer.connect(http)
            await viewer.wait_frames(3, timeout=15)
            await eventually(lambda: broken["left"] == 0, 10, "the crash")
            mark = len(viewer.frames)
            await viewer.wait_keyframe(mark, timeout=10)
            await viewer.wait_frames(mark + 10)
        finally:
            await viewer.close()


# -- peers that fail ------------------------------------------------------------------------------
async def offer_and_vanish(http: aiohttp.ClientSession, url: str) -> str:
    """Offer, take the answer, and go away without ever connecting (ICE checks go unanswered)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(url + "offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}) as r:
            assert r.status == 200
            return (await r.json())["id"]
    finally:
        await pc.close()


async def test_a_peer_whose_ice_fails_is_removed(tmp_path: Path, http: aiohttp.ClientSession,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    import aioice.stun

    monkeypatch.setattr(aioice.stun, "RETRY_MAX", 1)  # checks give up after 1.5 s, not 31.5 s
    caplog.set_level(logging.INFO, logger="camcast.viewers")
    caplog.set_level(logging.INFO, logger="camcast.webrtc")
    async with serve(tmp_path) as app:
        peer_id = await offer_and_vanish(http, app.url)
        assert len(app.app[PEERS]) == 1
        await eventually(lambda: len(app.app[PEERS]) == 0, 10, "the failed peer removed")
        assert f"{peer_id} from 127.0.0.1 (connection failed)" in caplog.text
        assert (await app.status(http))["viewers"]["webrtc"] == 0


async def test_a_peer_that_never_connects_is_removed(tmp_path: Path, http: aiohttp.ClientSession,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(peer_module, "CONNECT_TIMEOUT", 2.0)
    caplog.set_level(logging.INFO, logger="camcast.viewers")
    caplog.set_level(logging.INFO, logger="camcast.webrtc")
    async with serve(tmp_path) as app:
        peer_id = await offer_and_vanish(http, app.url)
        await eventually(lambda: len(app.app[PEERS]) == 0, 10, "the peer removed")
        assert f"{peer_id} from 127.0.0.1 (not connected within 2 s)" in caplog.text


# -- disk -----------------------------------------------------------------------------------------
@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A read-only filesystem (root ignores file modes, so a mode would not do)."""
    mount = tmp_path / "read-only"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a read-only tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)],
                          capture_output=True, timeout=10)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10)


@pytest.mark.parametrize("inside", [False, True])
def test_a_recordings_folder_that_cannot_be_written_stops_startup(read_only_folder: Path, tmp_path: Path,
                                                                  inside: bool) -> None:
    """Not writable, or missing and impossible to create: exit 2 with one line that says so."""
    folder = read_only_folder / "recordings" if inside else read_only_folder
    done = subprocess.run(
        camcast_command("--source", "testpattern", "--host", "127.0.0.1", "--port", "0",
                        "--recordings", str(folder)),
        capture_output=True, text=True, timeout=30, env=clean_env(), cwd=tmp_path)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"camcast: error: --recordings {folder}: ")
    assert "Read-only file system" in lines[0]
