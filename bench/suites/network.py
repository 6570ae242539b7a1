"""Network suite: per-viewer adaptation on an emulated link (network namespaces, tbf, iptables loss).

Two parts, in one run (bench.network_bed does the runs, bench.network_report the section):
- stepping: a Chromium viewer (WHEP page) behind a link stepping 4 Mbit/s -> 600 kbit/s -> 4 Mbit/s,
  for each server design: camcast with adaptation (a ladder of shared encodes), camcast with
  `--adapt off` (one encode for all) and aiortc's per-peer-encoder example design;
- isolation: a clean aiortc viewer on the server's own loopback, alone, then beside a viewer on a
  600 kbit/s link, then beside one losing 5 % of its media packets: what the clean one is sent.
The content is a generated textured, noisy, moving video (bench.network_content), so that bitrate
matters as it does with a camera. Needs root (CI runs as root); without it the section says so.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from bench.machine import load_average
from bench.network_bed import Config, Content, Isolation, Phase, run_isolation, run_stepping
from bench.network_report import build_section
from bench.report import Section
from bench.runner import RunContext, Suite

CONFIGS = {
    "adapt": Config("adapt", "camcast, adaptation (renditions)", "camcast"),
    "single": Config("single", "camcast --adapt off (one encode)", "camcast", ("--adapt", "off")),
    "relay": Config("relay", "aiortc per-peer encoder (example design)", "relay"),
}


@dataclass(frozen=True)
class NetworkSettings:
    phases: tuple[str, ...] = ("4000:30", "600:30", "4000:30")  # kbit/s:seconds
    configs: tuple[str, ...] = ("adapt", "single", "relay")
    isolation: tuple[str, ...] = ("alone", "shaped", "lossy")
    isolation_kbps: int = 600
    isolation_loss: float = 0.05
    settle: float = 8.0  # s before the isolation window: the troubled viewer finds its rendition
    window: float = 40.0  # s of the isolation window (a keyframe more or less: 5 %)
    content: str = "textured"  # textured | testpattern
    content_seconds: float = 10.0  # the generated file's loop
    size: str = "640x480"
    fps: float = 30.0
    interval: float = 0.5  # s between samples of the link and the session
    repeats: int = 1  # each run takes minutes: one unless asked


FULL = NetworkSettings()
# Quick: the adaptive design only, 10 s phases, and the lossy neighbour against none (about 80 s).
QUICK = NetworkSettings(phases=("4000:10", "600:10", "4000:10"), configs=("adapt",),
                        isolation=("alone", "lossy"), settle=3.0, window=6.0, content_seconds=4.0)


def parse_phases(texts: tuple[str, ...]) -> list[Phase]:
    out = []
    for text in texts:
        kbps, _, seconds = str(text).partition(":")
        out.append(Phase(int(kbps), float(seconds)))
    return out


def _content(s: NetworkSettings) -> Content:
    if s.content == "testpattern":
        return Content(s.size, s.fps)
    from bench.network_content import textured_video

    width, _, height = s.size.partition("x")
    return Content(s.size, s.fps, textured_video((int(width), int(height)), s.fps, s.content_seconds))


def _cannot_run() -> str | None:
    from bench.network_bed import support_path

    support_path()
    from support.netlab import NetLabError, check_requirements

    try:
        check_requirements()
    except NetLabError as exc:
        return str(exc)
    return None


def run(ctx: RunContext) -> Section:
    s = ctx.settings("network", FULL, QUICK)
    reason = _cannot_run()
    if reason is not None:
        section = Section("network", "Emulated networks (per-viewer adaptation)")
        section.notes = [f"Not run: {reason}."]
        return section
    loads = [load_average()]
    uptime = os.getloadavg()
    started = time.monotonic()
    content = _content(s)
    phases = parse_phases(s.phases)
    stepping: list[dict[str, Any]] = []
    isolation: list[dict[str, Any]] = []
    for rep in range(s.repeats):
        for name in s.configs:
            config = CONFIGS[name]
            ctx.log(f"network: {config.label}, link {' -> '.join(s.phases)} (repeat {rep + 1})")
            result = run_stepping(config, phases, content, ctx.raw_dir / f"network-{name}-r{rep}",
                                  interval=s.interval)
            result |= {"label": config.label, "rep": rep}
            stepping.append(result)
            fps = [r["fps"] for r in result["viewer"] if r["t"] >= 0]
            ctx.log(f"  first frame after {result['first_frame_s']} s, median fps "
                    f"{sorted(fps)[len(fps) // 2] if fps else '-'}")
        for kind in s.isolation:
            case = Isolation(kind, s.isolation_kbps, s.isolation_loss)
            beside = "alone" if kind == "alone" else f"beside a {kind} one"
            ctx.log(f"network: isolation, clean viewer {beside}")
            result = run_isolation(case, content, ctx.raw_dir / f"network-isolation-{kind}-r{rep}",
                                   s.settle, s.window, s.interval)
            result["rep"] = rep
            isolation.append(result)
            ctx.log(f"  clean viewer: {result['clean_keyframes_per_s']:.2f} keyframes/s, "
                    f"{result['clean_kbps']:.0f} kbit/s, {result['clean_fps']:.1f} fps")
    loads.append(load_average())
    raw = {"settings": asdict(s), "content": str(content.file or "testpattern"), "load_average": loads,
           "loadavg_start": uptime, "seconds": time.monotonic() - started,
           "stepping": stepping, "isolation": isolation}
    ctx.save_raw("network.json", raw)
    return build_section(ctx, raw)


def rebuild(ctx: RunContext) -> Section:
    """The section again from raw/network.json (new tables or plots without measuring again)."""
    return build_section(ctx, json.loads((ctx.raw_dir / "network.json").read_text()))


SUITE = Suite("network", "Emulated networks", run)
