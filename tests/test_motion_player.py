"""Motion events in the player and the wall, in real headless Chromium against a real server whose
camera is a generated file: a still, noisy, compressed scene that an object crosses once per loop.

As in test_player.py, waits poll `page.evaluate` (the page's CSP forbids Playwright's string waits).
"""

from __future__ import annotations

import asyncio
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from playwright.async_api import Page

from support.browser import open_page
from support.server import ServerProcess
from support.waiting import eventually

WAIT = 30.0  # generous: a detector, an encoder, a recorder and a browser share two busy cores
EVENT_WAIT = 60.0  # the object crosses once per loop of the file
FPS = 15
WIDTH, HEIGHT = 320, 240
SECONDS = 24  # one loop: the object crosses in its first seconds, then the scene is still
CROSSING = (2.0, 5.0)  # s into the loop when the object enters and leaves
OBJECT = (64, 48)  # 4 % of the picture


def scene(seed: int = 7) -> np.ndarray:
    """A still, textured picture: blurred noise blobs and a few shapes, the same every frame."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
    image = cv2.resize(base, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    image = cv2.GaussianBlur(image, (0, 0), 3)
    cv2.rectangle(image, (20, 150), (90, 220), (60, 60, 60), -1)
    cv2.circle(image, (250, 60), 30, (200, 200, 210), -1)
    return image


def write_video(path: Path, moving: bool) -> Path:
    """An H.264 file of the scene with sensor noise; with `moving`, a dark box crosses it from
    left to right during CROSSING of every loop."""
    still = scene()
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        stream.options = {"preset": "ultrafast", "g": str(FPS), "crf": "28"}
        for index in range(SECONDS * FPS):
            t = index / FPS
            noise = rng.normal(0, 3, still.shape)
            frame = np.clip(still + noise, 0, 255).astype(np.uint8)
            if moving and CROSSING[0] <= t < CROSSING[1]:
                progress = (t - CROSSING[0]) / (CROSSING[1] - CROSSING[0])
                x = int(-OBJECT[0] + progress * (WIDTH + OBJECT[0]))
                y = HEIGHT // 2 - OBJECT[1] // 2
                corner = (min(WIDTH - 1, x + OBJECT[0]), y + OBJECT[1])
                cv2.rectangle(frame, (max(0, x), y), corner, (20, 20, 30), -1)
            video_frame = av.VideoFrame.from_ndarray(frame, format="bgr24")
            video_frame.pts = index
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


async def until(page: Page, expression: str, timeout: float = WAIT, what: str | None = None) -> Any:
    return await eventually(lambda: page.evaluate(expression), timeout, what or repr(expression),
                            interval=0.2)


async def api_json(server: ServerProcess, path: str) -> tuple[int, Any]:
    code, _, body = await asyncio.to_thread(server.get, path)
    return code, (json.loads(body) if code == 200 else body)


def page_errors(page: Page) -> list[str]:
    return [e for e in page.errors if "Failed to load resource: the server responded" not in e]  # type: ignore[attr-defined]


BADGE_ON = ("document.getElementById('motion-badge').dataset.active === 'true'"
            " && !document.getElementById('motion-badge').hidden"
            " && document.getElementById('motion-badge').textContent.trim() === 'Motion'")
BADGE_OFF = ("document.getElementById('motion-badge').dataset.active === 'false'"
             " && !document.getElementById('motion-badge').hidden")
# The newest finished event with a clip, once its thumbnail has loaded: its id.
FINISHED_WITH_THUMBNAIL = """(() => {
  const row = document.querySelector('#events .event.has-clip:not(.ongoing)');
  const img = row && row.querySelector('img.event-thumb');
  return img && img.complete && img.naturalWidth > 0 ? row.dataset.id : null;
})()"""
CLIP = """(() => {
  const v = document.querySelector('#events .event-player video');
  return { readyState: v.readyState, currentTime: v.currentTime, error: v.error && v.error.code,
           startedAt: window.clipStartedAt, hidden: v.closest('.event-player').hidden };
})()"""
# Where the clip's playback began (its currentTime at its first "playing" event).
WATCH_CLIP_START = """(() => {
  const v = document.querySelector('#events .event-player video');
  window.clipStartedAt = null;
  v.addEventListener('playing', () => {
    if (window.clipStartedAt === null) window.clipStartedAt = v.currentTime;
  });
})()"""


async def test_badge_timeline_clip_and_delete(start_server, chromium, tmp_path: Path) -> None:
    video = write_video(tmp_path / "crossing.mp4", moving=True)
    server = start_server("--source", str(video), "--motion", "--motion-record")
    async with open_page(chromium, server.url) as rtc, open_page(chromium, server.url) as mjpeg:
        await rtc.goto(server.url)
        await mjpeg.goto(server.url + "?transport=mjpeg")
        # Motion is on: both show the timeline; the badge is there but says nothing between events.
        await until(rtc, "!document.getElementById('events').hidden")
        await until(mjpeg, "!document.getElementById('events').hidden")
        await until(rtc, "window.camcast.transport === 'webrtc' && window.camcast.state === 'playing'")

        # During the crossing: the badge on both (pushed on the data channel / from the status poll),
        # and an ongoing event in the timeline.
        await asyncio.gather(until(rtc, BADGE_ON, EVENT_WAIT), until(mjpeg, BADGE_ON, EVENT_WAIT))
        status = (await api_json(server, "api/status"))[1]
        assert status["motion"]["enabled"] is True
        await until(rtc, "document.querySelectorAll('#events .event.ongoing').length >= 1")
        # After the quiet period: the badge goes, the event ends with its thumbnail and a clip.
        await asyncio.gather(until(rtc, BADGE_OFF, EVENT_WAIT), until(mjpeg, BADGE_OFF, EVENT_WAIT))
        event_id = await until(rtc, FINISHED_WITH_THUMBNAIL, WAIT, "a finished event's thumbnail")
        await until(mjpeg, FINISHED_WITH_THUMBNAIL, WAIT, "a finished event on the MJPEG page")
        code, event = await api_json(server, f"api/events/{event_id}")
        assert code == 200, event
        assert event["end"] is not None and event["recording"] is not None, event
        meta = await rtc.inner_text(f"#events .event[data-id='{event_id}'] .event-meta")
        assert "peak" in meta and "%" in meta, meta

        # Its recording is finished after the post-roll; then the clip plays from the event's offset.
        name, offset = event["recording"]["name"], float(event["recording"]["offset"])

        async def finished() -> bool:
            code, rows = await api_json(server, "api/recordings")
            return code == 200 and any(row["name"] == name and not row["recording"] for row in rows)
        await eventually(finished, WAIT, f"recording {name} finished")
        await rtc.evaluate(WATCH_CLIP_START)
        await rtc.click(f"#events .event[data-id='{event_id}'] .event-open")
        ready = f"(() => {{ const c = {CLIP}; return c.readyState >= 2 && c.startedAt !== null && c; }})()"
        first = await until(rtc, ready, WAIT, "the clip playing")
        assert first["error"] is None and not first["hidden"], first
        assert abs(first["startedAt"] - offset) < 0.5, (first, offset)
        await until(rtc, f"{CLIP}.currentTime > {first['startedAt'] + 1.0}", WAIT, "the clip playing on")
        assert await rtc.evaluate(f"document.querySelector('#events .event[data-id=\"{event_id}\"]')"
                                  ".classList.contains('playing')")

        # Delete: the first click arms, the second deletes; the row and the API entry go, the clip closes.
        button = f"#events .event[data-id='{event_id}'] .event-delete"
        label = await rtc.get_attribute(button, "aria-label")
        assert label and label.startswith("Delete the motion event at"), label
        await rtc.click(button)
        assert await rtc.inner_text(button) == "Delete?"
        await rtc.click(button)
        await until(rtc, f"!document.querySelector('#events .event[data-id=\"{event_id}\"]')")
        await until(rtc, "document.querySelector('#events .event-player').hidden")
        code, _ = await api_json(server, f"api/events/{event_id}")
        assert code == 404
        listed = (await api_json(server, "api/events"))[1]["events"]
        assert event_id not in [item["id"] for item in listed]
        # The other page drops it at its next full reload; its own list never errs meanwhile.
        assert page_errors(rtc) == [] and page_errors(mjpeg) == []


async def test_timeline_hidden_without_motion(start_server, chromium) -> None:
    server = start_server()
    async with open_page(chromium, server.url) as page:
        await page.goto(server.url)
        await until(page, "window.camcast.state === 'playing'")
        # The status line has answered (without motion on) by now.
        await until(page, "document.getElementById('status').textContent.includes('fps')")
        assert await page.evaluate("document.getElementById('events').hidden")
        assert await page.evaluate("document.getElementById('motion-badge').hidden")
        assert page_errors(page) == []


async def test_wall_marks_the_tile_with_motion(start_server, chromium, tmp_path: Path) -> None:
    moving = write_video(tmp_path / "crossing.mp4", moving=True)
    still = write_video(tmp_path / "still.mp4", moving=False)
    server = start_server("--camera", f"yard={moving}", "--camera", f"hall={still}", "--motion", source=None)
    async with open_page(chromium, server.url) as page:
        await page.goto(server.url)
        await until(page, "document.querySelectorAll('.tile').length === 2")
        tile = "document.querySelector('.tile[data-camera=\"{}\"]')"
        await until(page, f"{tile.format('yard')}.classList.contains('motion')", EVENT_WAIT)
        assert await page.evaluate(f"!{tile.format('yard')}.querySelector('.tile-motion').hidden")
        assert not await page.evaluate(f"{tile.format('hall')}.classList.contains('motion')")
        assert await page.evaluate(f"{tile.format('hall')}.querySelector('.tile-motion').hidden")
        assert "motion on 1" in await page.inner_text("#wall-summary")
        cameras = {camera["name"]: camera for camera in (await api_json(server, "api/cameras"))[1]}
        assert cameras["hall"]["motion"]["active"] is False
        # ... and unmarked once the event is over.
        await until(page, f"!{tile.format('yard')}.classList.contains('motion')", EVENT_WAIT)
        assert await page.evaluate(f"{tile.format('yard')}.querySelector('.tile-motion').hidden")
        assert page_errors(page) == []
