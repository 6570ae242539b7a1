"""A camera's own sound (RTSP, HTTP streams, files): its audio track, decoded while someone listens.

StreamSource's demux thread reads every packet of the stream anyway; it hands the audio ones here,
stamped with the same anchor that maps the video's timestamps to the capture clock (so the two stay
as much in sync as the camera sent them). Decoding AAC, G.711, Opus or MP3 and resampling it costs
tens of microseconds a packet, so it is done right there, and only while `listening`; when nobody
listens the packets are dropped undecoded.
"""

from __future__ import annotations

import logging
from typing import Any

import av

from camcast.sources.audio_pcm import Deliver, Rechunker, describe_audio

log = logging.getLogger("camcast.audio")


def stream_has_audio(spec: str, rtsp_transport: str = "tcp") -> bool | None:
    """Whether a stream or file has an audio track (None when it cannot be opened to tell)."""
    options = {"rtsp_transport": rtsp_transport} if spec.lower().startswith(("rtsp://", "rtsps://")) else {}
    try:
        with av.open(spec, options=options, timeout=(10.0, 5.0)) as container:
            return bool(container.streams.audio)
    except (av.FFmpegError, OSError):
        return None


class StreamAudio:
    def __init__(self) -> None:
        self.format = ""  # "aac 44100 Hz stereo" once a stream with sound opened
        self._has_sound: bool | None = None
        # Swapped by start()/stop() on the loop; the demux thread reads it once per packet.
        self._deliver: Deliver | None = None
        self._fresh = True  # the demux thread starts a new run of chunks
        self._rechunker: Rechunker | None = None
        self.packets_decoded = 0
        self.decode_errors = 0

    # -- the encoder's side ----------------------------------------------------------------------
    @property
    def description(self) -> str:
        if self._has_sound is None:
            return "stream (not opened yet)"
        return f"stream {self.format}" if self._has_sound else "stream (it has no audio track)"

    @property
    def has_sound(self) -> bool | None:
        return self._has_sound

    @property
    def listening(self) -> bool:
        return self._deliver is not None

    def start(self, deliver: Deliver) -> None:
        self._fresh = True
        self._deliver = deliver

    def stop(self) -> None:
        self._deliver = None

    # -- the demux thread's side -----------------------------------------------------------------
    def opened(self, stream: Any | None) -> None:
        """The source (re)opened, with this audio stream or none (then listeners hear silence)."""
        if stream is None:
            if self._has_sound:
                log.warning("the stream came back without its audio track: listeners hear silence")
            self._has_sound = False
            return
        self.format = describe_audio(stream.codec_context)
        self._has_sound = True
        self._fresh = True

    def take(self, packet: Any, captured_us: int) -> None:
        """One audio packet of the stream, its first sample captured at `captured_us`."""
        deliver = self._deliver
        if deliver is None:
            return
        if self._fresh or self._rechunker is None:
            self._fresh = False
            self._rechunker = Rechunker(deliver)
        try:
            frames = packet.decode()
        except (av.FFmpegError, ValueError) as exc:
            self.decode_errors += 1
            log.debug("audio decode error: %s", exc)
            return
        for frame in frames:
            self._rechunker.push(frame, captured_us)
            captured_us += frame.samples * 1_000_000 // max(1, frame.sample_rate)
        self.packets_decoded += 1
