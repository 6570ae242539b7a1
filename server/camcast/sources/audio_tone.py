"""The test pattern's sound: a 1 kHz beep for 100 ms from every whole second of the capture clock."""

from __future__ import annotations

import threading

import numpy as np

from camcast.frames import now_us
from camcast.sources.audio_pcm import FRAME_SAMPLES, FRAME_US, SAMPLE_RATE, Deliver, PcmChunk
from camcast.threadname import name_native_thread

TONE_HZ = 1000.0
TONE_US = 100_000  # the beep's length from every whole second
TONE_LEVEL = 0.25  # of full scale: clearly audible, never clipping


def tone(start_us: int, samples: int = FRAME_SAMPLES) -> np.ndarray:
    """The test tone from `start_us` on (capture clock): int16 mono, loud only in each second's
    first 100 ms."""
    times_us = start_us + np.arange(samples, dtype=np.int64) * 1_000_000 // SAMPLE_RATE
    on = (times_us % 1_000_000) < TONE_US
    wave = np.sin(2 * np.pi * TONE_HZ * (times_us % 1_000_000) / 1e6) * (TONE_LEVEL * 32767)
    return np.where(on, wave, 0).astype(np.int16)


class ToneSource:
    """Makes the tone in real time, on the capture clock's own 20 ms grid (every run lines up)."""

    description = "tone"
    has_sound = True

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, deliver: Deliver) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(deliver,), name="camcast-tone", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None

    def _run(self, deliver: Deliver) -> None:
        name_native_thread()
        start = (now_us() // FRAME_US) * FRAME_US
        while not self._stop.is_set():
            if self._stop.wait(max(0.0, (start - now_us()) / 1e6)):
                return  # made as its first sample is due: what the tone has always done
            deliver(PcmChunk(tone(start), start))
            start += FRAME_US
            if now_us() - start > 200_000:  # the thread was held up: skip ahead, never bunch
                start = (now_us() // FRAME_US) * FRAME_US
