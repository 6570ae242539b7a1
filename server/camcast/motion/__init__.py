"""Motion events: detection on a small grayscale copy of a camera's frames, events saved in SQLite,
announced on the data channel and to webhooks, and (optionally) recorded with their pre-roll."""

from camcast.motion.detector import MotionSample, MotionSettings
from camcast.motion.service import DEFAULT_PREROLL, MotionService, with_default_preroll

__all__ = ["DEFAULT_PREROLL", "MotionSample", "MotionService", "MotionSettings", "with_default_preroll"]
