"""Renditions and per-viewer adaptation: the decisions from RTCP, and switching between real encoders.

The decisions are driven here by the feedback a receiver would send (REMB, receiver reports, PLIs)
on a controlled clock; the switching runs the camera's real shared encoders and checks what a
receiver would see: a keyframe of the new size, timestamps that keep increasing, nothing else
changing. The same on emulated networks, with real receivers, is in test_network.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import pytest

from camcast.app import create_app
from camcast.appkeys import CAMERAS
from camcast.config import load_config
from camcast.encoding.renditions import default_ladder
from camcast.hub import Hub
from camcast.webrtc.adapt import Adaptation, AdaptSettings
from camcast.webrtc.compat import Feedback
from camcast.webrtc.track import Level, PacketTrack
from support.waiting import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTrack:
    """What the adaptation reads and drives: levels, the level, a pending target, bytes sent."""

    def __init__(self, bitrates: list[int], clock: Clock) -> None:
        self.levels = [Level(f"r{i}", Hub(f"r{i}"), lambda: True, b) for i, b in enumerate(bitrates)]
        self.level = 0
        self.target: int | None = None
        self.bytes_sent = 0
        self.first_packet_at: float | None = clock.now
        self.moves: list[int] = []

    def switch_to(self, level: int) -> None:
        self.moves.append(level)
        self.level = level  # as if the target's keyframe came at once


def _run(adaptation: Adaptation, track: FakeTrack, clock: Clock, seconds: float, bps: float,
         feedback: Feedback | None = None, every: float = 0.5) -> None:
    """Send at `bps` for `seconds`, with `feedback` from the receiver every `every` s."""
    steps = round(seconds / every)
    for _ in range(steps):
        clock.now += every
        track.bytes_sent += int(bps * every / 8)
        adaptation.on_feedback(feedback or Feedback(fraction_lost=0.0))


def _adaptation(bitrates: list[int] = (2_000_000, 400_000, 100_000)) -> tuple[Adaptation, FakeTrack, Clock]:
    clock = Clock()
    track = FakeTrack(list(bitrates), clock)
    return Adaptation(track, AdaptSettings(), clock=clock), track, clock  # type: ignore[arg-type]


def test_a_good_link_stays_on_the_top_rendition() -> None:
    adaptation, track, clock = _adaptation()
    _run(adaptation, track, clock, 30, 1_300_000, Feedback(remb=1_800_000, fraction_lost=0.0))
    assert track.moves == [] and adaptation.switches_down == 0


def test_a_falling_estimate_steps_down_as_far_as_it_says_once_confirmed() -> None:
    adaptation, track, clock = _adaptation()
    _run(adaptation, track, clock, 4.0, 1_300_000, Feedback(remb=1_800_000))
    _run(adaptation, track, clock, 0.5, 1_300_000, Feedback(remb=300_000))
    assert track.moves == []  # one low estimate may be a receiver's hiccup
    _run(adaptation, track, clock, 1.0, 1_300_000, Feedback(remb=300_000))
    # 300 kbit/s carries neither high nor medium (400 kbit/s): straight to low.
    assert track.moves == [2] and "estimate" in adaptation.reason


def test_an_estimate_that_climbs_below_the_rate_is_no_reason_to_step_down() -> None:
    adaptation, track, clock = _adaptation()
    for remb in range(300_000, 1_300_000, 50_000):  # a receiver's estimate ramping up after a start
        _run(adaptation, track, clock, 0.5, 1_300_000, Feedback(remb=remb))
    assert track.moves == []


@pytest.mark.parametrize("feedback, words", [
    (Feedback(fraction_lost=0.2), "lost"),
    (Feedback(keyframe_request=True), "picture-loss"),
])
def test_loss_or_a_run_of_plis_steps_down_one_rendition(feedback: Feedback, words: str) -> None:
    adaptation, track, clock = _adaptation()
    _run(adaptation, track, clock, 1.0, 1_300_000)
    _run(adaptation, track, clock, 2.0, 1_300_000, feedback)
    assert track.moves[0] == 1 and words in adaptation.reason


def test_a_silent_receiver_steps_down() -> None:
    adaptation, track, clock = _adaptation()
    _run(adaptation, track, clock, 2.0, 1_300_000)
    clock.now += 3.0  # no RTCP at all: the link is gone or full
    adaptation.evaluate()
    assert track.moves == [1] and "no reports" in adaptation.reason


def test_up_is_cautious_and_a_failed_step_up_doubles_the_wait() -> None:
    adaptation, track, clock = _adaptation()
    _run(adaptation, track, clock, 1.0, 1_300_000)
    _run(adaptation, track, clock, 1.0, 1_300_000, Feedback(fraction_lost=0.3))
    assert track.moves == [1]
    _run(adaptation, track, clock, 5.0, 350_000)  # quiet, but not for the whole hold
    assert track.moves == [1]
    _run(adaptation, track, clock, 1.5, 350_000)
    assert track.moves == [1, 0]  # tried the next one up
    _run(adaptation, track, clock, 1.0, 1_300_000, Feedback(fraction_lost=0.3))  # and it failed
    assert track.moves == [1, 0, 1] and adaptation.settings.hold * 2 == adaptation.status()["hold"]
    _run(adaptation, track, clock, 8.0, 350_000)
    assert track.moves == [1, 0, 1]  # the doubled hold is not over
    _run(adaptation, track, clock, 5.0, 350_000)
    assert track.moves == [1, 0, 1, 0]
    _run(adaptation, track, clock, 10.0, 1_300_000)  # this time it holds
    assert track.moves == [1, 0, 1, 0] and adaptation.status()["hold"] == adaptation.settings.hold


def test_a_viewer_asking_for_keyframes_over_and_over_reaches_the_encoder_once_in_a_while() -> None:
    adaptation, track, clock = _adaptation()
    track.levels[0].packets.subscribe()  # someone else watches this rendition too
    track.levels[0].packets.subscribe()
    passed = []
    for _ in range(20):  # one PLI every 0.5 s for 10 s
        clock.now += 0.5
        passed.append(adaptation.keyframe_request())
    # The first one, then none for pli_interval (10 s): the others wait for the scheduled keyframe.
    assert passed[0] and sum(passed) == 1


def test_a_rendition_s_only_viewer_gets_every_keyframe_it_asks_for() -> None:
    adaptation, track, _clock = _adaptation()
    track.levels[0].packets.subscribe()  # itself
    assert all(adaptation.keyframe_request() for _ in range(5))


def test_the_default_ladder() -> None:
    names = [(r.name, r.scale, r.bitrate, r.fps) for r in default_ladder(640, 480, 30, 2_000_000)]
    assert names == [("high", 1.0, 2_000_000, 30), ("medium", 0.5, 400_000, 30), ("low", 0.25, 100_000, 15)]
    assert [r.name for r in default_ladder(320, 240, 30, 1_000_000)] == ["high", "medium"]
    assert [r.name for r in default_ladder(160, 120, 30, 1_000_000)] == ["high"]
    assert [r.name for r in default_ladder(1280, 720, 30, 2_000_000, adapt=False)] == ["high"]


# -- switching between the real encoders of a running camera ------------------------------------

async def test_a_track_moves_between_renditions_at_their_keyframes(tmp_path: Path) -> None:
    app = create_app(load_config(["--source", "testpattern", "--recordings", str(tmp_path)], env={}))
    camera = app[CAMERAS].first
    async with camera.running():
        levels = [Level(o.rendition.name, o.packets, o.encoder.force_keyframe, o.rendition.bitrate)
                  for o in camera.renditions["h264"]]
        track = PacketTrack(levels)
        decoder = av.CodecContext.create("h264", "r")
        seen: list[tuple[int, bool, int, tuple[int, int]]] = []
        try:
            for plan in (0, 1, 2, 0):
                track.switch_to(plan)
                arrived = 0
                while arrived < 20:  # until 20 pictures of the new rendition were sent
                    packet = await asyncio.wait_for(track.recv(), 10)
                    frames = decoder.decode(packet)
                    size = (frames[0].width, frames[0].height) if frames else (0, 0)
                    seen.append((track.level, packet.is_keyframe, packet.pts, size))
                    arrived += track.level == plan
                    assert len(seen) < 400, "the switch never happened"
        finally:
            track.stop()
        pts = [p for _, _, p, _ in seen]
        assert pts == sorted(pts) and len(set(pts)) == len(pts), "timestamps go forward, one picture each"
        for level, expected in ((0, (640, 480)), (1, (320, 240)), (2, (160, 120))):
            sizes = {size for lv, _, _, size in seen if lv == level and size != (0, 0)}
            assert sizes == {expected}, (level, sizes)
        # Each move begins with a keyframe of the new rendition; the decoder never failed on one.
        changes = [i for i in range(1, len(seen)) if seen[i][0] != seen[i - 1][0]]
        assert len(changes) == 3 and all(seen[i][1] for i in changes)
        assert track.switches == 3
        # Renditions nobody takes stop again (the lazy encoders linger 2 s).
        await eventually(lambda: not any(e.running for e in camera.all_video_encoders), 10,
                         "every rendition's encoder to stop")
