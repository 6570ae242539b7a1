"""One motion event as it is stored, and its JSON (the shape the player and the wall read)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from camcast.cameras import CAMERA_PREFIX
from camcast.motion.detector import Box
from camcast.recorder.naming import iso_utc

EVENT_ID = re.compile(r"[0-9a-f]{6,32}")


@dataclass(frozen=True)
class EventRecording:
    name: str  # the recording file
    offset: float  # s from the file's start to the event's start


@dataclass(frozen=True)
class MotionEvent:
    id: str
    camera: str
    start_us: int
    end_us: int | None
    peak: float  # percent of the picture
    box: Box | None
    recording: EventRecording | None
    updated_us: int  # the last time it was saved (an event left open by a crash ends here)

    def to_json(self) -> dict[str, Any]:
        prefix = CAMERA_PREFIX.format(camera=self.camera)
        recording = None
        if self.recording is not None:
            recording = {"name": self.recording.name, "url": f"{prefix}/recordings/{self.recording.name}",
                         "offset": round(self.recording.offset, 3)}
        return {
            "id": self.id,
            "camera": self.camera,
            "start": iso_utc(self.start_us),
            "end": iso_utc(self.end_us) if self.end_us is not None else None,
            "peak": round(self.peak, 3),
            "box": list(self.box) if self.box is not None else None,
            "thumbnail": f"{prefix}/api/events/{self.id}.jpg",
            "recording": recording,
        }
