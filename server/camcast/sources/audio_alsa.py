"""A capture device's sound through PyAV's ALSA input (`alsa:default`, `alsa:hw:1,0`).

It runs in its own thread while someone listens, and reopens the device with backoff like a
video source when it fails (unplugged, taken by another program).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import av

from camcast.frames import now_us
from camcast.sources.audio_pcm import Deliver, Rechunker, describe_audio
from camcast.threadname import name_native_thread

log = logging.getLogger("camcast.audio")

PREFIX = "alsa:"
BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0)  # then every 10 s, as for video


def alsa_missing() -> str | None:
    """Why ALSA devices cannot be read here (None when they can)."""
    if "alsa" not in av.formats_available:
        return "this PyAV/FFmpeg build has no ALSA input (\"alsa\" is not in av.formats_available)"
    return None


def open_device(device: str) -> Any:
    """The device opened for capture; raises OSError/av.FFmpegError with FFmpeg's reason."""
    return av.open(device, format="alsa", timeout=5.0)


def check_alsa(spec: str) -> str | None:
    """Open `alsa:DEVICE` once (at startup); None when it opens, else one line saying why not."""
    missing = alsa_missing()
    if missing:
        return missing
    device = spec.removeprefix(PREFIX)
    try:
        container = open_device(device)
    except (av.FFmpegError, OSError) as exc:
        return f"cannot open ALSA device {device}: {exc}"
    container.close()
    return None


class AlsaSource:
    has_sound = True

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.device = spec.removeprefix(PREFIX)
        self.format = ""  # what the device gives, once opened
        self.state = "idle"
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def description(self) -> str:
        return f"{self.spec} ({self.format}, {self.state})" if self.format else f"{self.spec} ({self.state})"

    def start(self, deliver: Deliver) -> None:
        # Each run has its own stop flag: a read hung past stop() must not come back to life with
        # the next run (two readers on one device).
        self._stop = stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(deliver, stop), name="camcast-alsa",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)  # a read returns within a period; a hung one is left behind
            self._thread = None
        self.state = "idle"

    def _run(self, deliver: Deliver, stop: threading.Event) -> None:
        name_native_thread()
        failures = 0
        while not stop.is_set():
            try:
                container = open_device(self.device)
            except (av.FFmpegError, OSError) as exc:
                self.state = f"reconnecting: {exc}"
                if failures == 0:
                    log.warning("%s: cannot open: %s; retrying with backoff", self.spec, exc)
                stop.wait(BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)])
                failures += 1
                continue
            failures = 0
            reason = self._capture(container, deliver, stop)
            container.close()
            if stop.is_set():
                return
            self.reconnects += 1
            self.state = f"reconnecting: {reason}"
            log.warning("%s: capture stopped: %s; reopening", self.spec, reason)
            stop.wait(BACKOFF_SECONDS[0])
            failures = 1

    def _capture(self, container: Any, deliver: Deliver, stop: threading.Event) -> str:
        stream = container.streams.audio[0]
        self.format = describe_audio(stream.codec_context)
        self.state = "capturing"
        rechunker = Rechunker(deliver)
        try:
            for packet in container.demux(stream):
                if stop.is_set():
                    return "stopped"
                for frame in packet.decode():
                    # Read as soon as the period is complete: its first sample is a period old.
                    duration_us = frame.samples * 1_000_000 // frame.sample_rate
                    rechunker.push(frame, now_us() - duration_us)
        except (av.FFmpegError, OSError) as exc:
            return str(exc)
        return "the device ended"
