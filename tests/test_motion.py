"""Motion events against the real server: test videos as file sources, with an object that crosses
a noisy, compressed scene at known times; the events API, thumbnails, the data channel of an aiortc
peer, a webhook receiver, event recordings reopened with PyAV, restarts and crashes, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import cv2
import numpy as np
import pytest
from aiohttp import web

from camcast.motion.detector import MotionDetector, MotionSettings
from camcast.motion.events import EventTracker
from support.mjpeg import open_mjpeg
from support.motionvideo import Crossing, make_video, object_visible, scene
from support.server import ServerProcess, camcast_command, clean_env, launch
from support.waiting import eventually
from support.webrtc_viewer import Viewer

QUIET = 2.0
EVENT_KEYS = {"id", "camera", "start", "end", "peak", "box", "thumbnail", "recording"}


def epoch_us(iso: str) -> int:
    from datetime import datetime
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1e6)


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def ended_events(http: aiohttp.ClientSession, server: ServerProcess) -> list[dict[str, Any]]:
    body = await get_json(http, server.url + "api/events")
    return [event for event in body["events"] if event["end"] is not None]


@contextlib.asynccontextmanager
async def webhook_receiver(refuse_first_end: bool = False) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """Every POST it gets; `refuse_first_end`: the first "end" is answered 503 (to be tried again)."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        message = await request.json()
        received.append(message)
        if refuse_first_end and message["state"] == "end" and sum(m["state"] == "end" for m in received) == 1:
            return web.Response(status=503)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


async def watch_object(http: aiohttp.ClientSession, url: str, seen: list[tuple[int, bool]]) -> None:
    """Every MJPEG part: its capture time (the server's clock) and whether the object is in it."""
    async with open_mjpeg(http, url) as reader:
        while (part := await reader.next_part()) is not None:
            seen.append((part.header_time_us, object_visible(part.image())))


def changes(seen: list[tuple[int, bool]], to: bool) -> list[int]:
    """Capture times of the first pictures where the object appeared (`to` True) or was gone."""
    return [t for (_, before), (t, now) in itertools.pairwise(seen) if before != to and now == to]


async def motion_messages(viewer: Viewer, until: Any, timeout: float) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def read() -> None:
        while not until(found):
            message = await viewer.messages.get()
            if isinstance(message, dict) and message.get("type") == "motion":
                found.append(message)

    await asyncio.wait_for(read(), timeout)
    return found


# -- the server, end to end ----------------------------------------------------------------------------

async def test_events_found_announced_recorded_and_kept(start_server, tmp_path: Path,
                                                         http: aiohttp.ClientSession,
                                                         loopback_ice: None) -> None:
    video = make_video(tmp_path / "crossing.mp4", 20, [Crossing(3.0), Crossing(11.0)])
    async with webhook_receiver() as (hook_url, hooks):
        server = start_server("--source", str(video), "--motion", "--motion-quiet", str(QUIET),
                              "--motion-record", "--motion-post-roll", "1", "--webhook", hook_url,
                              "--adapt", "off")
        viewer = Viewer(server.url)
        await viewer.connect(http)
        await viewer.wait_open()
        seen: list[tuple[int, bool]] = []
        watcher = asyncio.create_task(watch_object(http, server.url + "video.mjpg", seen))
        try:
            await eventually(lambda: len(seen) > 0, 15, "MJPEG pictures")
            watching_since = seen[0][0]

            async def observed() -> list[dict[str, Any]]:
                # Events whose whole crossing the MJPEG watcher saw.
                return [e for e in await ended_events(http, server)
                        if epoch_us(e["start"]) > watching_since + 1_000_000]

            events = await eventually(observed, 60, "two motion events seen from start to end",
                                      until=lambda found: len(found) >= 2)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await watcher
        entered, left = changes(seen, True), changes(seen, False)
        for event in events:
            assert set(event) == EVENT_KEYS
            start, end = epoch_us(event["start"]), epoch_us(event["end"])
            entry = min(entered, key=lambda t, start=start: abs(t - start))
            assert abs(start - entry) <= 500_000, (event, entered)
            exit_ = min((t for t in left if t > entry), default=None)
            assert exit_ is not None, (event, left)
            assert exit_ - 500_000 <= end <= exit_ + QUIET * 1e6, (event, exit_)
            assert 1.0 <= event["peak"] <= 5.0, event  # a 2.1 % square, and its blur
            _, y, w, h = event["box"]
            assert 0.35 <= y <= 0.5 and w <= 0.35 and h <= 0.3, event["box"]

        # The data channel heard both ends of an event; the webhook receiver too.
        messages = await motion_messages(viewer, lambda found: any(m["state"] == "end" for m in found), 30)
        ended = next(m for m in messages if m["state"] == "end")
        assert set(ended["event"]) == EVENT_KEYS and ended["event"]["end"] is not None
        await viewer.close()
        posted = await eventually(lambda: [h for h in hooks if h["event"]["id"] == events[0]["id"]], 15,
                                  "webhook start and end",
                                  until=lambda found: {h["state"] for h in found} >= {"start", "end"})
        assert all(h["type"] == "motion" and set(h["event"]) == EVENT_KEYS for h in posted)

        # The thumbnail: the picture with the object, its box drawn in red.
        async with http.get(server.url.rstrip("/") + events[0]["thumbnail"]) as response:
            assert response.status == 200 and response.content_type == "image/jpeg"
            thumbnail = cv2.imdecode(np.frombuffer(await response.read(), np.uint8), cv2.IMREAD_COLOR)
        assert object_visible(thumbnail)
        red = (thumbnail[..., 2] > 180) & (thumbnail[..., 1] < 80) & (thumbnail[..., 0] < 80)
        assert np.count_nonzero(red) > 100

        # The event's recording starts before the event (pre-roll): without the object, then with it.
        await check_recording(http, server, events[-1])

        # DELETE removes one event; the others survive a restart.
        gone, kept = events[0], events[1]
        async with http.delete(server.url + f"api/events/{gone['id']}") as response:
            assert response.status == 204
        async with http.get(server.url + f"api/events/{gone['id']}") as response:
            assert response.status == 404
        async with http.delete(server.url + f"api/events/{gone['id']}") as response:
            assert response.status == 404
        code, _ = server.terminate()
        assert code == 0
        again = start_server("--source", str(video), "--motion", "--motion-quiet", str(QUIET),
                             "--recordings", str(server.recordings), "--adapt", "off")
        ids = {e["id"] for e in (await get_json(http, again.url + "api/events?limit=1000"))["events"]}
        assert kept["id"] in ids and gone["id"] not in ids
        same = await get_json(http, again.url + f"cameras/default/api/events/{kept['id']}")
        assert same == kept


async def check_recording(http: aiohttp.ClientSession, server: ServerProcess, event: dict[str, Any]) -> None:
    recording = event["recording"]
    assert recording is not None and recording["offset"] >= 1.0, event

    async def stopped() -> bool:
        state = await get_json(http, server.url + "api/record")
        return state["state"] == "stopped"

    await eventually(stopped, 30, "the motion recording to stop after the post-roll")
    async with http.get(server.url.rstrip("/") + recording["url"]) as response:
        assert response.status == 200
        data = await response.read()
    with av.open(io.BytesIO(data)) as container:
        frames = [(frame.time, object_visible(frame.to_ndarray(format="bgr24")))
                  for frame in container.decode(video=0)]
    first = frames[0][0]
    assert not frames[0][1], "the pre-roll shows the scene before the object"
    entry = next(t - first for t, visible in frames if visible)
    assert abs(entry - recording["offset"]) <= 0.6, (entry, recording)


async def test_noise_ramp_and_masked_motion_make_no_event(start_server, tmp_path: Path,
                                                         http: aiohttp.ClientSession) -> None:
    # 60 s of noise, JPEG artefacts and a ±30 % brightness swing, played 4 times faster (a steeper ramp
    # than the real one); and the crossing video with a mask over the object's path.
    ramp = make_video(tmp_path / "ramp.mp4", 60, ramp=0.3, noise=6.0, speedup=4.0)
    crossing = make_video(tmp_path / "crossing.mp4", 12, [Crossing(2.0)])
    config = tmp_path / "cameras.toml"
    config.write_text(f'motion = true\n\n[cameras.ramp]\nsource = "{ramp}"\n\n'
                      f'[cameras.masked]\nsource = "{crossing}"\nmotion_masks = [[0, 0.35, 1, 0.3]]\n')
    server = start_server("--config", str(config), "--adapt", "off", source=None)

    async def played_once() -> bool:
        cameras = await get_json(http, server.url + "api/status")
        masked = await get_json(http, server.url + "cameras/masked/api/status")
        return cameras["frames_captured"] >= 900 and masked["frames_captured"] >= 180

    await eventually(played_once, 60, "both videos played once")
    for name in ("ramp", "masked"):
        body = await get_json(http, server.url + f"cameras/{name}/api/events")
        assert body == {"events": []}, name
        status = await get_json(http, server.url + f"cameras/{name}/api/status")
        assert status["motion"] == {"enabled": True, "active": False, "event": None}
    async with http.get(server.url + "metrics") as response:
        text = await response.text()
    assert 'camcast_motion_events_total{camera="ramp"} 0.0' in text


async def test_an_event_open_at_a_crash_ends_at_its_last_update(start_server, tmp_path: Path,
                                                                 http: aiohttp.ClientSession) -> None:
    video = make_video(tmp_path / "busy.mp4", 12, [Crossing(1.0 + 4 * k) for k in range(3)])
    args = ("--source", str(video), "--motion", "--adapt", "off")
    crashing = launch(tmp_path / "crashing", args)  # not the fixture's: it must not stop cleanly
    try:
        async def under_way() -> dict[str, Any] | None:
            status = await get_json(http, crashing.url + "api/status")
            return status["motion"]["event"]

        event = await eventually(under_way, 30, "an event under way")
    finally:
        crashing.proc.send_signal(signal.SIGKILL)
        crashing.proc.wait()
    again = start_server(*args, "--recordings", str(crashing.recordings))
    after = await get_json(http, again.url + f"api/events/{event['id']}")
    assert after["end"] is not None and epoch_us(after["end"]) >= epoch_us(event["start"])
    assert "left open by a crash" in again.log()


async def test_events_api_bad_arguments(start_server, http: aiohttp.ClientSession) -> None:
    server = start_server("--adapt", "off")
    assert await get_json(http, server.url + "api/events") == {"events": []}  # motion is off
    status = await get_json(http, server.url + "api/status")
    assert status["motion"] == {"enabled": False, "active": False, "event": None}
    for query in ("since=yesterday", "since=2024-05-01T12:00:00", "since=nan", "limit=0", "limit=1001",
                  "limit=ten"):
        async with http.get(server.url + f"api/events?{query}") as response:
            assert response.status == 400, query
            assert (await response.text()).strip(), query
    # A "+01:00" zone written into the URL as it is arrives as a space: still understood.
    for query in ("since=2024-05-01T12:00:00Z", "since=1714564800", "limit=1000",
                  "since=2024-05-01T13:00:00+01:00", "since=2024-05-01T13:00:00%2B01:00"):
        async with http.get(server.url + f"cameras/default/api/events?{query}") as response:
            assert response.status == 200, query
    async with http.get(server.url + "api/events/0123456789abcdef.jpg") as response:
        assert response.status == 404
    async with http.delete(server.url + "api/events/0123456789abcdef") as response:
        assert response.status == 404


@pytest.mark.parametrize(("args", "says"), [
    (["--motion-sensitivity", "2"], "--motion-sensitivity 2: must be 0..1"),
    (["--motion-fps", "0"], "--motion-fps 0: must be"),
    (["--motion-mask", "0.5,0.5,0.8,0.1"], "--motion-masks 0.5,0.5,0.8,0.1"),
    (["--motion-mask", "0.5,0.5"], "is not x,y,w,h"),
    (["--webhook", "ftp://example.org/x"], "--webhook ftp://example.org/x: expected an http(s)"),
    (["--motion-min-area", "0"], "--motion-min-area 0: must be"),
])
def test_bad_motion_options_exit_2_with_one_line(args: list[str], says: str, tmp_path: Path) -> None:
    done = subprocess.run(camcast_command("--source", "testpattern", "--check", *args), env=clean_env(),
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr


def test_bad_motion_masks_in_a_file_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[cameras.front]\nsource = "testpattern"\nmotion = true\nmotion_masks = [[0, 0, 1]]\n')
    done = subprocess.run(camcast_command("--config", str(config), "--check"), env=clean_env(),
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"camcast: error: {config}: [cameras.front] motion_masks: expected a list of [x, y, w, h] lists, "
        "got an array"]


# -- the detector and the tracker alone, on generated frames ---------------------------------------------

def _frames(seconds: float, fps: float, crossing: Crossing | None, ramp: float = 0.0,
            seed: int = 3) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    base = cv2.cvtColor(cv2.resize(scene(), (160, 120), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    out = []
    for i in range(round(seconds * fps)):
        t = i / fps
        picture = base.astype(np.float32) * (1 + ramp * t / seconds) + rng.normal(0, 4, base.shape)
        if crossing is not None and crossing.enters <= t < crossing.leaves:
            right = round((t - crossing.enters) * 50)
            picture[50:70, max(0, right - 20):right] = 240
        out.append((round(t * 1e6), np.clip(picture, 0, 255).astype(np.uint8)))
    return out


def _run(frames: list[tuple[int, np.ndarray]], settings: MotionSettings) -> list[Any]:
    detector, tracker = MotionDetector(settings), EventTracker(settings)
    transitions = []
    for t_us, gray in frames:
        transitions += tracker.feed(detector.feed(gray, t_us), t_us)
    return [t for t in transitions if t.kind != "update"]


def test_detector_finds_an_object_and_ignores_a_ramp() -> None:
    settings = MotionSettings(quiet=1.0)
    found = _run(_frames(12, 5, Crossing(2.0)), settings)
    assert [t.kind for t in found] == ["start", "end"]
    assert abs(found[0].start_us - 2.0e6) <= 0.4e6
    assert _run(_frames(30, 5, None, ramp=0.4), settings) == []
    # A mask over the object's path hides it.
    assert _run(_frames(12, 5, Crossing(2.0)), MotionSettings(masks=((0, 0.35, 1, 0.3),))) == []


def test_tracker_needs_persistent_motion() -> None:
    from camcast.motion.detector import MotionSample
    tracker = EventTracker(MotionSettings(start_after=0.3, quiet=1.0))
    assert tracker.feed(MotionSample(3.0, (0, 0, 0.1, 0.1)), 0) == []
    assert tracker.feed(MotionSample(0.0, None), 200_000) == []  # one sample: a blip
    assert tracker.feed(MotionSample(3.0, None), 400_000) == []
    [start] = tracker.feed(MotionSample(4.0, (0, 0, 0.2, 0.2)), 800_000)
    assert start.kind == "start" and start.start_us == 400_000 and start.peak == 4.0
    assert tracker.feed(MotionSample(0.0, None), 1_500_000) == []
    [end] = tracker.feed(MotionSample(0.0, None), 1_800_000)
    assert end.kind == "end" and end.end_us == 800_000



async def test_an_event_open_at_shutdown_ends_and_its_webhook_says_so(start_server, tmp_path: Path,
                                                                     http: aiohttp.ClientSession) -> None:
    video = make_video(tmp_path / "busy.mp4", 12, [Crossing(1.0 + 4 * k) for k in range(3)])
    async with webhook_receiver(refuse_first_end=True) as (hook_url, hooks):
        server = start_server("--source", str(video), "--motion", "--adapt", "off", "--webhook", hook_url)

        async def under_way() -> dict[str, Any] | None:
            status = await get_json(http, server.url + "api/status")
            return status["motion"]["event"]

        event = await eventually(under_way, 30, "an event under way")
        def announced(state: str) -> bool:
            return any(h["state"] == state and h["event"]["id"] == event["id"] for h in hooks)

        await eventually(lambda: announced("start"), 10, "the start's webhook")
        # In a thread: the receiver lives on this event loop and must answer meanwhile.
        assert (await asyncio.to_thread(server.terminate))[0] == 0
    # Refused once, it was tried again before the server let go of it.
    ends = [h for h in hooks if h["state"] == "end" and h["event"]["id"] == event["id"]]
    assert len(ends) == 2 and ends[0]["event"]["end"] is not None, hooks
