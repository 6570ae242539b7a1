"""Chromium as a viewer inside the emulated network's viewer namespace, reporting once a second.

Run as a script inside the namespace (`lab.viewer.popen([python, this file, URL, OUT, "whep"])`):
Chromium starts there (so all its traffic takes the shaped link), opens a WHEP session (or the
player) against the server, and appends one JSON object a second to OUT with what getStats() says:
frames decoded that second, total frames, decoded size, freezes (Chromium's totalFreezesDuration),
packets lost, NACKs, PLIs, and the capture-to-display latency read from the frame stamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

WHEP_JS = """async () => {
  const pc = new RTCPeerConnection();
  window.__pc = pc;
  pc.addTransceiver("video", {direction: "recvonly"});
  const video = document.createElement("video");
  Object.assign(video, {muted: true, autoplay: true, playsInline: true});
  document.body.appendChild(video);
  pc.ontrack = (e) => { video.srcObject = e.streams[0] || new MediaStream([e.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === "complete") return done();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && done());
    setTimeout(done, 5000);
  });
  const answer = await fetch("/whep", {method: "POST", headers: {"Content-Type": "application/sdp"},
                                       body: pc.localDescription.sdp});
  if (answer.status !== 201) throw new Error(`WHEP answered ${answer.status}: ${await answer.text()}`);
  window.__whep = answer.headers.get("Location");
  await pc.setRemoteDescription({type: "answer", sdp: await answer.text()});
}"""

PC_HOOK_JS = """(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
})();"""

STATS_JS = """async ([captureWidth, captureHeight]) => {
  const pc = window.__pc || (window.__pcs || []).at(-1);
  if (!pc) return null;
  const out = {state: pc.connectionState};
  const keep = ["framesDecoded", "framesReceived", "framesDropped", "keyFramesDecoded", "freezeCount",
                "totalFreezesDuration", "pauseCount", "totalPausesDuration", "packetsLost",
                "packetsReceived", "nackCount", "pliCount", "firCount", "jitter", "jitterBufferDelay",
                "jitterBufferEmittedCount", "bytesReceived", "frameWidth", "frameHeight", "framesPerSecond"];
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") for (const k of keep) out[k] = s[k];
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
      out.rtt = s.currentRoundTripTime;
      out.availableIncomingBitrate = s.availableIncomingBitrate;
    }
  });
  const video = document.querySelector("video");
  if (video && video.videoWidth) {
    window.__stamp = window.__stamp || await import("/client/stamp.js");
    window.__reader = window.__reader || new window.__stamp.StampReader();
    // The stamp's 16 rows are capture pixels: bring a smaller rendition back to the capture size.
    const canvas = window.__canvas = window.__canvas || document.createElement("canvas");
    Object.assign(canvas, {width: captureWidth, height: captureHeight});
    canvas.getContext("2d").drawImage(video, 0, 0, captureWidth, captureHeight);
    const {stamp} = window.__reader.read(canvas, captureWidth, captureHeight);
    out.latency_ms = window.__stamp.latencyFromStamp(stamp, Date.now());
  }
  return out;
}"""


async def watch(url: str, out: Path, page_kind: str, capture: tuple[int, int]) -> None:
    from playwright.async_api import async_playwright

    from support.browser import launch_chromium, open_page

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            async with open_page(browser, url) as page:
                if page_kind == "player":
                    await page.add_init_script(PC_HOOK_JS)
                    await page.goto(url)
                else:
                    await page.goto(url + "healthz")  # any page of the server's origin: WHEP is same-origin
                    await page.evaluate(WHEP_JS)
                previous: dict[str, Any] = {}
                with out.open("a") as file:
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), 1.0)
                        stats = await page.evaluate(STATS_JS, list(capture)) or {}
                        record = {
                            "t": time.monotonic(),
                            "fps": (stats.get("framesDecoded") or 0) - (previous.get("framesDecoded") or 0),
                            "frames": stats.get("framesDecoded") or 0,
                            "width": stats.get("frameWidth"),
                            "height": stats.get("frameHeight"),
                            "freeze_s": stats.get("totalFreezesDuration") or 0.0,
                            "lost": stats.get("packetsLost"),
                            "nacks": stats.get("nackCount"),
                            "plis": stats.get("pliCount"),
                            "keyframes": stats.get("keyFramesDecoded"),
                            "latency_ms": stats.get("latency_ms"),
                            "state": stats.get("state"),
                        }
                        previous = stats
                        file.write(json.dumps(record) + "\n")
                        file.flush()
                if page_kind == "whep":
                    with contextlib.suppress(Exception):
                        await page.evaluate("() => fetch(window.__whep, {method: 'DELETE'})")
        finally:
            await browser.close()


def read(out: Path) -> list[dict[str, Any]]:
    """The records written so far (a line being written is left for the next read)."""
    if not out.exists():
        return []
    records = []
    for line in out.read_text().splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    url, out_path, kind = sys.argv[1], Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "whep"
    width, height = (int(v) for v in (sys.argv[4] if len(sys.argv) > 4 else "640x480").split("x"))
    asyncio.run(watch(url, out_path, kind, (width, height)))
