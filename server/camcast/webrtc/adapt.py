"""Per-viewer adaptation: which rendition a viewer's link carries, from what its receiver reports.

The receiver's RTCP says how the link is doing: REMB (its bandwidth estimate), receiver reports
(the fraction of packets lost), NACKs and PLIs. A viewer steps down at once when its link fails
(heavy loss, an estimate below what it is being sent, a run of picture-loss requests), and steps
up one rendition at a time, cautiously: only after a quiet hold that doubles each time a step up
fails, so a link at the edge of a rendition does not flap between two.

Keyframe requests are kept per viewer too: the first PLI in a while (10 s) is passed to the encoder
of the viewer's rendition, later ones wait for its scheduled keyframe (a lossy viewer must not force
keyframes on everyone watching the same rendition), unless the viewer is that rendition's only one;
and a run of them moves the viewer down, where it may be alone.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from camcast.webrtc.compat import Feedback
from camcast.webrtc.track import PacketTrack

log = logging.getLogger("camcast.webrtc")


@dataclass(frozen=True)
class AdaptSettings:
    loss_down: float = 0.10  # a receiver report losing this share of packets: the link is failing
    loss_quiet: float = 0.02  # at most this share lost for a step up
    remb_margin: float = 0.85  # an estimate below this share of the rate being sent: over the link
    # An estimate this far above what is sent: the link has room (a receiver's estimate climbs to
    # about 1.5x what it gets when nothing queues, and stays near the link's rate when it does).
    headroom: float = 1.45
    rtt_margin: float = 0.15  # s of round trip above the link's own: a queue is building
    confirm: float = 0.8  # s an estimate must stay below what is sent before it counts
    loss_window: float = 1.0  # s of receiver reports the loss is measured over
    probe_settle: float = 0.5  # s after a step up took effect before its reports count against it
    startup_grace: float = 3.0  # s after the first packet before an estimate alone steps down
    settle: float = 1.5  # s after a switch before the next step down (its effect must show first)
    hold: float = 6.0  # s quiet at a lower rendition before a step up
    max_hold: float = 24.0
    # s after a step up in which trouble means the step failed; meanwhile the estimate, which
    # climbs slowly behind a rate it has not seen yet, is not held against it.
    probe_window: float = 8.0
    # s between PLIs passed on for one viewer of a shared rendition: a forced IDR costs every viewer
    # of it bytes, so a lossy viewer waits for the scheduled keyframe (at most a keyframe interval).
    pli_interval: float = 10.0
    pli_burst: int = 3  # this many PLIs within pli_window: the link is failing
    pli_window: float = 8.0
    rate_window: float = 2.0  # s over which the sent bitrate is measured
    silence: float = 2.5  # s without any RTCP from a viewer being sent to: its link is gone or full


class Adaptation:
    def __init__(self, track: PacketTrack, settings: AdaptSettings | None = None,
                 on_switch: Callable[[str, str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, viewer: str = "viewer") -> None:
        self.track = track
        self.viewer = viewer  # names it in the log
        self.share: Callable[[], float] = lambda: 1.0  # of the connection's estimate that is this stream's
        self.last_sent_bps = 0.0
        self.settings = settings or AdaptSettings()
        self._on_switch = on_switch  # (from rendition, to rendition, why)
        self._clock = clock
        self.enabled = len(track.levels) > 1
        self.remb: int | None = None
        self._remb_at = -1e9
        self._feedback_at: float | None = None
        self._rembs: deque[tuple[float, int]] = deque()  # the last few seconds of estimates
        self._reports: deque[tuple[float, int, int]] = deque()  # (time, cumulative lost, highest seq)
        self._below_since: float | None = None  # since when the estimate is below what is sent
        self.loss = 0.0  # the last receiver report's fraction lost
        self.rtt: float | None = None  # s, from the last receiver report
        self._rtt_floor: float | None = None  # the link's own round trip: the least seen, slowly forgotten
        self._rtt_floor_at = 0.0
        self.nacks = 0
        self.plis = 0
        self.plis_passed = 0
        self._pli_times: deque[float] = deque()
        self._last_pli_passed = -1e9
        self._rate_samples: deque[tuple[float, int]] = deque()
        self._last_switch = -1e9
        self._moving = False  # a switch asked for and not yet done (the target's keyframe is awaited)
        self._arrived = -1e9  # when the last switch took effect
        self._probe_started: float | None = None  # a step up being tried
        self._hold = self.settings.hold
        self.switches_down = 0
        self.switches_up = 0
        self.reason = "start"

    # -- inputs ----------------------------------------------------------------------------------
    def on_feedback(self, feedback: Feedback) -> None:
        now = self._clock()
        self._feedback_at = now
        if feedback.remb is not None:
            # REMB estimates the whole connection: a session carrying several cameras (the wall)
            # gives each the share of it that its own stream takes.
            remb = round(feedback.remb * self.share())
            self.remb, self._remb_at = remb, now
            self._rembs.append((now, remb))
            while self._rembs and now - self._rembs[0][0] > 4.0:
                self._rembs.popleft()
        if feedback.fraction_lost is not None:
            self.loss = self._windowed_loss(now, feedback)
        if feedback.rtt is not None:
            self._note_rtt(now, feedback.rtt)
        self.nacks += feedback.nacked
        if feedback.keyframe_request:
            self._pli_times.append(now)
        self.evaluate(now)

    def keyframe_request(self) -> bool:
        """A PLI/FIR came: True when it should reach the encoder now (else the viewer waits for
        the rendition's scheduled keyframe)."""
        now = self._clock()
        self.plis += 1
        alone = self.track.levels[self.track.level].packets.subscriber_count <= 1
        if alone or now - self._last_pli_passed >= self.settings.pli_interval:
            self._last_pli_passed = now
            self.plis_passed += 1
            return True
        return False

    def _windowed_loss(self, now: float, feedback: Feedback) -> float:
        """The share of packets lost over the last second or so, from the reports' cumulative counts.
        (A browser sends a report with every NACK: one report's own fraction covers milliseconds.)"""
        if feedback.packets_lost is None or feedback.highest_sequence is None:
            return feedback.fraction_lost or 0.0
        reports = self._reports
        reports.append((now, feedback.packets_lost, feedback.highest_sequence))
        while len(reports) > 2 and now - reports[1][0] >= self.settings.loss_window:
            reports.popleft()
        _, lost0, seq0 = reports[0]
        _, lost1, seq1 = reports[-1]
        expected = seq1 - seq0
        if expected <= 0:
            return self.loss if len(reports) > 1 else (feedback.fraction_lost or 0.0)
        return max(0.0, min(1.0, (lost1 - lost0) / expected))

    def _note_rtt(self, now: float, rtt: float) -> None:
        self.rtt = rtt
        floor = self._rtt_floor
        if floor is not None:
            floor += 0.002 * (now - self._rtt_floor_at)  # a route may change: forget the old floor slowly
        if floor is None or rtt < floor:
            floor = rtt
        self._rtt_floor, self._rtt_floor_at = floor, now

    @property
    def queueing(self) -> bool:
        """The round trip is well above the link's own: packets wait in a queue on the way."""
        return self.rtt is not None and self._rtt_floor is not None \
            and self.rtt > self._rtt_floor + self.settings.rtt_margin

    # -- the decision ----------------------------------------------------------------------------
    def sent_bps(self, now: float | None = None) -> float:
        """What this viewer was sent, bits/s, over the last rate_window seconds."""
        now = self._clock() if now is None else now
        samples = self._rate_samples
        samples.append((now, self.track.bytes_sent))
        while len(samples) > 2 and now - samples[1][0] >= self.settings.rate_window:
            samples.popleft()
        (t0, b0), (t1, b1) = samples[0], samples[-1]
        self.last_sent_bps = (b1 - b0) * 8 / (t1 - t0) if t1 - t0 >= 0.5 else 0.0
        return self.last_sent_bps

    @property
    def current(self) -> int:
        """The rendition this viewer is on, or being moved to."""
        target = self.track.target
        return self.track.level if target is None else target

    def evaluate(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        sent = self.sent_bps(now)
        if not self.enabled or self.track.first_packet_at is None:
            return
        s = self.settings
        while self._pli_times and now - self._pli_times[0] > s.pli_window:
            self._pli_times.popleft()
        if self._moving and self.track.target is None:
            self._moving, self._arrived = False, now
        why = self._trouble(now, sent)
        levels = self.track.levels
        level = self.current
        if why is not None:
            probing = self._probe_started is not None and now - self._probe_started <= s.probe_window
            wait = s.probe_settle if probing else s.settle
            if level < len(levels) - 1 and now - self._last_switch >= wait:
                if self._probe_started is not None and now - self._probe_started <= s.probe_window:
                    self._hold = min(s.max_hold, self._hold * 2)  # the step up failed: wait longer
                else:
                    self._hold = s.hold
                self._probe_started = None
                self._switch(now, self._down_target(level, sent), why)
            return
        if self._probe_started is not None and now - self._probe_started > s.probe_window:
            self._probe_started = None  # the step up held
            self._hold = s.hold
        if level > 0 and self.track.target is None and now - self._last_switch >= self._hold \
                and self.loss <= s.loss_quiet and not self.queueing and self._room(now, sent):
            self._probe_started = now
            self._switch(now, level - 1, "quiet link with room, trying the next rendition up")

    def _room(self, now: float, sent: float) -> bool:
        """Whether the link seems to have room for the next rendition up. A receiver's estimate
        that reaches most of that rendition's bitrate says so; one at its ceiling (about 1.5x what
        it gets: it cannot see further) says maybe, so that try waits twice the hold. Without
        estimates (a receiver that sends no REMB), or after the longest hold, a quiet link is
        reason enough to try."""
        stale = self.remb is None or now - self._remb_at > 3.0
        if stale or now - self._last_switch >= self.settings.max_hold:
            return True
        assert self.remb is not None
        levels = self.track.levels
        if self.remb >= 0.8 * levels[max(0, self.current - 1)].bitrate:
            return True
        s = self.settings
        return self.remb >= s.headroom * sent and now - self._last_switch >= 2 * s.hold

    def _trouble(self, now: float, sent: float) -> str | None:
        """Why the link is failing now, or None."""
        s = self.settings
        # Reports cover the second or so before they were sent: until the new rendition has
        # flowed that long, its loss and PLIs still describe the old one.
        probing = self._probe_started is not None and now - self._probe_started <= s.probe_window
        # A step up is judged quickly: its reports count after probe_settle, and the viewer goes
        # back before the queue it builds costs more than a moment of picture.
        fresh_reports = not self._moving and now - self._arrived >= (s.probe_settle if probing else s.settle)
        if fresh_reports and self.loss >= s.loss_down:
            return f"{self.loss:.0%} of packets lost"
        if fresh_reports and sum(1 for t in self._pli_times if t >= self._arrived) >= s.pli_burst:
            return f"{len(self._pli_times)} picture-loss requests in {s.pli_window:g} s"
        if probing and fresh_reports and self.queueing:
            # Only against a step up: a queue left by an earlier rate takes a while to drain.
            assert self.rtt is not None and self._rtt_floor is not None
            return f"round trip {self.rtt * 1000:.0f} ms, {self._rtt_floor * 1000:.0f} ms without a queue"
        first = self.track.first_packet_at or now
        silent_since = self._feedback_at if self._feedback_at is not None else first
        if now - silent_since > s.silence and now - self._last_switch >= s.silence:
            return f"no reports from the viewer for {now - silent_since:.1f} s"
        fresh = now - self._remb_at < 3.0
        # What was sent must be the current rendition's alone, and a step up's rate new to the
        # estimate is given the probe window to be seen.
        measured = not self._moving and now - self._arrived >= s.rate_window + 0.5
        # An estimate below the rate is a signal when it falls (the receiver saw the link
        # overused), not while it climbs towards a rate it has just begun to get.
        falling = bool(self._rembs) and self.remb is not None \
            and self.remb <= 0.9 * max(r for _, r in self._rembs)
        below = fresh and self.remb is not None and sent > 0 and now - first >= s.startup_grace \
            and measured and falling and self.remb < s.remb_margin * sent
        if not below:
            self._below_since = None
        elif self._below_since is None:
            self._below_since = now
        elif now - self._below_since >= s.confirm:  # one low estimate may be a receiver's hiccup
            assert self.remb is not None
            return f"estimate {self.remb / 1000:.0f} kbit/s below the {sent / 1000:.0f} kbit/s sent"
        return None

    def _down_target(self, level: int, sent: float) -> int:
        """One rendition down, or further when the estimate says the link carries less."""
        levels = self.track.levels
        target = level + 1
        if self.remb is not None and self._clock() - self._remb_at < 3.0:
            while target < len(levels) - 1 and levels[target].bitrate > 0.9 * self.remb:
                target += 1
        return target

    def _switch(self, now: float, level: int, why: str) -> None:
        levels = self.track.levels
        before = levels[self.current].name
        if level > self.current:
            self.switches_down += 1
        else:
            self.switches_up += 1
        self._last_switch = now
        self._moving = True
        self.reason = why
        self.track.switch_to(level)
        after = levels[level].name
        log.info("%s moves %s → %s: %s", self.viewer, before, after, why,
                 extra={"event": "rendition_switch", "from": before, "to": after, "viewer": self.viewer})
        if self._on_switch is not None:
            self._on_switch(before, after, why)

    def status(self) -> dict[str, object]:
        levels = self.track.levels
        target = self.track.target
        return {
            "rendition": levels[self.track.level].name,
            "switching_to": levels[target].name if target is not None else None,
            "adaptive": self.enabled,
            "estimate_bps": self.remb,
            "sent_bps": round(self.sent_bps()),
            "loss": round(self.loss, 3),
            "rtt_ms": round(self.rtt * 1000, 1) if self.rtt is not None else None,
            "nacks": self.nacks,
            "plis_passed": self.plis_passed,
            "switches_down": self.switches_down,
            "switches_up": self.switches_up,
            "hold": self._hold,
            "reason": self.reason,
        }
