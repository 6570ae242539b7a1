"""The A/V offset in a recording of the test pattern, read back with PyAV: the beeps and flashes are
found as the tests find them (tests/support/avfile.py)."""

from __future__ import annotations

from pathlib import Path

from tests.support.avfile import av_offsets


def file_offsets_ms(path: Path) -> list[float]:
    """The recording's A/V offset (ms, + = sound late) at every second with both a beep and a flash."""
    return [offset * 1000 for offset in av_offsets(path)]
