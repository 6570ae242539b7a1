"""Turn a --source value into a Source."""

from __future__ import annotations

import logging
from collections.abc import Callable

import cv2

from camcast.sources.audio_stream import StreamAudio
from camcast.sources.base import Source, SourceError
from camcast.sources.http_source import HttpSource
from camcast.sources.opencv_source import OpenCVSource
from camcast.sources.stream_source import StreamSource, is_stream_url
from camcast.sources.testpattern import TestPattern
from camcast.sources.uvc_mjpeg import UvcMjpegSource

log = logging.getLogger("camcast.source")


def may_pass_through(spec: str, stamp: bool, transcode: bool) -> bool:
    """Whether a source may send its own H.264 or JPEGs on (a stream or a file, neither stamped
    nor asked to transcode): a stamp is drawn on decoded pictures, which then need an encode."""
    if spec.startswith("mjpeg:"):
        return True
    if transcode or stamp or _is_device(spec):
        return False
    return is_stream_url(spec) or "://" not in spec


def make_source(spec: str, width: int, height: int, fps: float, stamp: bool, label: str = "", *,
                flash: bool = False,
                transcode: bool = False, pictures_wanted: Callable[[], bool] = lambda: True,
                rtsp_transport: str = "tcp", audio: StreamAudio | None = None) -> Source:
    """`label` names the camera on the test pattern (real cameras show what they see).
    `pictures_wanted` says when a camera that encodes must be decoded too; `audio` takes a stream's
    own sound."""
    if spec == "testpattern":
        return TestPattern(width, height, fps, label, flash=flash)
    if spec.startswith("mjpeg:"):  # a UVC camera in its MJPG mode: its JPEGs as they are
        return UvcMjpegSource(spec.removeprefix("mjpeg:"), width, height, fps)
    if may_pass_through(spec, stamp, transcode):
        if spec.lower().startswith(("http://", "https://")):
            return HttpSource(spec, fps, pictures_wanted, audio=audio)
        return StreamSource(spec, fps, passthrough=True, pictures_wanted=pictures_wanted,
                            rtsp_transport=rtsp_transport, audio=audio)
    if transcode and not stamp and (is_stream_url(spec) or "://" not in spec) and not _is_device(spec):
        # Decoded with PyAV all the same (TCP or UDP as asked, no probing delay), then encoded.
        return StreamSource(spec, fps, passthrough=False, pictures_wanted=pictures_wanted,
                            rtsp_transport=rtsp_transport, audio=audio)
    return OpenCVSource(spec, width, height, fps, stamp=stamp)


def _is_device(spec: str) -> bool:
    return spec in ("testpattern", "auto") or spec.isdigit() or spec.startswith("/dev/")


def _camera_zero_opens() -> bool:
    capture = cv2.VideoCapture(0)
    try:
        return bool(capture.isOpened()) and capture.read()[0]
    finally:
        capture.release()


def resolve_source(spec: str) -> str:
    """`auto` becomes camera 0 when it opens, else the test pattern (said in the log)."""
    if spec != "auto":
        return spec
    if _camera_zero_opens():
        log.info("source auto: using camera 0")
        return "0"
    log.info("source auto: no camera 0, using the test pattern")
    return "testpattern"


def open_source_spec(spec: str, width: int, height: int, fps: float, stamp: bool) -> None:
    """Check that a source opens (for a clear startup error); raises SourceError."""
    source = make_source(spec, width, height, fps, stamp)
    try:
        source.open()
    finally:
        source.close()


__all__ = ["SourceError", "make_source", "may_pass_through", "open_source_spec", "resolve_source"]
