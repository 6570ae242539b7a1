"""An http(s):// camera: an MJPEG stream or snapshot URL (its JPEGs passed on), else a video stream.

What the URL serves decides, when it opens: multipart JPEGs or a JPEG go to HttpMjpegSource; any
other answer (MPEG-TS, FLV, ...) is read through PyAV by StreamSource.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from camcast.sources.audio_stream import StreamAudio
from camcast.sources.base import JpegImage, Source, VideoPacket
from camcast.sources.mjpeg_http import HttpMjpegSource, NotJpegError
from camcast.sources.stream_source import StreamSource


class HttpSource:
    stamps = False

    def __init__(self, url: str, fps: float, pictures_wanted: Callable[[], bool],
                 audio: StreamAudio | None = None) -> None:
        self.url = url
        self._fps = fps
        self._pictures_wanted = pictures_wanted
        self._audio = audio  # an MJPEG camera has no sound; a video stream may
        self._source: Source = HttpMjpegSource(url, fps)
        self.description = self._source.description

    def open(self) -> None:
        try:
            self._source.open()
        except NotJpegError:
            self._source.close()
            self._source = StreamSource(self.url, self._fps, passthrough=True,
                                        pictures_wanted=self._pictures_wanted, audio=self._audio)
            self._source.open()
        self.description = self._source.description

    def read(self) -> np.ndarray | JpegImage | VideoPacket | None:
        return self._source.read()

    def close(self) -> None:
        self._source.close()
