"""The 20 ms chunker every sound source feeds: a stream whose format changes mid-way (an AAC camera
switching its configuration, a device reopened at another rate) goes on being heard."""

from __future__ import annotations

import itertools

import av
import numpy as np

from camcast.audio import FRAME_SAMPLES, FRAME_US
from camcast.sources.audio_pcm import PcmChunk, Rechunker


def sine_frame(rate: int, layout: str, samples: int, hz: float = 440.0) -> av.AudioFrame:
    channels = 1 if layout == "mono" else 2
    wave = (np.sin(2 * np.pi * hz * np.arange(samples) / rate) * 8000).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(np.repeat(wave, channels).reshape(1, -1), format="s16", layout=layout)
    frame.sample_rate = rate
    return frame


def test_a_change_of_rate_and_layout_mid_stream_keeps_the_sound_going() -> None:
    chunks: list[PcmChunk] = []
    rechunker = Rechunker(chunks.append)
    at = 1_000_000
    for rate, layout in ((44_100, "mono"), (48_000, "stereo"), (22_050, "mono")):
        for _ in range(10):
            frame = sine_frame(rate, layout, 1024)
            rechunker.push(frame, at)
            at += 1024 * 1_000_000 // rate
    assert len(chunks) >= 3 * 10 * 1024 // 2 // FRAME_SAMPLES  # every part was heard, none dropped
    assert all(len(c.samples) == FRAME_SAMPLES for c in chunks)
    assert all(b.captured_us - a.captured_us >= FRAME_US - 1 for a, b in itertools.pairwise(chunks))
    loud = [float(np.abs(c.samples.astype(float)).max()) for c in chunks]
    assert min(loud[1:-1]) > 4000, loud  # a sine throughout, not silence
