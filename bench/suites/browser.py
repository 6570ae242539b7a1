"""Browser suite: headless Chromium (Debian's, via Playwright) plays camcast's own player page.

For each transport (WebRTC, MJPEG via `?transport=mjpeg`) and repeat: a fresh server; the player is
loaded a few times in fresh browser contexts to time navigation (and, for WebRTC, the offer) to the
first frame on screen; the last page then stays and its own overlay figures are collected: the
player reads the stamp of every frame it shows and keeps `window.camcast.latencySamples` (the
capture-to-display latencies of the last second), polled here once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import psutil
from playwright.async_api import Browser, Page, async_playwright

from bench.machine import BusyMeter, camcast_spec, load_average
from bench.plots import Samples, cdf_plot
from bench.report import Check, Figure, Section, Table
from bench.runner import RunContext, Suite
from bench.serverproc import ServerProcess, WindowMeter
from bench.stats import Spread, percentile

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--allow-loopback-in-peer-connection",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--autoplay-policy=no-user-gesture-required",
]
NAMES = {"webrtc": "WebRTC", "mjpeg": "MJPEG"}
COLORS = {"webrtc": "tab:blue", "mjpeg": "tab:orange"}

# Runs before the player's scripts (Playwright injects it through the DevTools protocol, so the
# page's Content-Security-Policy does not apply): note when the first frame is there to be shown.
# A <video>: its first requestVideoFrameCallback (the frame presented), else the first animation
# frame with a decoded picture; the MJPEG <img>: the first animation frame with a picture.
FIRST_FRAME_WATCH = """
(() => {
  const bench = { first: null, how: null };
  Object.defineProperty(window, "__bench", { value: bench });
  const look = () => {
    if (bench.first !== null) return;
    const video = document.getElementById("video");
    const img = document.getElementById("mjpeg");
    if (video && video.readyState >= 2 && video.videoWidth > 0) {
      bench.first = performance.now(); bench.how = "video";
    } else if (img && !img.hidden && img.complete && img.naturalWidth > 0) {
      bench.first = performance.now(); bench.how = "img";
    } else {
      requestAnimationFrame(look);
    }
  };
  requestAnimationFrame(look);
  document.addEventListener("DOMContentLoaded", () => {
    const video = document.getElementById("video");
    if (video && "requestVideoFrameCallback" in video) {
      video.requestVideoFrameCallback((now) => {
        bench.first = now;
        bench.how = "video-frame";
      });
    }
  });
})();
"""

TIMINGS = """() => ({
  first: window.__bench.first,
  how: window.__bench.how,
  offer: (performance.getEntriesByType("resource").find((e) => e.name.endsWith("/offer")) || {}).startTime,
})"""


SATURATED_OTHER_CORES = 0.3


@dataclass(frozen=True)
class BrowserSettings:
    size: str = "640x480"
    fps: float = 30.0
    transports: tuple[str, ...] = ("webrtc", "mjpeg")
    loads: int = 3  # pages per repeat, each with a fresh server and browser context
    sample_seconds: float = 10.0  # overlay latency collected on every page
    settle: float = 2.0  # seconds after the first frame before sampling
    first_frame_timeout: float = 15.0
    max_other_cores: float = 0.8
    max_machine_cores: float = 1.9
    retries: int = 2
    retry_pause: float = 5.0


FULL = BrowserSettings()
QUICK = BrowserSettings(loads=1, sample_seconds=3.0, settle=1.0, retries=0)


async def _open(browser: Browser, url: str) -> tuple[Any, Page, list[str]]:
    context = await browser.new_context()
    await context.grant_permissions(["camera", "microphone"], origin=url.rstrip("/"))
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    await page.add_init_script(FIRST_FRAME_WATCH)
    return context, page, errors


async def _first_frame(page: Page, url: str, timeout: float) -> dict[str, Any]:
    """Load the player; returns navigation start to first frame (and offer to first frame), ms."""
    await page.goto(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        timings = await page.evaluate(TIMINGS)
        if timings["first"] is not None:
            offer = timings["offer"]
            return {"nav_ms": timings["first"], "how": timings["how"],
                    "offer_ms": timings["first"] - offer if offer is not None else None}
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no frame on screen within {timeout:g} s")


def _browser_pids() -> set[int]:
    """Chromium's processes (children of this process, started by Playwright's driver)."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "chrom" in child.name() or "headless" in child.name():
                pids.add(child.pid)
    return pids


def _cpu_of(pids: set[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


async def _sample(page: Page, server: ServerProcess, seconds: float) -> dict[str, Any]:
    """The player's own figures over `seconds`, with the server's, Chromium's and the machine's CPU."""
    meter, busy = WindowMeter(server), BusyMeter()
    chromium = _browser_pids()
    meter.begin()
    busy.begin()
    chromium_cpu0 = _cpu_of(chromium)
    samples, polls = [], []
    for _ in range(max(1, round(seconds))):
        await asyncio.sleep(1.0)  # the samples cover the last second: each is collected about once
        state = await page.evaluate("() => window.camcast")
        samples += [float(v) for v in state.get("latencySamples") or []]
        polls.append({k: state.get(k) for k in ("transport", "codec", "latencyMs", "fps", "framesDecoded",
                                                "clockOffsetMs", "state")})
    window = meter.end()
    machine = busy.end()
    chromium_cores = (_cpu_of(chromium) - chromium_cpu0) / window.seconds
    return {"latency_ms": samples, "latency_median": percentile(samples, 50), "polls": polls,
            "transport": polls[-1]["transport"], "codec": polls[-1]["codec"],
            "fps_median": percentile([p["fps"] for p in polls], 50),
            "server_cores": window.cores, "chromium_cores": chromium_cores, "machine_cores": machine,
            "other_cores": max(0.0, machine - window.cores - chromium_cores),
            "top_other_processes": busy.top_others({server.pid, *chromium})}


async def _page(ctx: RunContext, s: BrowserSettings, browser: Browser, transport: str, tag: str
                ) -> tuple[dict[str, Any], list[str]]:
    """A fresh server and a fresh browser context: the first frame, then the player's figures."""
    with tempfile.TemporaryDirectory(prefix="camcast-bench-") as tmp, \
            ServerProcess(camcast_spec(s.size, s.fps, tmp), ctx.raw_dir / f"{tag}.log") as server:
        context, page, errors = await _open(browser, server.url("/"))
        try:
            first = await _first_frame(page, server.url(f"/?transport={transport}"), s.first_frame_timeout)
            await asyncio.sleep(s.settle)
            return {**first, **await _sample(page, server, s.sample_seconds)}, errors
        finally:
            await context.close()


async def measure(ctx: RunContext, s: BrowserSettings, browser: Browser, transport: str, rep: int,
                  attempt: int) -> dict[str, Any]:
    """`loads` pages, each with its own server: time to first frame, then the player's figures.

    A session settles on a nearly constant latency: the phase between the server's 30 fps capture
    clock (set when it starts) and Chromium's 60 Hz frame clock stays fixed, so every page gets a
    fresh server, and with it a fresh phase."""
    pages, errors = [], []
    for k in range(s.loads):
        tag = f"browser-{transport}-r{rep}-a{attempt}-p{k}"
        page, page_errors = await _page(ctx, s, browser, transport, tag)
        pages.append(page)
        errors += page_errors
        ctx.log(f"  page {k + 1}: first frame {page['nav_ms']:.0f} ms after navigation start, latency "
                f"median {page['latency_median']:.1f} ms")
    samples = [x for p in pages for x in p["latency_ms"]]
    return {
        "transport": transport, "rep": rep, "attempt": attempt, "pages": pages,
        "loads": [{k: p[k] for k in ("nav_ms", "offer_ms", "how")} for p in pages],
        "latency_ms": samples, "latency_median": percentile(samples, 50),
        "shown_transport": ",".join(sorted({str(p["transport"]) for p in pages})),
        "codec": ",".join(sorted({str(p["codec"]) for p in pages})),
        "fps_median": percentile([p["fps_median"] for p in pages], 50),
        "server_cores": percentile([p["server_cores"] for p in pages], 50),
        "chromium_cores": percentile([p["chromium_cores"] for p in pages], 50),
        "machine_cores": max(p["machine_cores"] for p in pages),
        "other_cores": max(p["other_cores"] for p in pages),
        "top_other_processes": [x for p in pages for x in p["top_other_processes"]],
        "errors": errors,
    }


async def _run_point(ctx: RunContext, s: BrowserSettings, browser: Browser, transport: str,
                     rep: int) -> dict[str, Any]:
    disturbed = []
    for attempt in range(s.retries + 1):
        result = await measure(ctx, s, browser, transport, rep, attempt)
        # Saturated by the server under test itself is no disturbance: others must have a share.
        result["disturbed"] = (result["other_cores"] > s.max_other_cores
                               or (result["machine_cores"] > s.max_machine_cores
                                   and result["other_cores"] > SATURATED_OTHER_CORES))
        if not result["disturbed"] or attempt == s.retries:
            result["disturbed_attempts"] = disturbed
            return result
        ctx.log(f"  disturbed: machine {result['machine_cores']:.2f} cores busy, other processes "
                f"{result['other_cores']:.2f} (load average {load_average()}); again")
        disturbed.append({k: result[k] for k in ("latency_median", "other_cores", "machine_cores",
                                                 "top_other_processes")})
        await asyncio.sleep(s.retry_pause)
    raise AssertionError("unreachable")


async def _run_all(ctx: RunContext, s: BrowserSettings) -> list[dict[str, Any]]:
    runs = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            total = len(s.transports) * ctx.repeats
            for i, (rep, transport) in enumerate(ctx.schedule(s.transports), 1):
                ctx.log(f"browser {i}/{total}: {NAMES[transport]} (repeat {rep + 1})")
                result = await _run_point(ctx, s, browser, transport, rep)
                ctx.log(f"  latency median {result['latency_median']:.1f} ms "
                        f"(n={len(result['latency_ms'])}), fps {result['fps_median']:.1f}, "
                        f"chromium {result['chromium_cores']:.2f} cores, "
                        f"other {result['other_cores']:.2f}")
                runs.append(result)
        finally:
            await browser.close()
    return runs


def run(ctx: RunContext) -> Section:
    s = ctx.settings("browser", FULL, QUICK)
    load_start = load_average()
    runs = asyncio.run(_run_all(ctx, s))
    loads = (load_start, load_average())
    ctx.save_raw("browser.json", {"settings": asdict(s), "repeats": ctx.repeats, "load_average": loads,
                                  "runs": runs})
    return build_section(ctx, s, runs, loads)


def rebuild(ctx: RunContext) -> Section:
    """The section again from raw/browser.json."""
    raw = json.loads((ctx.raw_dir / "browser.json").read_text())
    s = BrowserSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw["settings"].items()})
    return build_section(ctx, s, raw["runs"], tuple(raw["load_average"]))


def _by_transport(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[r["transport"]].append(r)
    return groups


def _ttff(rs: list[dict[str, Any]], key: str) -> list[float]:
    return [load[key] for r in rs for load in r["loads"] if load.get(key) is not None]


def _busy(rs: list[dict[str, Any]]) -> str:
    other = Spread.of([r["other_cores"] for r in rs])
    return f"; other processes used {other.fmt(2)} cores" if other.high >= 0.5 else ""


def _checks(groups: dict[str, list[dict[str, Any]]]) -> list[Check]:
    checks = []
    for transport, rs in groups.items():
        name = NAMES[transport]
        medians = Spread.of([r["latency_median"] for r in rs])
        pooled = [x for r in rs for x in r["latency_ms"]]
        wrong = [r["shown_transport"] for r in rs if r["shown_transport"] != transport]
        pages = [p["latency_median"] for r in rs for p in r.get("pages", [])]
        over = sum(1 for m in pages if m > 50.0)
        page_text = (f"; page medians {min(pages):.1f} to {max(pages):.1f} ms, {over} of {len(pages)} "
                     "pages over 50 ms" if pages else "")
        median = percentile(pooled, 50)
        checks.append(Check(f"{name}: capture-to-display latency (player overlay)", "median <= 50 ms",
                            f"median {median:.1f} ms of all frames (per repeat {medians.fmt(1)} ms"
                            f"{page_text}), "
                            f"p95 {percentile(pooled, 95):.1f} ms (n={len(pooled)})"
                            f"{'; played ' + ', '.join(map(str, wrong)) + ' instead' if wrong else ''}"
                            f"{_busy(rs)}", median <= 50.0 and not wrong))
        nav = _ttff(rs, "nav_ms")
        offer = _ttff(rs, "offer_ms")
        offer_text = (f"; offer to first frame median {percentile(offer, 50):.0f} ms, max {max(offer):.0f} ms"
                      if offer else "")
        checks.append(Check(f"{name}: page load to first frame", "<= 700 ms",
                            f"median {percentile(nav, 50):.0f} ms, p95 {percentile(nav, 95):.0f} ms, max "
                            f"{max(nav):.0f} ms (n={len(nav)}){offer_text}{_busy(rs)}",
                            percentile(nav, 95) <= 700.0))
    return checks


def _table(groups: dict[str, list[dict[str, Any]]]) -> Table:
    rows = []
    for transport, rs in groups.items():
        pooled = [x for r in rs for x in r["latency_ms"]]
        nav, offer = _ttff(rs, "nav_ms"), _ttff(rs, "offer_ms")
        rows.append([
            NAMES[transport], ", ".join(sorted({str(r["codec"]) for r in rs})),
            Spread.of([r["latency_median"] for r in rs]).fmt(1), f"{percentile(pooled, 95):.1f}",
            f"{percentile(pooled, 99):.1f}", str(len(pooled)),
            Spread.of([r["fps_median"] for r in rs]).fmt(1),
            f"{percentile(nav, 50):.0f} / {max(nav):.0f}",
            f"{percentile(offer, 50):.0f} / {max(offer):.0f}" if offer else "-",
            Spread.of([r["server_cores"] for r in rs]).fmt(3),
            Spread.of([r["chromium_cores"] for r in rs]).fmt(2),
            Spread.of([r["other_cores"] for r in rs]).fmt(2),
        ])
    return Table("Chromium playing the bundled player", [
        "transport", "codec", "latency median ms", "latency p95 ms", "latency p99 ms", "samples", "fps",
        "navigation to first frame ms (median / max)", "offer to first frame ms (median / max)",
        "server cores", "Chromium cores", "other processes' cores"], rows,
        "Latency median: per repeat, then median (min-max) over repeats; p95/p99 pool every sample. "
        "Chromium cores: all its processes (decoding, compositing, the player's stamp reading).")


def build_section(ctx: RunContext, s: BrowserSettings, runs: list[dict[str, Any]],
                  loads: tuple[str, str]) -> Section:
    groups = _by_transport(runs)
    section = Section("browser", "Headless Chromium (the bundled player)")
    repeats = max((len(rs) for rs in groups.values()), default=0)
    section.intro = (
        f"Debian's Chromium ({CHROMIUM}, headless, via Playwright) opens the player at `/?transport=webrtc` "
        f"and `/?transport=mjpeg` of camcast ({s.size} @ {s.fps:g} fps test pattern); {repeats} repeats per "
        f"transport, each of {s.loads} pages, every page with a fresh server and browser context: time to "
        f"the first frame, then {s.sample_seconds:g} s of the player's own latency figures.")
    section.checks = _checks(groups)
    section.tables = [_table(groups)]
    samples = [Samples(NAMES[t], [x for r in rs for x in r["latency_ms"]], COLORS.get(t))
               for t, rs in groups.items()]
    cdf_plot(ctx.out_dir / "browser_latency_cdf.png",
             "Capture-to-display latency in Chromium (player overlay)", "latency (ms)", samples,
             vlines=[(50.0, "50 ms")], xmax=120.0)
    section.figures = [Figure("browser_latency_cdf.png", "Latency of every frame the player showed while "
                              "sampled (all repeats pooled), as its overlay measures it.")]
    errors = sum(len(r["errors"]) for r in runs)
    reruns = sum(len(r["disturbed_attempts"]) for r in runs)
    section.notes = [
        "Latency is the player's: for every frame it shows it reads the stamp (a canvas draw of the top "
        "band) and subtracts it from the display time (WebRTC: requestVideoFrameCallback's "
        "expectedDisplayTime; MJPEG: the animation frame that saw the new picture), corrected by the "
        "clock offset it measures over the data channel (0 here: same machine). `latencySamples` holds the "
        "last second of them and is polled once a second.",
        "A page settles on a nearly constant latency: the phase between the server's 30 fps capture clock "
        "and Chromium's 60 Hz frame clock stays fixed for a session, so the CDF has steps; every page has "
        "its own fresh server, and with it a fresh phase (page medians in the targets table).",
        "First frame: an init script (outside the page's CSP) notes the first requestVideoFrameCallback of "
        "the `<video>` (WebRTC) or the first animation frame with a picture in the MJPEG `<img>`; "
        "navigation to first frame uses the page's own performance clock (0 = navigation start), offer to "
        "first frame starts at the `POST /offer` resource entry (the browser has gathered its ICE "
        "candidates by then).",
        f"Load average at the start of this suite {loads[0]}, at its end {loads[1]}. Repeats run again for "
        f"disturbance: {reruns}. Console or page errors: {errors}.",
    ]
    return section


SUITE = Suite("browser", "Browser", run)
