"""The A/V offset in a recording of the test pattern, read back with PyAV.

Each beep's onset is the first decoded sample above the threshold after at least half a second of
quiet; each flash frame is a frame whose bottom-right 64x64 block is white. A flash pairs with the
beep of its second; the offset is the beep's file time minus the flash frame's, plus how late after
the whole second the flash frame was captured (its stamp): what is left is the file's own offset.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from camcast.stamp import read_stamp

FLASH = 64
BEEP_THRESHOLD = 0.05
QUIET_SECONDS = 0.5


def beep_onsets(path: Path) -> list[float]:
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


def file_offsets_ms(path: Path) -> list[float]:
    """The recording's A/V offset (ms, + = sound late) at every second with both a beep and a flash."""
    onsets = beep_onsets(path)
    offsets = []
    for time, stamp in flashes(path):
        near = [t for t in onsets if abs(t - time) < 0.5]
        if near:
            offsets.append((near[0] - time + (stamp % 1_000_000) / 1e6) * 1000)
    return offsets
