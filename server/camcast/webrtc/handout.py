"""When a track handed each frame to its sender, and when that frame was captured.

aiortc's RTCP sender reports pair an RTP timestamp with the wall-clock time its packet was *sent*.
A browser lines audio up with video from those pairs, so a video frame that spent 30 ms in an
encoder looks 30 ms younger than the sound captured with it, and the sound plays that much late.
A sender sends a frame's packets right after its track hands the frame over and before it asks
for the next one, so the frame a report's send time belongs to is the last one handed out before
that time; its capture time is what the report should say instead.
"""

from __future__ import annotations

from collections import deque

from camcast.frames import now_us

KEPT = 64  # frames remembered: reports come every 0.5-1.5 s, a couple of frames at most behind


class Handouts:
    def __init__(self) -> None:
        self._handed: deque[tuple[int, int]] = deque(maxlen=KEPT)  # (handed out at, captured at), µs

    def note(self, captured_us: int) -> None:
        """The track hands the sender a frame captured at `captured_us` now."""
        self._handed.append((now_us(), captured_us))

    def captured_before(self, sent_us: int) -> int | None:
        """The capture time of the last frame handed out at or before `sent_us` (None: unknown)."""
        for handed_us, captured_us in reversed(self._handed):
            if handed_us <= sent_us:
                return captured_us
        return None
