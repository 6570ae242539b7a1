"""The recorder: one per camera, started and stopped by any viewer, shared by all of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from camcast.control import Message
from camcast.recorder.core import Recorder, RecorderSettings
from camcast.recorder.feeds import Feed, FrameFeed, PacketFeed
from camcast.recorder.routes import add_recorder_routes
from camcast.recorder.sinks import RecordError, check_opencv_writer
from camcast.recorder.storage import FolderError, prepare_folder

if TYPE_CHECKING:
    from camcast.camera import Camera

BACKENDS = ("mp4", "opencv")

__all__ = [
    "BACKENDS", "FolderError", "RecordError", "Recorder", "RecorderSettings", "add_recorder_routes",
    "check_opencv_writer", "make_recorder", "prepare_folder",
]


def make_recorder(camera: Camera, settings: RecorderSettings, notify: Callable[[Message], None],
                  backend: str = "mp4", fourcc: str = "MJPG", container: str = "avi") -> Recorder:
    """mp4: remux the camera's shared H.264 packets; opencv: cv2.VideoWriter on its frames."""
    fps = camera.settings.fps
    feed: Feed
    if backend == "opencv":
        feed = FrameFeed(camera.frames, fps, fourcc, container)
    elif backend == "mp4":
        # A camera passed through cannot make a keyframe at the press: the file starts at its last one.
        feed = PacketFeed(camera.packets["h264"], camera.video_encoders["h264"].force_keyframe, fps,
                          since_keyframe=lambda: camera.passthrough.gop if camera.passthrough.h264 else [])
    else:
        raise ValueError(f"unknown recorder backend {backend!r}")
    return Recorder(feed, settings, notify, audio=camera.audio)
