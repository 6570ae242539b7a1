"""The file writers (blocking; they run in the recorder's writer thread, never on the event loop).

- `Fmp4Sink` remuxes the shared H.264 packets into fragmented MP4 through PyAV: no re-encode.
  The mp4 muxer takes SPS/PPS from the first keyframe (they are in-band), writes the moov
  before the first fragment and then one moof+mdat about every second, so a crash or a power
  cut loses at most the fragment being built.
  With sound, an Opus track goes in the same fragments (its packets are copied, not re-encoded).
- `OpenCvSink` feeds decoded frames to a cv2.VideoWriter (`--recorder opencv`).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import BinaryIO, Protocol

import av
import cv2
import numpy as np

TIME_BASE = Fraction(1, 90000)
AUDIO_RATE = 48000
AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)
OPUS_FRAME = 960  # 20 ms
FRAGMENT_US = 1_000_000
MP4_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    # frag_keyframe alone would cut only at keyframes (every 2 s by default): cut every second too.
    "frag_duration": str(FRAGMENT_US),
    # Hand each finished fragment to the OS at once instead of keeping it in the I/O buffer.
    "flush_packets": "1",
    # With sound the muxer interleaves the two tracks; if one stalls, hold the other back at most
    # this long (µs), so what is on disk stays about a fragment behind.
    "max_interleave_delta": "1000000",
}
SYNC_INTERVAL = 1.0  # seconds between fdatasync calls: a power cut loses about a fragment


class RecordError(Exception):
    """Recording cannot start or go on; the message says why (it goes to viewers as is)."""


@dataclass(frozen=True, slots=True)
class PacketJob:
    """One encoded frame, copied off the shared packet so the writer thread owns it."""

    data: bytes
    pts: int  # 90 kHz, from the capture time
    keyframe: bool
    captured_us: int
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class AudioJob:
    """One 20 ms Opus packet for the file being written (only after its first video frame)."""

    data: bytes
    pts: int  # 1/48000 s from the camera's epoch, like the video's 90 kHz pts
    captured_us: int


@dataclass(frozen=True, slots=True)
class FrameJob:
    image: np.ndarray  # BGR; frames are never modified once published
    captured_us: int
    width: int
    height: int


Job = PacketJob | FrameJob | AudioJob
# Creates the file for a recording that starts at `start_us`: (path, file opened for writing).
Create = Callable[[Path, int, str], tuple[Path, BinaryIO]]


class Sink(Protocol):
    path: Path

    @property
    def bytes_written(self) -> int: ...

    @property
    def duration(self) -> float: ...

    def write(self, job: Job) -> None: ...

    def close(self) -> None: ...


class SyncedFile:
    """The raw file PyAV writes into: counts bytes, fdatasyncs new data about once a second, and
    after a failed write cuts the file back to its last complete fragment (`rollback`).

    The muxer never seeks back in a fragmented file, so the count of bytes written is the offset.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.written = 0
        self.good = 0  # where the file last ended on a complete box
        self.broken = False
        self._synced = 0
        self._last_sync = time.monotonic()

    def write(self, data: bytes | memoryview) -> int:
        if self.broken:  # nothing more after a failure: a later write must not leave half a box
            raise OSError(errno.EIO, "an earlier write to this file failed")
        view = memoryview(data)
        try:
            while view:  # a raw file may write less than asked
                n = self._raw.write(view)
                if not n:
                    raise OSError(errno.EIO, "the file accepted no data")
                self.written += n
                view = view[n:]
        except BaseException:
            self.broken = True
            raise
        return len(data)

    def mark_good(self) -> None:
        self.good = self.written

    def rollback(self) -> None:
        """Cut a half-written fragment off (truncating frees space, so it works on a full disk)."""
        if not self.broken or self.written == self.good:
            return
        try:
            os.ftruncate(self._raw.fileno(), self.good)
            self._raw.seek(self.good)
            self.written = self.good
        except (AttributeError, OSError, ValueError):
            pass

    def sync(self, force: bool = False) -> None:
        if self.written == self._synced:
            return
        now = time.monotonic()
        if force or now - self._last_sync >= SYNC_INTERVAL:
            self._raw.flush()
            try:
                os.fdatasync(self._raw.fileno())
            except (AttributeError, OSError, ValueError) as exc:
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT):
                    raise
            self._synced, self._last_sync = self.written, now

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        self._raw.close()


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


class Fmp4Sink:
    def __init__(self, folder: Path, first: PacketJob, fps: float, create: Create,
                 audio: bool = False) -> None:
        self.path, raw = create(folder, first.captured_us, "mp4")
        self._file = SyncedFile(raw)
        try:
            self._container = av.open(self._file, "w", format="mp4", options=dict(MP4_OPTIONS))
            # A stream without a codec context: packets are muxed as they are, never re-encoded.
            self._stream = self._container.add_mux_stream(
                "h264", rate=_rate(fps), width=first.width, height=first.height)
            self._stream.time_base = TIME_BASE
            self._audio = self._add_audio() if audio else None
        except BaseException:
            self._file.close()
            raise
        self._frame_ticks = max(1, round(90000 / fps))
        self._base_pts = first.pts
        self._last_pts = -1
        # The audio's 0 is the capture-clock instant of the video's first frame (same epoch).
        self._audio_base = first.pts * AUDIO_RATE // 90000
        self._last_audio_pts = -1

    def _add_audio(self) -> av.audio.stream.AudioStream:
        # A libopus context that never encodes: opening it (at the header) fills in the OpusHead
        # extradata the mp4 muxer needs for its dOps box. The packets are muxed as they come.
        stream = self._container.add_stream("libopus", rate=AUDIO_RATE, layout="mono")
        stream.codec_context.format = "s16"
        stream.time_base = AUDIO_TIME_BASE
        return stream

    @property
    def bytes_written(self) -> int:
        return self._file.written

    @property
    def duration(self) -> float:
        return 0.0 if self._last_pts < 0 else (self._last_pts + self._frame_ticks) / 90000

    def write(self, job: Job) -> None:
        if isinstance(job, AudioJob):
            self._write_audio(job)
            return
        assert isinstance(job, PacketJob)
        # Rebased to 0 at the first frame; strictly increasing even if the capture clock steps back.
        pts = max(self._last_pts + 1, job.pts - self._base_pts)
        self._last_pts = pts
        packet = av.Packet(job.data)
        packet.pts = packet.dts = pts
        packet.duration = self._frame_ticks  # the last frame's duration; the others follow from dts
        packet.time_base = TIME_BASE
        packet.is_keyframe = job.keyframe
        packet.stream = self._stream
        self._mux(packet)

    def _write_audio(self, job: AudioJob) -> None:
        if self._audio is None:
            return
        # The packet's pts is its encoder input's minus the 312-sample pre-skip (the decoder drops
        # that much at the start of the track again, and times what follows right).
        pts = job.pts - self._audio_base
        if pts <= self._last_audio_pts:
            return
        if self._last_audio_pts < 0:
            if pts < OPUS_FRAME:
                return  # it would overlap the silence that opens the track
            # A fragmented mp4 has no edit list: each track starts at 0, the first sample lasting
            # until the second. A silent packet goes there, so the first real one keeps its time
            # (after a pre-roll the sound starts seconds into the file).
            self._mux_audio(silent_opus(), 0)
        self._mux_audio(job.data, pts)

    def _mux_audio(self, data: bytes, pts: int) -> None:
        self._last_audio_pts = pts
        packet = av.Packet(data)
        packet.pts = packet.dts = pts
        packet.duration = OPUS_FRAME
        packet.time_base = AUDIO_TIME_BASE
        packet.stream = self._audio
        self._mux(packet)

    def _mux(self, packet: av.Packet) -> None:
        try:
            self._container.mux(packet)
        except BaseException:
            self._file.rollback()
            raise
        # Each mux call hands the OS whole fragments only (flush_packets): the file ends cleanly here.
        self._file.mark_good()
        self._file.sync()

    def close(self) -> None:
        try:
            self._container.close()  # the last fragment and the mfra index
            self._file.sync(force=True)
        except BaseException:
            self._file.rollback()
            raise
        finally:
            self._file.close()


@cache
def silent_opus() -> bytes:
    """One 20 ms Opus packet of silence (48 kHz mono, like the cameras' sound)."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = AUDIO_RATE
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.open()
    frame = av.AudioFrame.from_ndarray(np.zeros((1, OPUS_FRAME), np.int16), format="s16", layout="mono")
    frame.sample_rate = AUDIO_RATE
    frame.pts = 0
    return bytes(next(iter(encoder.encode(frame))))


class OpenCvSink:
    """cv2.VideoWriter fed with the shared frames (MJPG in AVI by default)."""

    def __init__(self, folder: Path, first: FrameJob, fps: float, fourcc: str, container: str,
                 create: Create) -> None:
        self.path, raw = create(folder, first.captured_us, container)
        raw.close()  # the name is ours now; VideoWriter reopens it by path
        self._fps = fps
        self._size = (first.width, first.height)
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*fourcc), fps, self._size)
        if not self._writer.isOpened():
            self._writer.release()
            self.path.unlink(missing_ok=True)
            raise RecordError(f"OpenCV cannot write {fourcc} in .{container} files")
        self._frames = 0
        self._bytes = 0
        self._last_stat = time.monotonic()

    @property
    def bytes_written(self) -> int:
        return self._bytes

    @property
    def duration(self) -> float:
        return self._frames / self._fps

    def write(self, job: Job) -> None:
        assert isinstance(job, FrameJob)
        if (job.width, job.height) != self._size:  # the recorder rolls over first; never mix sizes
            return
        self._writer.write(job.image)
        self._frames += 1
        now = time.monotonic()
        if now - self._last_stat >= SYNC_INTERVAL:
            self._last_stat = now
            self._bytes = self.path.stat().st_size

    def close(self) -> None:
        self._writer.release()
        try:
            self._bytes = self.path.stat().st_size
        except OSError:
            pass


def check_opencv_writer(folder: Path, fourcc: str, container: str, width: int, height: int,
                        fps: float) -> str | None:
    """Open a throwaway writer with these settings; None when it works, else why it does not.

    Called at startup, so a codec that cannot open is a clear error instead of empty files later.
    """
    if len(fourcc) != 4:
        return f"fourcc {fourcc!r} must be 4 characters"
    path = folder / f".camcast-check-{os.getpid()}.{container}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, (width, height))
    try:
        if not writer.isOpened():
            return f"OpenCV cannot write {fourcc} in .{container} files"
        writer.write(np.zeros((height, width, 3), np.uint8))
    finally:
        writer.release()
        size = path.stat().st_size if path.exists() else 0
        path.unlink(missing_ok=True)
    if size == 0:
        return f"OpenCV wrote an empty .{container} file with {fourcc}"
    return None

