"""What every suite shares: the run context, suite registry, repeat scheduling, and settings overrides."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from bench.report import Section
from bench.serverproc import REPO_ROOT

# Suites in report order; each is the module bench.suites.<name> with a SUITE attribute.
SUITE_NAMES: tuple[str, ...] = ("mjpeg", "webrtc", "recording", "browser", "soak", "cameras", "network",
                               "renditions", "passthrough")
SUITE_NAMES += ("whip",)  # needs root and Janus (tests/support/janus.py)
SUITE_NAMES += ("audio",)  # the sound: one shared Opus encode vs aiortc's per-peer Opus
SUITE_NAMES += ("avsync",)  # A/V offset in Chromium and in recordings
SUITE_NAMES += ("motion",)  # the motion detector: accuracy on labelled clips, and its CPU

C = TypeVar("C")
P = TypeVar("P")


@dataclass
class RunContext:
    quick: bool
    repeats: int
    out_dir: Path
    overrides: Mapping[str, str] = field(default_factory=dict)  # "suite.field" -> text
    verbose: bool = True

    @property
    def raw_dir(self) -> Path:
        path = self.out_dir / "raw"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log(self, message: str) -> None:
        if self.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def settings(self, suite: str, full: C, quick: C) -> C:
        """The suite's settings: full or quick, then any `--set suite.field=value` overrides."""
        return apply_overrides(quick if self.quick else full, suite, self.overrides)

    def schedule(self, points: Sequence[P]) -> Iterator[tuple[int, P]]:
        """Every point `repeats` times, interleaved (round-robin) so slow drift of a shared machine
        spreads over all points instead of biasing one."""
        for rep in range(self.repeats):
            for point in points:
                yield rep, point

    def save_raw(self, name: str, data: Any) -> Path:
        path = self.raw_dir / name
        path.write_text(json.dumps(data, indent=1, default=str))
        return path


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    run: Callable[[RunContext], Section]


def load_suite(name: str) -> Suite:
    suite = importlib.import_module(f"bench.suites.{name}").SUITE
    assert isinstance(suite, Suite) and suite.name == name
    return suite


def _convert(text: str, current: Any) -> Any:
    if isinstance(current, bool):
        return text.lower() in ("1", "true", "yes", "on")
    if isinstance(current, tuple):
        return tuple(_number(t.strip()) for t in text.split(",") if t.strip())
    return type(current)(text)


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def apply_overrides(settings: C, suite: str, overrides: Mapping[str, str]) -> C:
    names = {f.name for f in dataclasses.fields(settings)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, text in overrides.items():
        prefix, _, name = key.partition(".")
        if prefix != suite:
            continue
        if name not in names:
            raise SystemExit(f"bench: --set {key}: {suite} has no setting {name!r} "
                             f"(settings: {', '.join(sorted(names))})")
        changes[name] = _convert(text, getattr(settings, name))
    return dataclasses.replace(settings, **changes)  # type: ignore[type-var]


def machine_summary() -> str:
    """One paragraph on where and when the figures were taken (they depend on it)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, text=True,
                                capture_output=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{v:.2f}" for v in psutil.getloadavg())
    return (f"{dt.datetime.now().isoformat(timespec='seconds')}, commit {commit}; "
            f"{psutil.cpu_count()} logical CPUs ({cpu}), "
            f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM; "
            f"Python {platform.python_version()} on {platform.system()} {platform.release()}; "
            f"load average at start {load}.")
