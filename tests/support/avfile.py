"""The test pattern's beeps and flashes in a recording, read back with PyAV.

Each beep's onset is the first decoded sample above the threshold after at least half a second of
quiet (a beep already sounding when the sound starts has no onset in the file); each flash frame is
a frame whose bottom-right 64x64 block is white. A flash pairs with the beep of its second; the A/V
offset is the beep's file time minus the flash frame's, plus how late after the whole second the
flash frame was captured (its stamp; at most a frame interval): what is left is the file's own.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from camcast.sources.testpattern import FLASH
from camcast.stamp import read_stamp

BEEP_THRESHOLD = 0.05  # of full scale: the tone is at 0.25, Opus's noise in the silence far below
QUIET_SECONDS = 0.5


def beep_onsets(path: Path) -> list[float]:
    """File time (s) of each beep's first sample."""
    onsets: list[float] = []
    last_loud: float | None = None
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.audio[0]):
            start = float(frame.pts * frame.time_base)
            if last_loud is None:
                last_loud = start
            loud = np.nonzero(np.abs(frame.to_ndarray().reshape(-1)) > BEEP_THRESHOLD)[0]
            if not len(loud):
                continue
            times = start + loud / frame.sample_rate
            if times[0] - last_loud > QUIET_SECONDS:
                onsets.append(float(times[0]))
            last_loud = float(times[-1])
    return onsets


def flashes(path: Path) -> list[tuple[float, int]]:
    """(file time in s, capture stamp in µs) of each flash frame."""
    found = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            gray = frame.to_ndarray(format="gray")
            if gray[-FLASH + 8:-8, -FLASH + 8:-8].mean() > 200:
                found.append((float(frame.time), read_stamp(gray)))
    return found


def av_offsets(path: Path, onsets: list[float] | None = None,
               flashed: list[tuple[float, int]] | None = None) -> list[float]:
    """The file's A/V offset (s, + = sound late) at every flash with a beep in its second."""
    onsets = beep_onsets(path) if onsets is None else onsets
    offsets = []
    for time, stamp in flashes(path) if flashed is None else flashed:
        near = [t for t in onsets if abs(t - time) < 0.5]
        if near:  # none: a flash at the very start of the sound
            offsets.append(near[0] - time + (stamp % 1_000_000) / 1e6)
    return offsets
