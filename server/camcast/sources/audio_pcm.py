"""Sound on its way to the Opus encoder: 20 ms chunks of 48 kHz mono PCM, stamped on the capture clock.

Every audio source (the test tone, an ALSA device, a camera's own track) ends here: whatever its rate,
layout and frame size, `Rechunker` resamples it once and cuts it into the 960-sample chunks WebRTC's
Opus carries, each stamped with the capture time of its first sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import av
import numpy as np

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms
FRAME_US = FRAME_SAMPLES * 1_000_000 // SAMPLE_RATE
# A frame stamped this far from where the previous one ended starts a new run (a gap, a jump of the
# source's clock); closer, it is taken as continuous (timestamps jitter; the samples do not).
RESYNC_US = 100_000


@dataclass(frozen=True, slots=True)
class PcmChunk:
    """20 ms of sound: int16 mono samples at 48 kHz; `captured_us` is its first sample's capture time."""

    samples: np.ndarray
    captured_us: int


Deliver = Callable[[PcmChunk], None]


class PcmSource(Protocol):
    """Where a camera's sound comes from. `start` is called when the first listener arrives (the
    source calls `deliver` from its own thread from then on) and `stop` when the last one left."""

    @property
    def description(self) -> str:
        """What it is, for /api/status: `tone`, `alsa:hw:1,0`, `stream aac 44100 Hz stereo`..."""

    @property
    def has_sound(self) -> bool | None:
        """False when the source is known to carry no sound (a stream without an audio track);
        None while that is not known yet."""

    def start(self, deliver: Deliver) -> None: ...

    def stop(self) -> None: ...


def describe_audio(codec: Any) -> str:
    """`aac 44100 Hz stereo` from a PyAV codec context."""
    layout = getattr(getattr(codec, "layout", None), "name", "") or f"{getattr(codec, 'channels', '?')} ch"
    return f"{codec.name} {codec.sample_rate} Hz {layout}"


class Rechunker:
    """Resample decoded frames to 48 kHz mono s16 and cut them into stamped 20 ms chunks."""

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._resampler: Any = None
        self._pending = np.zeros(0, np.int16)
        self._pending_us = 0  # capture time of _pending[0]

    def reset(self) -> None:
        """Forget what is buffered (the source reopened, or nobody listens any more)."""
        self._resampler = None
        self._pending = np.zeros(0, np.int16)

    def push(self, frame: Any, captured_us: int) -> None:
        """A decoded av.AudioFrame whose first sample was captured at `captured_us`."""
        frame.pts = None  # stamped here, from the capture clock; the resampler need not follow
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        try:
            resampled = self._resampler.resample(frame)
        except ValueError:
            # The rate or channel layout changed mid-stream (an AAC camera switching its
            # configuration): a resampler is set up for one input format, so start a new one.
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            resampled = self._resampler.resample(frame)
        for out in resampled:
            self.push_samples(out.to_ndarray().reshape(-1), captured_us)
            captured_us += out.samples * 1_000_000 // SAMPLE_RATE

    def push_samples(self, samples: np.ndarray, captured_us: int) -> None:
        """int16 mono 48 kHz samples whose first was captured at `captured_us`."""
        expected = self._pending_us + len(self._pending) * 1_000_000 // SAMPLE_RATE
        if len(self._pending) == 0 or abs(captured_us - expected) > RESYNC_US:
            self._pending, self._pending_us = samples.astype(np.int16, copy=False), captured_us
        else:
            self._pending = np.concatenate((self._pending, samples.astype(np.int16, copy=False)))
        while len(self._pending) >= FRAME_SAMPLES:
            chunk, self._pending = self._pending[:FRAME_SAMPLES], self._pending[FRAME_SAMPLES:]
            self._deliver(PcmChunk(chunk.copy(), self._pending_us))
            self._pending_us += FRAME_US
