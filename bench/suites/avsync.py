"""A/V sync suite: is the sound in step with the picture, in Chromium and in a recording?

Per repeat, a fresh camcast (test pattern with its tone and flash, stamped) and a fresh browser
context: Chromium plays the bundled player over WebRTC and the bench clicks its sound button. The
page's probe (bench.avsync_probe) notes when each flash frame is displayed (requestVideoFrameCallback's
expectedDisplayTime) and when each beep's first sample is heard (an AudioWorklet on the received
sound, mapped to the same performance.now() clock through getOutputTimestamp()). Per whole second:
the sound's capture-to-ear latency (the beep starts at the second), the picture's capture-to-display
latency (from the flash frame's stamp) and their difference, the A/V offset. Meanwhile the REST API
records the camera; the file's offset is read back with PyAV (bench.avsync_file). The player's own
overlay figure (Chromium's estimatedPlayoutTimestamp) is sampled beside it.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Browser, async_playwright

from bench import avsync_probe
from bench.avsync_file import file_offsets_ms
from bench.machine import BusyMeter, camcast_spec, load_average
from bench.plots import Samples, cdf_plot
from bench.report import Check, Figure, Section, Table
from bench.runner import RunContext, Suite
from bench.serverproc import ServerProcess
from bench.stats import Spread, percentile
from bench.suites.browser import CHROMIUM, CHROMIUM_ARGS

BROWSER_TARGET_MS = 20.0
RECORDING_TARGET_MS = 10.0


@dataclass(frozen=True)
class AvSyncSettings:
    size: str = "640x480"
    fps: float = 30.0
    seconds: float = 20.0  # measured per repeat (one beep and one flash a second)
    settle: float = 3.0  # after the sound is on: the jitter buffers find their level
    first_frame_timeout: float = 20.0


FULL = AvSyncSettings()
QUICK = AvSyncSettings(seconds=4.0, settle=1.5)


async def _post(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.post(url) as response:
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"POST {url}: {response.status} {body}")
        return dict(body)


async def _wait_for(page: Any, expression: str, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await page.evaluate(expression):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no {what} within {timeout:g} s")
        await asyncio.sleep(0.1)


async def measure(ctx: RunContext, s: AvSyncSettings, browser: Browser, rep: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="camcast-bench-") as tmp, \
            ServerProcess(camcast_spec(s.size, s.fps, tmp, "--stamp", "--audio", "tone"),
                          ctx.raw_dir / f"avsync-r{rep}.log") as server:
        async with aiohttp.ClientSession() as http:
            return await _measure_page(s, browser, server, http, Path(tmp), rep)


async def _measure_page(s: AvSyncSettings, browser: Browser, server: ServerProcess,
                        http: aiohttp.ClientSession, folder: Path, rep: int) -> dict[str, Any]:
    context = await browser.new_context(bypass_csp=True)  # the probe's worklet is a blob: module
    try:
        await context.grant_permissions(["camera", "microphone"], origin=server.url("/").rstrip("/"))
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        await avsync_probe.prepare(page)
        await page.goto(server.url("/?transport=webrtc"))
        await _wait_for(page, "() => (window.camcast && window.camcast.framesDecoded) > 10",
                        s.first_frame_timeout, "frames")
        await page.locator("#sound").click()
        audio = await avsync_probe.start_audio(page)
        await asyncio.sleep(s.settle)
        await avsync_probe.collect(page)  # drop what came before the settle
        busy = BusyMeter()
        busy.begin()
        recording = await _post(http, server.url("/api/record/start"))
        flashes: list[dict[str, Any]] = []
        onsets: list[float] = []
        overlay: list[float] = []
        player_latency: list[float] = []
        time_origin = 0.0
        for _ in range(max(1, round(s.seconds))):
            await asyncio.sleep(1.0)
            got = await avsync_probe.collect(page)
            flashes += got["flashes"]
            onsets += got["onsets"]
            errors += got["errors"]
            time_origin = got["timeOrigin"]
            if got["overlayAvMs"] is not None:
                overlay.append(float(got["overlayAvMs"]))
            if got["playerLatencyMs"] is not None:
                player_latency.append(float(got["playerLatencyMs"]))
        await _post(http, server.url("/api/record/stop"))
        machine = busy.end()
        path = folder / recording["name"]
        file_offsets = await asyncio.to_thread(file_offsets_ms, path)
    finally:
        await context.close()
    seconds = avsync_probe.pair_seconds(flashes, onsets, time_origin)
    return {"rep": rep, "audio": audio, "seconds": seconds, "flashes": len(flashes), "onsets": len(onsets),
            "overlay_av_ms": overlay, "player_latency_ms": player_latency, "file_offsets_ms": file_offsets,
            "machine_cores": machine, "errors": errors}


async def _run_all(ctx: RunContext, s: AvSyncSettings) -> list[dict[str, Any]]:
    runs = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for rep in range(ctx.repeats):
                ctx.log(f"avsync {rep + 1}/{ctx.repeats}")
                run = await measure(ctx, s, browser, rep)
                offsets = [x["offset_ms"] for x in run["seconds"]]
                ctx.log(f"  {len(offsets)} seconds paired ({run['flashes']} flashes, {run['onsets']} beeps): "
                        f"A/V median {percentile(offsets, 50):+.1f} ms; recording "
                        f"{percentile(run['file_offsets_ms'], 50):+.1f} ms; overlay "
                        f"{percentile(run['overlay_av_ms'], 50):+.1f} ms")
                runs.append(run)
        finally:
            await browser.close()
    return runs


def run(ctx: RunContext) -> Section:
    s = ctx.settings("avsync", FULL, QUICK)
    loads = (load_average(), "")
    runs = asyncio.run(_run_all(ctx, s))
    loads = (loads[0], load_average())
    ctx.save_raw("avsync.json", {"settings": asdict(s), "repeats": ctx.repeats, "load_average": loads,
                                 "runs": runs})
    return build_section(ctx, s, runs, loads)


def rebuild(ctx: RunContext) -> Section:
    """The section again from raw/avsync.json."""
    raw = json.loads((ctx.raw_dir / "avsync.json").read_text())
    return build_section(ctx, AvSyncSettings(**raw["settings"]), raw["runs"], tuple(raw["load_average"]))


def _per_repeat(runs: list[dict[str, Any]], values: Any) -> Spread:
    return Spread.of([percentile(values(r), 50) for r in runs])


def build_section(ctx: RunContext, s: AvSyncSettings, runs: list[dict[str, Any]],
                  loads: tuple[str, str]) -> Section:
    def browser_abs(r: dict[str, Any]) -> list[float]:
        return [abs(x["offset_ms"]) for x in r["seconds"]]

    def file_abs(r: dict[str, Any]) -> list[float]:
        return [abs(x) for x in r["file_offsets_ms"]]

    offsets = [x["offset_ms"] for r in runs for x in r["seconds"]]
    file_offsets = [x for r in runs for x in r["file_offsets_ms"]]
    browser_median = _per_repeat(runs, browser_abs)
    file_median = _per_repeat(runs, file_abs)
    section = Section("avsync", "A/V sync: Chromium and recordings")
    section.intro = (
        f"camcast's test pattern ({s.size} @ {s.fps:g} fps, stamped, the tone: 1 kHz for 100 ms from every "
        f"whole second, the flash in that second's first frame); {len(runs)} repeats, each a fresh server "
        f"and browser context, {s.seconds:g} s measured after {s.settle:g} s with the sound on. Chromium "
        f"({CHROMIUM}, headless) plays the bundled player over WebRTC; the REST API records the same "
        "seconds.")
    section.checks = [
        Check("A/V offset in Chromium (beep heard vs flash displayed)",
              f"median |offset| <= {BROWSER_TARGET_MS:g} ms",
              f"median |offset| {browser_median.fmt(1)} ms per repeat; signed median "
              f"{percentile(offsets, 50):+.1f} ms, p5-p95 {percentile(offsets, 5):+.1f} to "
              f"{percentile(offsets, 95):+.1f} ms (n={len(offsets)} seconds)",
              browser_median.median <= BROWSER_TARGET_MS if browser_median.n else None),
        Check("A/V offset in the recording (PyAV)", f"median |offset| <= {RECORDING_TARGET_MS:g} ms",
              f"median |offset| {file_median.fmt(1)} ms per repeat; max |offset| "
              f"{max((abs(x) for x in file_offsets), default=float('nan')):.1f} ms (n={len(file_offsets)})",
              file_median.median <= RECORDING_TARGET_MS if file_median.n else None),
    ]
    rows = []
    for r in runs:
        secs = r["seconds"]
        rows.append([
            str(r["rep"] + 1), str(len(secs)),
            f"{percentile([x['audio_ms'] for x in secs], 50):.1f}",
            f"{percentile([x['video_ms'] for x in secs], 50):.1f}",
            f"{percentile([x['offset_ms'] for x in secs], 50):+.1f}",
            f"{percentile(browser_abs(r), 50):.1f}",
            f"{percentile(r['overlay_av_ms'], 50):+.1f}",
            f"{percentile(r['player_latency_ms'], 50):.1f}",
            f"{percentile(r['file_offsets_ms'], 50):+.1f} (n={len(r['file_offsets_ms'])})",
            f"{r['machine_cores']:.2f}",
        ])
    all_audio = [x["audio_ms"] for r in runs for x in r["seconds"]]
    all_video = [x["video_ms"] for r in runs for x in r["seconds"]]
    rows.append(["all", str(len(offsets)), f"{percentile(all_audio, 50):.1f}",
                 f"{percentile(all_video, 50):.1f}",
                 f"{percentile(offsets, 50):+.1f}", browser_median.fmt(1),
                 f"{percentile([x for r in runs for x in r['overlay_av_ms']], 50):+.1f}",
                 f"{percentile([x for r in runs for x in r['player_latency_ms']], 50):.1f}",
                 f"{percentile(file_offsets, 50):+.1f}", "-"])
    section.tables = [Table("Sound and picture, side by side", [
        "repeat", "seconds paired", "capture-to-ear ms (sound)", "capture-to-display ms (flash frame)",
        "A/V offset ms (+ sound late)", "median abs offset ms", "player overlay A/V ms",
        "player overlay latency ms", "recording A/V ms", "machine busy cores"], rows,
        "Medians per repeat; the last row pools every second (its abs column: median over repeats). "
        "The overlay's figure is Chromium's estimatedPlayoutTimestamp difference, sampled once a second.")]
    cdf_plot(ctx.out_dir / "avsync_latency_cdf.png", "Capture to ear (sound) and to display (picture)",
             "latency (ms)", [Samples("sound: capture to ear", all_audio, "tab:green"),
                              Samples("picture: capture to display", all_video, "tab:blue")])
    cdf_plot(ctx.out_dir / "avsync_offset_cdf.png", "|A/V offset| per second",
             "|offset| (ms)", [Samples("Chromium", [abs(x) for x in offsets], "tab:blue"),
                               Samples("recording", [abs(x) for x in file_offsets], "tab:orange")],
             vlines=[(RECORDING_TARGET_MS, f"{RECORDING_TARGET_MS:g} ms"),
                     (BROWSER_TARGET_MS, f"{BROWSER_TARGET_MS:g} ms")])
    section.figures = [
        Figure("avsync_latency_cdf.png", "Per second: the beep's capture-to-ear latency and the flash "
               "frame's capture-to-display latency in Chromium (all repeats)."),
        Figure("avsync_offset_cdf.png", "Per second: |A/V offset| in Chromium and in the recording."),
    ]
    audio = runs[0]["audio"] if runs else {}
    errors = sum(len(r["errors"]) for r in runs)
    section.notes = [
        "Ear: an AudioWorklet on the received stream (a MediaStreamAudioSourceNode of the player's "
        "`<video>` stream) finds each beep's first sample above 0.05 of full scale after 0.5 s quiet; "
        "getOutputTimestamp() maps its context time to performance.now() at the output. Headless "
        "Chromium has no sound card: its output is a fake device (AudioContext sample rate "
        f"{audio.get('sampleRate')}, "
        f"baseLatency {audio.get('baseLatency')}, outputLatency {audio.get('outputLatency')} s). A real "
        "device adds its own output latency to the sound only.",
        "Eye: requestVideoFrameCallback on the player's `<video>`; a frame whose bottom-right block is "
        "white is the flash, its expectedDisplayTime the display time, its stamp (read by the player's "
        "StampReader) the capture time. Same machine: epoch = performance.timeOrigin + performance.now().",
        "Recording: the file written during the measured seconds, beeps and flash frames found by "
        "decoding it (bench/avsync_file.py); the flash frame's capture lateness after the second is taken "
        "off, as in the test.",
        f"Load average at the start {loads[0]}, at the end {loads[1]}. Page errors: {errors}.",
    ]
    return section


SUITE = Suite("avsync", "A/V sync", run)
