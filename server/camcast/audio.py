"""A camera's sound: one Opus encode shared by every listener, run only while someone listens.

The sound's timestamps come from the capture clock the pictures use, so a browser lines the two up
from the RTCP sender reports and anyone can measure the offset: the test tone is a 1 kHz beep for
100 ms from every whole second of that clock, and the test pattern flashes a white block in the
first frame captured at or after the same second.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from camcast.frames import now_us
from camcast.hub import Hub
from camcast.threadname import name_native_thread

log = logging.getLogger("camcast.audio")

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms: what WebRTC's Opus carries per packet
FRAME_US = FRAME_SAMPLES * 1_000_000 // SAMPLE_RATE
AUDIO_TIME_BASE = Fraction(1, SAMPLE_RATE)
TONE_HZ = 1000.0
TONE_US = 100_000  # the beep's length from every whole second
TONE_LEVEL = 0.25  # of full scale: clearly audible, never clipping
LINGER = 2.0  # s the encoder keeps running after the last listener leaves (a reload finds it warm)


@dataclass(frozen=True, slots=True)
class AudioPacket:
    """One 20 ms Opus packet (an av.Packet, pts in 1/48000 s from the camera's epoch)."""

    packet: Any
    captured_us: int


def tone(start_us: int, samples: int = FRAME_SAMPLES) -> np.ndarray:
    """The test tone from `start_us` on (capture clock): int16 mono, loud only in each second's
    first 100 ms."""
    times_us = start_us + np.arange(samples, dtype=np.int64) * 1_000_000 // SAMPLE_RATE
    on = (times_us % 1_000_000) < TONE_US
    wave = np.sin(2 * np.pi * TONE_HZ * (times_us % 1_000_000) / 1e6) * (TONE_LEVEL * 32767)
    return np.where(on, wave, 0).astype(np.int16)


class SharedAudio:
    """The camera's Opus packets, made in one thread while `packets` has subscribers."""

    def __init__(self, camera: str, kind: str, epoch_us: int, bitrate: int = 32_000) -> None:
        self.camera = camera
        self.kind = kind  # "tone" (the test pattern's); "none" never gets here
        self.packets: Hub[AudioPacket] = Hub("opus-packets")
        self._epoch_us = epoch_us
        self._bitrate = bitrate
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._stopper: asyncio.TimerHandle | None = None
        self.starts = 0
        self.packets_encoded = 0
        self.packets.on_subscribers_changed(self._on_listeners)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        if self._stopper is not None:
            self._stopper.cancel()
        await asyncio.get_running_loop().run_in_executor(None, self._join)
        self.packets.close()

    def _on_listeners(self, count: int) -> None:
        if self._loop is None:
            return
        if count > 0:
            if self._stopper is not None:
                self._stopper.cancel()
                self._stopper = None
            if not self.running:
                self._stop.clear()
                self.starts += 1
                self._thread = threading.Thread(target=self._run, name="camcast-audio", daemon=True)
                self._thread.start()
        elif self.running and self._stopper is None:
            self._stopper = self._loop.call_later(LINGER, self._idle)

    def _idle(self) -> None:
        self._stopper = None
        if self.packets.subscriber_count == 0:
            self._stop.set()

    def _join(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def _run(self) -> None:
        name_native_thread()
        encoder = av.CodecContext.create("libopus", "w")
        encoder.sample_rate = SAMPLE_RATE
        encoder.layout = "mono"
        encoder.format = "s16"
        encoder.bit_rate = self._bitrate
        encoder.open()
        # 20 ms frames on the capture clock's own 20 ms grid, so every run's timestamps line up.
        start = (now_us() // FRAME_US) * FRAME_US
        while not self._stop.is_set():
            delay = (start - now_us()) / 1e6
            if delay > 0:
                time.sleep(delay)
            pcm = tone(start)
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = (start - self._epoch_us) * SAMPLE_RATE // 1_000_000
            frame.time_base = AUDIO_TIME_BASE
            for packet in encoder.encode(frame):
                packet.time_base = AUDIO_TIME_BASE
                self.packets_encoded += 1
                self._publish(AudioPacket(packet, start))
            start += FRAME_US
            if now_us() - start > 200_000:  # the thread was held up: skip ahead, never bunch
                start = (now_us() // FRAME_US) * FRAME_US

    def _publish(self, item: AudioPacket) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.packets.publish, item)
            except RuntimeError:  # the loop is closing
                pass

    def status(self) -> dict[str, object]:
        return {"source": self.kind, "codec": "opus", "encoding": self.running,
                "listeners": self.packets.subscriber_count, "packets_encoded": self.packets_encoded}
