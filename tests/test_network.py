"""Per-viewer adaptation on emulated networks: real server, Chromium and aiortc viewers, shaped links.

The server runs in one network namespace (127.0.0.2) and a viewer in another (127.0.0.3), joined by
a veth whose server side is shaped with tbf or thinned with random loss (support.netlab). Chromium
runs inside the viewer's namespace (support.netchromium); an aiortc viewer inside the server's own
namespace watches over its loopback: an unshaped link next to the troubled one. aiortc's own jitter
buffer waits for lost packets that never come, so the shaped link's viewer is Chromium whenever
its picture is judged. Needs root, as CI has.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import netchromium
from support.netlab import NetLab, launch_server, netlab
from support.netviewer import Watch, host_address_per_thread, start_viewer, wait_until
from support.server import ServerProcess

TOP_BPS = 1_500_000  # the top rendition's bitrate in these runs (medium: 300 kbit/s, low: 75 kbit/s)


@pytest.fixture
def lab() -> Iterator[NetLab]:
    with netlab() as bed, host_address_per_thread():
        yield bed


def _server(lab: NetLab, tmp_path: Path, *args: str) -> ServerProcess:
    return launch_server(lab, tmp_path / "server", ["--bitrate", str(TOP_BPS), *args])


class Browser:
    """Chromium in the viewer's namespace on a WHEP session, and the server's view of that session."""

    def __init__(self, lab: NetLab, server: ServerProcess, out: Path) -> None:
        self.lab, self.server, self.out = lab, server, out
        self.proc = lab.viewer.popen([sys.executable, netchromium.__file__, server.url, str(out), "whep"])

    def records(self) -> list[dict[str, Any]]:
        return netchromium.read(self.out)

    def session(self) -> dict[str, Any]:
        sessions = self.lab.server.call(self.server.status)["webrtc"]["sessions"]
        return sessions[0] if sessions else {}

    def fps(self, seconds: int) -> float:
        records = self.records()[-seconds:]
        return sum(r["fps"] for r in records) / max(1, len(records))

    def freeze(self) -> float:
        records = self.records()
        return records[-1]["freeze_s"] if records else 0.0

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(Exception):
            self.proc.wait(15)


def _playing(browser: Browser) -> bool:
    if browser.proc.poll() is not None:
        raise AssertionError(f"the Chromium viewer exited with {browser.proc.returncode}")
    records = browser.records()
    return bool(records) and records[-1]["frames"] > 0


def _stop(*watches: Watch) -> None:
    for watch in watches:
        watch.stop.set()


def test_a_viewer_on_a_link_below_the_top_rendition_plays_a_lower_one(lab: NetLab, tmp_path: Path) -> None:
    server = _server(lab, tmp_path)
    lab.server.shape(TOP_BPS // 2)  # half the top rendition: today's single encode showed nothing
    browser = Browser(lab, server, tmp_path / "chromium.jsonl")
    try:
        wait_until(lambda: _playing(browser), 40, "Chromium's first frame")
        wait_until(lambda: browser.session().get("rendition") not in (None, "high"), 20,
                   "the viewer to step down")
        settled = len(browser.records())
        wait_until(lambda: len(browser.records()) >= settled + 10, 20, "ten seconds of watching")
        records = browser.records()[-8:]
        fps = sum(r["fps"] for r in records) / len(records)
        worst = min(r["fps"] for r in records)
        session = browser.session()
        print(f"\nrendition {session.get('rendition')} ({session.get('reason')}), last 8 s: {fps:.1f} fps "
              f"(worst second {worst}), {records[-1]['width']}x{records[-1]['height']}, "
              f"freezes {browser.freeze():.1f} s")
        assert session.get("rendition") in ("medium", "low")
        assert fps >= 20, f"frames must decode continuously on the lower rendition: {fps:.1f} fps"
        assert worst >= 5, "no second without pictures"
        assert (records[-1]["width"], records[-1]["height"]) in ((320, 240), (160, 120))
    finally:
        browser.stop()
    assert server.terminate()[0] == 0


def test_a_link_that_drops_steps_down_fast_and_back_up_after_it_recovers(lab: NetLab, tmp_path: Path) -> None:
    server = _server(lab, tmp_path)
    lab.server.shape(8_000_000)
    browser = Browser(lab, server, tmp_path / "chromium.jsonl")
    try:
        wait_until(lambda: _playing(browser), 40, "Chromium's first frame")
        wait_until(lambda: browser.session().get("rendition") == "high", 20, "the top rendition")
        lab.server.shape(250_000)  # the link drops
        down_after = wait_until(lambda: browser.session().get("rendition") in ("medium", "low")
                                or browser.session().get("switching_to") in ("medium", "low"), 15,
                                "a step down")
        wait_until(lambda: browser.session().get("rendition") in ("medium", "low"), 10, "the lower rendition")
        low = len(browser.records())
        wait_until(lambda: len(browser.records()) >= low + 6, 15, "six seconds on the slow link")
        fps_low = browser.fps(5)
        lab.server.shape(8_000_000)  # and recovers
        up_after = wait_until(lambda: browser.session().get("rendition") == "high", 60,
                              "the top rendition again")
        print(f"\nstepped down {down_after:.1f} s after the drop ({fps_low:.1f} fps on the slow link), "
              f"back up {up_after:.1f} s after recovery; reason: {browser.session().get('reason')}")
        assert down_after < 5
        assert fps_low >= 10, "the slow link still shows pictures"
    finally:
        browser.stop()
    assert server.terminate()[0] == 0


def test_a_struggling_viewer_does_not_touch_one_on_a_good_link(lab: NetLab, tmp_path: Path) -> None:
    server = _server(lab, tmp_path)
    good = start_viewer(lab.server, server, lab.server)  # over the server namespace's own loopback
    try:
        wait_until(lambda: len(good.sessions) >= 4, 20, "the good viewer playing", good)
        lab.server.shape(TOP_BPS // 3)
        lab.server.loss(0.05, media_only=True)  # and 5 % of the media lost on top
        poor = start_viewer(lab.viewer, server, lab.server)
        try:
            start = time.monotonic()
            wait_until(lambda: time.monotonic() - start > 20, 25, "twenty seconds of both", poor)
            end = time.monotonic()
            keyframes = good.keyframes(start, end)
            fps = good.fps(start, end)
            print(f"\ngood viewer: {fps:.1f} fps, {keyframes} keyframes in {end - start:.0f} s, "
                  f"renditions {good.renditions()}; poor viewer: renditions {poor.renditions()}, "
                  f"{poor.fps(end - 8, end):.1f} fps at the end")
            assert good.renditions() == ["high"], "the good link keeps the top rendition"
            assert fps >= 25
            # Keyframes every 2 s: 10 in 20 s; a viewer forcing them on everyone would add many.
            assert keyframes <= (end - start) / 2 + 2
            assert poor.renditions()[-1] in ("medium", "low")
        finally:
            _stop(poor)
    finally:
        _stop(good)
    assert server.terminate()[0] == 0
