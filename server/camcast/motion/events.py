"""From motion samples to events: start after persistent motion, end after a quiet period.

Pure, like the detector: times come with the samples. The tracker keeps the event's peak score,
its box and a small copy of the picture with the most motion (for the thumbnail).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from camcast.motion.detector import Box, MotionSample, MotionSettings

UPDATE_SECONDS = 2.0  # an open event is saved this often (a crash then loses at most this much)


@dataclass
class ActiveEvent:
    id: str
    start_us: int
    last_motion_us: int
    peak: float = 0.0
    box: Box | None = None
    picture: np.ndarray | None = None  # BGR, small: the picture at the peak
    peak_changed: bool = True  # the thumbnail is out of date
    saved_us: int = 0


@dataclass(frozen=True)
class Transition:
    kind: str  # "start", "update" (still open: saved for crash recovery) or "end"
    id: str
    start_us: int
    end_us: int | None
    peak: float
    box: Box | None
    picture: np.ndarray | None  # the peak picture, when it changed since the last transition
    at_us: int  # when the transition happened (the sample's time)


def new_event_id(start_us: int) -> str:
    """Hex, sorting by start time; random bits keep ids of restarts and clock jumps apart."""
    return f"{start_us // 1000:011x}{secrets.token_hex(3)}"


class EventTracker:
    def __init__(self, settings: MotionSettings) -> None:
        self.settings = settings
        self.active: ActiveEvent | None = None
        self._moving_since: int | None = None

    def feed(self, sample: MotionSample, t_us: int,
             picture: Callable[[], np.ndarray] | None = None) -> list[Transition]:
        """One sample at `t_us`; `picture()` gives a small copy of its frame if it becomes the peak."""
        moving = sample.score >= self.settings.min_area and sample.score > 0
        event = self.active
        if event is None:
            if not moving:
                self._moving_since = None
                return []
            if self._moving_since is None:
                self._moving_since = t_us
            if t_us - self._moving_since < self.settings.start_after * 1e6:
                return []
            event = ActiveEvent(new_event_id(self._moving_since), self._moving_since, t_us, saved_us=t_us)
            self.active = event
            self._moving_since = None
            self._take_peak(event, sample, picture)
            return [self._transition("start", event, t_us)]
        if moving:
            event.last_motion_us = t_us
            if sample.score > event.peak:
                self._take_peak(event, sample, picture)
        elif t_us - event.last_motion_us >= self.settings.quiet * 1e6:
            self.active = None
            return [self._transition("end", event, t_us)]
        if t_us - event.saved_us >= UPDATE_SECONDS * 1e6:
            event.saved_us = t_us
            return [self._transition("update", event, t_us)]
        return []

    def close(self, t_us: int) -> list[Transition]:
        """End an open event now (the camera stops): its end is its last motion."""
        event, self.active = self.active, None
        return [self._transition("end", event, t_us)] if event is not None else []

    @staticmethod
    def _take_peak(event: ActiveEvent, sample: MotionSample,
                   picture: Callable[[], np.ndarray] | None) -> None:
        event.peak = sample.score
        event.box = sample.box
        if picture is not None:
            event.picture = picture()
            event.peak_changed = True

    @staticmethod
    def _transition(kind: str, event: ActiveEvent, t_us: int) -> Transition:
        # The end is the last motion seen: the quiet period after it is how we know it ended.
        end_us = event.last_motion_us if kind == "end" else None
        picture = event.picture if event.peak_changed else None
        event.peak_changed = False
        return Transition(kind, event.id, event.start_us, end_us, round(event.peak, 3), event.box, picture,
                          t_us)
