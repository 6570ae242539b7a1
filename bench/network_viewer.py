"""One viewer of the emulated network (aiortc, or Chromium through Playwright) writing a JSON line a second.

Run inside the viewer's namespace of tests/support/netlab.py as
`python -m bench.network_viewer aiortc|chromium URL OUT [--via whep|offer] [--page whep|player|offer]`
(PYTHONPATH holding the repository and its tests/ folder). Each second it appends to OUT what the
viewer decoded: frames, keyframes, size, capture-to-display latency from the frame stamp, and for
Chromium its getStats() (freezes, losses, NACKs, PLIs, jitter buffer); the aiortc viewer also logs
the RTCP it sends. Chromium's pages: "whep" (a bare WHEP page), "player" (the bundled player) or
"offer" (aiortc's example signalling, POST /offer with JSON, for a server that has no WHEP). `Tail`
reads the lines back while they are written. Used by scripts/netprobe.py and the network bench suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STAMP_JS = REPO / "client" / "stamp.js"
CAPTURE = "640x480"

# The page scripts (a bare WHEP page, the hook on the player's peer connections, getStats() and the
# stamp) are the tests' Chromium viewer's: one copy.
sys.path.insert(0, str(REPO / "tests"))
from support.netchromium import PC_HOOK_JS, STATS_JS, WHEP_JS  # noqa: E402

VIDEO_CLOCK = 90.0  # RTP ticks per ms: receiver-report jitter is in these units


def jsonl_writer(path: str) -> Callable[[dict[str, Any]], None]:
    out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the life of the process

    def write(record: dict[str, Any]) -> None:
        out.write(json.dumps({"t": time.time(), **record}) + "\n")

    return write


def rtcp_records(packet: Any, media_ssrc: int | None) -> Iterator[dict[str, Any]]:
    """One record per piece of feedback in an aiortc RTCP packet object."""
    from aiortc.rtp import (
        RTCP_PSFB_APP,
        RTCP_PSFB_FIR,
        RTCP_PSFB_PLI,
        RTCP_RTPFB_NACK,
        RtcpPsfbPacket,
        RtcpRrPacket,
        RtcpRtpfbPacket,
        RtcpSrPacket,
        unpack_remb_fci,
    )

    if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
        for report in packet.reports:
            if media_ssrc is None or report.ssrc == media_ssrc:
                yield {"kind": "rr", "fraction_lost": report.fraction_lost / 256,
                       "packets_lost": report.packets_lost, "highest_sequence": report.highest_sequence,
                       "jitter_ms": report.jitter / VIDEO_CLOCK}
                break
    elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
        yield {"kind": "nack", "count": len(packet.lost)}
    elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
        yield {"kind": "pli"}
    elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_FIR:
        yield {"kind": "fir"}
    elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
        with contextlib.suppress(ValueError):
            yield {"kind": "remb", "bps": unpack_remb_fci(packet.fci)[0]}

# -- the viewers -----------------------------------------------------------------------------------
async def _until_terminated() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def aiortc_viewer(url: str, out: str, via: str, capture: tuple[int, int]) -> None:
    import aiohttp
    import cv2
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    import support.webrtc_viewer
    from support.netlab import VIEWER_ADDRESS, ice_host_address
    from support.webrtc_viewer import Viewer

    # The stamp's 16 rows are capture pixels: read a smaller rendition's picture scaled back up.
    read_stamp = support.webrtc_viewer.read_stamp
    support.webrtc_viewer.read_stamp = lambda gray: read_stamp(  # type: ignore[assignment]
        gray if gray.shape[1] == capture[0] else cv2.resize(gray, capture))

    write = jsonl_writer(out)
    sent: list[dict[str, Any]] = []  # the RTCP this viewer sends (what the server should receive)
    original = RTCRtpReceiver._send_rtcp

    async def send_rtcp(self: RTCRtpReceiver, packet: Any) -> None:
        sent.extend(rtcp_records(packet, None))
        await original(self, packet)

    RTCRtpReceiver._send_rtcp = send_rtcp  # type: ignore[method-assign]
    with ice_host_address(VIEWER_ADDRESS):
        async with aiohttp.ClientSession() as http:
            viewer = Viewer(url, control=via == "offer")
            await viewer.connect(http, via=via)
            sampler = asyncio.get_running_loop().create_task(_sample_aiortc(viewer, sent, write))
            try:
                await _until_terminated()
            finally:
                sampler.cancel()
                if viewer.session_url is not None:
                    with contextlib.suppress(Exception):
                        await viewer.delete(http)
                await viewer.close()


async def _sample_aiortc(viewer: Any, sent: list[dict[str, Any]], write: Callable[..., None]) -> None:
    seen = 0
    last_arrival: float | None = None
    remb = loss = jitter = None
    while True:
        await asyncio.sleep(1.0)
        frames = viewer.frames[seen:]
        seen += len(frames)
        if frames and last_arrival is None:
            write({"event": "playing"})
        # The longest wait for a frame this second (a freeze shows as a gap near or over 1000 ms).
        arrivals = ([last_arrival] if last_arrival is not None else []) + [f.arrived for f in frames]
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        if last_arrival is not None:
            gaps.append(time.monotonic() - arrivals[-1])
        last_arrival = arrivals[-1] if arrivals else None
        news, sent[:] = sent[:], []
        for record in news:
            if record["kind"] == "remb":
                remb = record["bps"]
            elif record["kind"] == "rr":
                loss, jitter = record["fraction_lost"], record["jitter_ms"]
        # A picture too small or blurred to carry its stamp reads as nonsense: keep plausible ones.
        latencies = [f.latency_ms for f in frames if f.latency_ms is not None and 0 < f.latency_ms < 60_000]
        last = viewer.frames[-1] if viewer.frames else None
        write({
            "fps": len(frames),
            "frames": len(viewer.frames),
            "keyframes": sum(f.key for f in frames),
            "latency_ms": statistics.median(latencies) if latencies else None,
            "gap_ms": max(gaps) * 1000 if gaps else None,
            "size": f"{last.width}x{last.height}" if last else None,
            "remb_kbps": remb / 1000 if remb is not None else None,
            "loss": loss,
            "jitter_ms": jitter,
            "nacks": sum(r["count"] for r in news if r["kind"] == "nack"),
            "plis": sum(1 for r in news if r["kind"] == "pli"),
        })



# aiortc's example signalling (POST /offer, JSON both ways), for servers without WHEP.
OFFER_JS = WHEP_JS.replace(
    """const answer = await fetch("/whep", {method: "POST", headers: {"Content-Type": "application/sdp"},
                                       body: pc.localDescription.sdp});
  if (answer.status !== 201) throw new Error(`WHEP answered ${answer.status}: ${await answer.text()}`);
  window.__whep = answer.headers.get("Location");
  await pc.setRemoteDescription({type: "answer", sdp: await answer.text()});""",
    """const answer = await fetch("/offer", {method: "POST", headers: {"Content-Type": "application/json"},
                                        body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer"})});
  if (answer.status !== 200) throw new Error(`/offer answered ${answer.status}: ${await answer.text()}`);
  await pc.setRemoteDescription(await answer.json());""")




async def chromium_viewer(url: str, out: str, page_kind: str, capture: tuple[int, int]) -> None:
    from playwright.async_api import async_playwright

    from support.browser import launch_chromium, open_page

    write = jsonl_writer(out)
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            async with open_page(browser, url) as page:
                if page_kind == "player":
                    await page.add_init_script(PC_HOOK_JS)
                    await page.goto(url)
                elif page_kind == "offer":
                    # Such a server serves no page and no stamp reader: any URL of its origin will do
                    # (the answer may be a 404) and the reader comes from this checkout.
                    await page.route("**/client/stamp.js", lambda route: route.fulfill(
                        path=str(STAMP_JS), content_type="text/javascript"))
                    await page.goto(url + "healthz")
                    await page.evaluate(OFFER_JS)
                else:
                    await page.goto(url + "healthz")  # any page of the server's origin: WHEP is same-origin
                    await page.evaluate(WHEP_JS)
                sampler = asyncio.get_running_loop().create_task(_sample_chromium(page, write, capture))
                try:
                    await _until_terminated()
                finally:
                    sampler.cancel()
                    if page_kind == "whep":
                        with contextlib.suppress(Exception):
                            await page.evaluate("() => fetch(window.__whep, {method: 'DELETE'})")
                    write({"errors": page.errors})  # type: ignore[attr-defined]
        finally:
            await browser.close()


async def _sample_chromium(page: Any, write: Callable[..., None], capture: tuple[int, int]) -> None:
    previous: dict[str, Any] = {}
    playing = False
    while True:
        await asyncio.sleep(1.0)
        stats = await page.evaluate(STATS_JS, list(capture)) or {}
        if stats.get("framesDecoded") and not playing:
            playing = True
            write({"event": "playing"})

        def delta(key: str, stats: dict[str, Any] = stats, previous: dict[str, Any] = previous) -> Any:
            return None if stats.get(key) is None else stats[key] - (previous.get(key) or 0)

        width, height = stats.get("frameWidth"), stats.get("frameHeight")
        emitted = delta("jitterBufferEmittedCount")
        record = {
            "fps": delta("framesDecoded"),
            "frames": stats.get("framesDecoded"),
            "keyframes": delta("keyFramesDecoded"),
            "latency_ms": stats.get("latency_ms"),
            "size": f"{width}x{height}" if width else None,
            "freezes": stats.get("freezeCount"),
            "freeze_s": stats.get("totalFreezesDuration"),
            "lost": delta("packetsLost"),
            "nacks": delta("nackCount"),
            "plis": delta("pliCount"),
            "jitter_ms": stats["jitter"] * 1000 if stats.get("jitter") is not None else None,
            "jb_delay_ms": (delta("jitterBufferDelay") or 0) / emitted * 1000 if emitted else None,
            "rtt_ms": stats["rtt"] * 1000 if stats.get("rtt") is not None else None,
            "kbps": (delta("bytesReceived") or 0) * 8 / 1000,
            "state": stats.get("state"),
        }
        previous = stats
        write(record)



class Tail:
    """New JSON lines of a file that another process appends to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.records: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path) as f:
            f.seek(self.offset)
            text = f.read()
        complete = text[: text.rfind("\n") + 1]
        self.offset += len(complete.encode())
        new = [json.loads(line) for line in complete.splitlines() if line.strip()]
        self.records.extend(new)
        return new



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.network_viewer")
    parser.add_argument("kind", choices=["aiortc", "chromium"])
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--via", default="whep", help="the aiortc viewer's signalling: whep or offer")
    parser.add_argument("--page", default="whep", help="Chromium's page: whep, player or offer")
    parser.add_argument("--capture", default=CAPTURE, help="the capture size (the stamp's scale)")
    a = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))  # the viewers come from the tests' support package
    width, _, height = a.capture.partition("x")
    capture = (int(width), int(height))
    if a.kind == "aiortc":
        asyncio.run(aiortc_viewer(a.url, a.out, a.via, capture))
    else:
        asyncio.run(chromium_viewer(a.url, a.out, a.page, capture))


if __name__ == "__main__":
    main()
