"""Headless Chromium shows the MJPEG stream in a plain <img>, live."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import numpy as np
from playwright.async_api import Browser, Page

from camcast.stamp import STAMP_ROWS, read_stamp
from support.browser import open_page
from support.server import ServerProcess
from support.waiting import eventually

PAGE = "<!doctype html><title>mjpeg</title><img id=v src=/video.mjpg>"

# Draw the <img>'s current picture on a canvas: a checksum of all of it, and the stamp band's pixels.
GRAB = """([rows]) => {
  const img = document.getElementById('v');
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const shown = Date.now();
  const all = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0;
  for (let i = 0; i < all.length; i += 97) sum = (sum * 31 + all[i]) >>> 0;
  const band = Array.from(ctx.getImageData(0, 0, canvas.width, rows).data);
  return {sum, band, width: canvas.width, shown};
}"""


async def _grab(page: Page) -> tuple[int, int, float]:
    """(checksum of the shown picture, capture time read from its stamp, its age in ms when shown)."""
    shot = await page.evaluate(GRAB, [STAMP_ROWS])
    rgba = np.array(shot["band"], np.uint8).reshape(STAMP_ROWS, shot["width"], 4)
    stamp = read_stamp(rgba[:, :, :3])
    return shot["sum"], stamp, shot["shown"] - stamp / 1000


def _mjpeg_viewers(server: ServerProcess) -> int:
    with urllib.request.urlopen(server.url + "api/status", timeout=5) as response:
        return json.load(response)["viewers"]["mjpeg"]


async def test_chromium_shows_the_live_mjpeg_stream(server: ServerProcess, chromium: Browser) -> None:
    page_url = server.url + "mjpeg-test.html"
    async with open_page(chromium, server.url) as page:
        # Serve the test page from the server's origin (the stream is then same-origin for the canvas).
        await page.route(page_url, lambda route: route.fulfill(body=PAGE, content_type="text/html"))
        await page.goto(page_url)
        await page.wait_for_function("document.getElementById('v').naturalWidth > 0", timeout=15_000)
        size = await page.evaluate("[document.getElementById('v').naturalWidth, "
                                   "document.getElementById('v').naturalHeight]")
        assert size == [640, 480]

        samples = [await _grab(page)]

        async def grab_new() -> int:
            sample = await _grab(page)
            if sample[0] != samples[-1][0]:
                samples.append(sample)
            return len(samples)

        await eventually(grab_new, 10, "the picture in the <img> to change three times",
                         until=lambda count: count >= 4, interval=0.1)
        stamps = [stamp for _, stamp, _ in samples]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), stamps
        # What the browser shows is live: captured well under a second before it was on screen
        # (Date.now() has millisecond resolution; same clock as the server's).
        ages_ms = [age for _, _, age in samples]
        assert min(ages_ms) > -2, ages_ms
        assert min(ages_ms) < 1000, f"the shown pictures were {ages_ms} ms old"
        assert await asyncio.to_thread(_mjpeg_viewers, server) == 1
        assert not page.errors, page.errors  # type: ignore[attr-defined]

    # Closing the page ends its stream on the server.
    await eventually(lambda: asyncio.to_thread(_mjpeg_viewers, server), 10, "no MJPEG viewer left",
                     until=lambda viewers: viewers == 0)
