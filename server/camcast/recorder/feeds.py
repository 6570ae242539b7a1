"""What a recorder records: the shared H.264 packets (mp4) or the shared frames (OpenCV).

A feed hides the difference from the recorder's state machine: which hub to subscribe to,
where a file may start (a keyframe; any frame for OpenCV), what starts a new chain (an
encoder generation; a new frame size), how to open a file and whether it takes sound.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from camcast.audio import AudioPacket
from camcast.frames import EncodedPacket, Frame
from camcast.hub import Hub, Subscription
from camcast.recorder.sinks import (
    AudioJob,
    Create,
    Fmp4Sink,
    FrameJob,
    Job,
    OpenCvSink,
    PacketJob,
    Sink,
)


class Feed(Protocol):
    kind: str
    fps: float
    supports_preroll: bool
    supports_audio: bool
    with_audio: bool  # set by the recorder when the camera has sound
    # How many jobs may wait for the writer before the recording stops ("disk too slow").
    max_pending: int

    def subscribe(self) -> Subscription[Any]: ...

    def is_key(self, item: Any) -> bool: ...

    def chain(self, item: Any) -> object: ...

    def request_keyframe(self) -> None: ...

    def backlog(self) -> list[Any]:
        """What a recording without pre-roll starts with: the items since the last keyframe when
        no keyframe can be asked for (a camera passed through), else nothing."""
        ...

    def job(self, item: Any) -> Job: ...

    def open_sink(self, folder: Path, job: Job, create: Create) -> Sink: ...


class PacketFeed:
    """Remux the shared encoder's H.264 packets into fragmented MP4 (no second encode)."""

    kind = "mp4"
    supports_preroll = True
    supports_audio = True

    def __init__(self, packets: Hub[EncodedPacket], force_keyframe: Callable[..., bool], fps: float,
                 backlog_seconds: float = 10.0,
                 since_keyframe: Callable[[], list[EncodedPacket]] = list) -> None:
        self._packets = packets
        self._force_keyframe = force_keyframe
        self._since_keyframe = since_keyframe
        self.fps = fps
        self.max_pending = max(30, round(fps * backlog_seconds))
        self.with_audio = False

    def subscribe(self) -> Subscription[EncodedPacket]:
        # Deep enough that the recorder never drops a packet while the loop is busy for a moment.
        return self._packets.subscribe(maxsize=max(60, round(self.fps * 4)))

    def is_key(self, item: EncodedPacket) -> bool:
        return item.keyframe

    def chain(self, item: EncodedPacket) -> object:
        return item.generation

    def request_keyframe(self) -> None:
        # Urgent: a recording begins at the press, not after the peers' keyframe rate limit.
        # Cheap to call on every packet until the keyframe comes: a pending request is reused.
        self._force_keyframe(urgent=True)

    def backlog(self) -> list[EncodedPacket]:
        return list(self._since_keyframe())

    def job(self, item: EncodedPacket) -> PacketJob:
        # bytes() copies the access unit: the writer thread then owns what it writes.
        return PacketJob(bytes(item.packet), int(item.packet.pts), item.keyframe, item.captured_us,
                         item.width, item.height)

    def open_sink(self, folder: Path, job: Job, create: Create) -> Sink:
        assert isinstance(job, PacketJob)
        return Fmp4Sink(folder, job, self.fps, create, audio=self.with_audio)


class FrameFeed:
    """Write the shared frames with cv2.VideoWriter (every frame can start a file)."""

    kind = "opencv"
    supports_preroll = False
    supports_audio = False
    with_audio = False

    def __init__(self, frames: Hub[Frame], fps: float, fourcc: str = "MJPG", container: str = "avi",
                 backlog_seconds: float = 2.0) -> None:
        self._frames = frames
        self.fps = fps
        self.fourcc = fourcc
        self.container = container
        self.max_pending = max(10, round(fps * backlog_seconds))  # raw frames are big

    def subscribe(self) -> Subscription[Frame]:
        return self._frames.subscribe(maxsize=max(10, round(self.fps)))

    def is_key(self, item: Frame) -> bool:
        return True

    def chain(self, item: Frame) -> object:
        return (item.width, item.height)

    def request_keyframe(self) -> None:
        pass

    def backlog(self) -> list[Frame]:
        return []

    def job(self, item: Frame) -> FrameJob:
        return FrameJob(item.image, item.captured_us, item.width, item.height)

    def open_sink(self, folder: Path, job: Job, create: Create) -> Sink:
        assert isinstance(job, FrameJob)
        return OpenCvSink(folder, job, self.fps, self.fourcc, self.container, create)


def audio_job(item: AudioPacket) -> AudioJob:
    return AudioJob(bytes(item.packet), int(item.packet.pts), item.captured_us)
