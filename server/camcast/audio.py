"""A camera's sound: one Opus encode shared by every listener, run only while someone listens.

The sound comes from a PcmSource (the test tone, an ALSA device, the camera's own audio track) as
20 ms chunks stamped on the capture clock the pictures use, so a browser lines the two up from the
RTCP sender reports and anyone can measure the offset: the test tone is a 1 kHz beep for 100 ms
from every whole second of that clock, and the test pattern flashes a white block in the first
frame captured at or after the same second.

When the source goes quiet (a stream's audio track stops, a reconnect comes back without one, an
ALSA device is unplugged) the encoder keeps sending silence on the same clock: browsers keep their
audio jitter buffer and lip sync steady through a steady 50 packets a second, while a stream that
stops and starts again makes them stretch and catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from camcast.frames import now_us
from camcast.hub import Hub
from camcast.sources.audio_alsa import AlsaSource
from camcast.sources.audio_pcm import FRAME_SAMPLES, FRAME_US, RESYNC_US, SAMPLE_RATE, PcmChunk, PcmSource
from camcast.sources.audio_stream import StreamAudio
from camcast.sources.audio_tone import TONE_HZ, TONE_LEVEL, TONE_US, ToneSource, tone
from camcast.threadname import name_native_thread

log = logging.getLogger("camcast.audio")

AUDIO_TIME_BASE = Fraction(1, SAMPLE_RATE)
LINGER = 2.0  # s the encoder keeps running after the last listener leaves (a reload finds it warm)
QUEUE_CHUNKS = 25  # 500 ms of sound between a source and the encoder; beyond, the oldest goes
# No sound for this long: silence fills in, this far behind the clock (a late chunk still fits).
SILENCE_LAG_US = 200_000
SILENCE = np.zeros(FRAME_SAMPLES, np.int16)

__all__ = ["AUDIO_TIME_BASE", "FRAME_SAMPLES", "FRAME_US", "SAMPLE_RATE", "TONE_HZ", "TONE_LEVEL", "TONE_US",
           "AudioPacket", "SharedAudio", "tone"]


def make_pcm_source(kind: str) -> PcmSource:
    """The source an --audio value names (`none` has none)."""
    if kind == "stream":
        return StreamAudio()
    if kind.startswith("alsa:"):
        return AlsaSource(kind)
    return ToneSource()


@dataclass(frozen=True, slots=True)
class AudioPacket:
    """One 20 ms Opus packet (an av.Packet, pts in 1/48000 s from the camera's epoch)."""

    packet: Any
    captured_us: int


class SharedAudio:
    """The camera's Opus packets, made in one thread while `packets` has subscribers."""

    def __init__(self, camera: str, kind: str, epoch_us: int, bitrate: int = 32_000,
                 source: PcmSource | None = None) -> None:
        self.camera = camera
        self.kind = kind  # "tone", "alsa:DEVICE" or "stream" ("none" never gets here)
        self.source: PcmSource = source if source is not None else make_pcm_source(kind)
        self.packets: Hub[AudioPacket] = Hub("opus-packets")
        self._epoch_us = epoch_us
        self._bitrate = bitrate
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._stopper: asyncio.TimerHandle | None = None
        self._closing = False
        self._chunks: queue.Queue[PcmChunk] = queue.Queue(QUEUE_CHUNKS)
        self.starts = 0
        self.packets_encoded = 0
        self.silent_packets = 0  # encoded while the source gave no sound
        self.chunks_dropped = 0
        self.packets.on_subscribers_changed(self._on_listeners)

    @property
    def stream_input(self) -> StreamAudio | None:
        """Where a stream source hands its audio packets, when the sound is the stream's own."""
        return self.source if isinstance(self.source, StreamAudio) else None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def available(self) -> bool:
        """Whether the camera has sound to offer (a stream known to have no audio track has not)."""
        return self.source.has_sound is not False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        self._closing = True
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

    def _take(self, chunk: PcmChunk) -> None:
        """From the source's thread: a full queue (the encoder held up) loses its oldest chunk."""
        while True:
            try:
                self._chunks.put_nowait(chunk)
                return
            except queue.Full:
                self.chunks_dropped += 1
                try:
                    self._chunks.get_nowait()
                except queue.Empty:
                    pass

    def _run(self) -> None:
        name_native_thread()
        encoder = av.CodecContext.create("libopus", "w")
        encoder.sample_rate = SAMPLE_RATE
        encoder.layout = "mono"
        encoder.format = "s16"
        encoder.bit_rate = self._bitrate
        encoder.open()
        while not self._chunks.empty():  # what an earlier run left
            self._chunks.get_nowait()
        self.source.start(self._take)
        try:
            self._encode_chunks(encoder)
        finally:
            self.source.stop()
            self._ended()

    def _ended(self) -> None:
        """From the encoder thread as it ends: a listener that came while it was winding down
        (it still counted as running then) gets a new one."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._restart_if_wanted)

    def _restart_if_wanted(self) -> None:
        if self._closing or self.packets.subscriber_count == 0 or self._loop is None:
            return
        if self.running:  # the thread is returning from _run right now
            self._loop.call_later(0.02, self._restart_if_wanted)
            return
        self._on_listeners(self.packets.subscriber_count)

    def _encode_chunks(self, encoder: Any) -> None:
        next_us: int | None = None  # where the next packet starts: packets never overlap or go back
        while not self._stop.is_set():
            try:
                chunk: PcmChunk | None = self._chunks.get(timeout=FRAME_US / 1e6)
            except queue.Empty:
                chunk = None
            if chunk is not None:
                if next_us is not None and chunk.captured_us < next_us - RESYNC_US:
                    self.chunks_dropped += 1  # its time already went out as silence: too late
                    continue
                if next_us is None or chunk.captured_us > next_us + RESYNC_US:
                    next_us = chunk.captured_us  # the first chunk, or a gap: the packets follow the clock
                # else: continuous (timestamps jitter; the samples do not): it goes next in line.
                self._encode(encoder, chunk.samples, next_us)
                next_us += FRAME_US
                continue
            # No sound: silence on the capture clock's 20 ms grid, a little behind it.
            due = now_us() - SILENCE_LAG_US
            if next_us is None or next_us < due - 1_000_000:
                next_us = (due // FRAME_US) * FRAME_US
            while next_us + FRAME_US <= due and not self._stop.is_set():
                self.silent_packets += 1
                self._encode(encoder, SILENCE, next_us)
                next_us += FRAME_US

    def _encode(self, encoder: Any, samples: np.ndarray, start_us: int) -> None:
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = (start_us - self._epoch_us) * SAMPLE_RATE // 1_000_000
        frame.time_base = AUDIO_TIME_BASE
        for packet in encoder.encode(frame):
            packet.time_base = AUDIO_TIME_BASE
            self.packets_encoded += 1
            self._publish(AudioPacket(packet, start_us))

    def _publish(self, item: AudioPacket) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.packets.publish, item)
            except RuntimeError:  # the loop is closing
                pass

    def status(self) -> dict[str, object]:
        return {"source": self.source.description, "codec": "opus", "encoding": self.running,
                "listeners": self.packets.subscriber_count, "packets_encoded": self.packets_encoded,
                "silent_packets": self.silent_packets, "encoder_starts": self.starts}
