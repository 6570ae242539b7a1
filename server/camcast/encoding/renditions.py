"""The rendition ladder: a few shared encodes of one camera at falling sizes and bitrates.

Every rendition is encoded once however many viewers take it; each WebRTC viewer is moved between
them to match its link. The ladder is derived from the capture size and bitrate: the picture as
captured at the configured bitrate, half its size at a fifth of that, and a quarter-size floor at
15 fps for the worst links.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rendition:
    name: str
    scale: float  # of the captured picture's width and height
    bitrate: int  # bits/s
    fps: float  # at most this many frames a second
    # The encoder's buffer, in seconds of the bitrate: the largest frame (a keyframe) it may make.
    # Renditions for poor links keep it short, so that a keyframe fits a shallow router queue
    # (about 200 ms of the link) whole instead of losing its tail exactly when a viewer arrives.
    buffer_seconds: float = 1.0


MIN_BITRATE = 60_000
POOR_LINK_BUFFER = 0.375  # s: keyframes of about a third of a second's bits


def default_ladder(width: int, height: int, fps: float, bitrate: int, adapt: bool = True) -> list[Rendition]:
    """Top to bottom. Without adaptation, or for pictures too small to halve, the top one alone."""
    ladder = [Rendition("high", 1.0, bitrate, fps)]
    if not adapt or width < 320 or height < 240:
        return ladder
    ladder.append(Rendition("medium", 0.5, max(MIN_BITRATE * 2, bitrate // 5), fps, POOR_LINK_BUFFER))
    if width >= 640 and height >= 360:
        ladder.append(Rendition("low", 0.25, max(MIN_BITRATE, bitrate // 20), min(fps, 15.0),
                                POOR_LINK_BUFFER))
    return ladder
