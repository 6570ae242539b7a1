"""Turn a --source value into a Source."""

from __future__ import annotations

import logging

import cv2

from camcast.sources.base import Source, SourceError
from camcast.sources.opencv_source import OpenCVSource
from camcast.sources.testpattern import TestPattern

log = logging.getLogger("camcast.source")


def make_source(spec: str, width: int, height: int, fps: float, stamp: bool, label: str = "") -> Source:
    """`label` names the camera on the test pattern (real cameras show what they see)."""
    if spec == "testpattern":
        return TestPattern(width, height, fps, label)
    return OpenCVSource(spec, width, height, fps, stamp=stamp)


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


__all__ = ["SourceError", "make_source", "open_source_spec", "resolve_source"]
