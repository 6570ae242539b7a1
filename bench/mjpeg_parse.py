"""An incremental, cheap parser of an MJPEG HTTP response (multipart/x-mixed-replace).

It handles the HTTP head, chunked transfer coding, and parts with Content-Length: part bodies are
skipped by counting bytes, never scanned, and copied only when the caller wants one (a sample).
"""

from __future__ import annotations

import re
from collections.abc import Callable

_CONTENT_LENGTH = re.compile(rb"content-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"transfer-encoding:[ \t]*chunked", re.IGNORECASE)
_MAX_HEAD = 16 * 1024
_HEAD_WINDOW = 2048  # bytes looked at per step while searching for the end of a head


class MjpegParseError(Exception):
    pass


class MjpegParser:
    """feed() bytes as they arrive; on_part(jpeg or None) runs as each part's last byte arrives.

    `want_body()` is asked when a part starts: True to get that part's bytes (for a stamp sample).
    """

    def __init__(self, on_part: Callable[[bytes | None], None], want_body: Callable[[], bool]) -> None:
        self._on_part = on_part
        self._want_body = want_body
        self.status = 0
        self._in_http_head = True
        self._http_head = bytearray()
        self._chunked = False
        self._chunk_left = 0  # payload bytes left in the current chunk
        self._chunk_state = "size"  # size | data | crlf
        self._chunk_line = bytearray()
        self._crlf_left = 0
        self._part_head = bytearray()
        self._body_left = -1  # -1: reading a part head
        self._body: bytearray | None = None
        self.ended = False

    def feed(self, data: memoryview) -> None:
        if self._in_http_head:
            data = self._http(data)
            if not data:
                return
        if self._chunked:
            self._dechunk(data)
        else:
            self._multipart(data)

    def _http(self, data: memoryview) -> memoryview:
        before = len(self._http_head)
        self._http_head += data
        end = self._http_head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._http_head) > _MAX_HEAD:
                raise MjpegParseError("HTTP head too long")
            return memoryview(b"")
        head = bytes(self._http_head[:end])
        self._in_http_head = False
        self._http_head = bytearray()
        try:
            self.status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise MjpegParseError(f"bad status line: {head[:80]!r}") from None
        if self.status != 200:
            raise MjpegParseError(f"HTTP {self.status}")
        self._chunked = _CHUNKED.search(head) is not None
        return data[end + 4 - before :]

    def _dechunk(self, data: memoryview) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._chunk_state == "data":
                take = min(self._chunk_left, n - i)
                self._multipart(data[i : i + take])
                i += take
                self._chunk_left -= take
                if self._chunk_left == 0:
                    self._chunk_state, self._crlf_left = "crlf", 2
            elif self._chunk_state == "crlf":
                take = min(self._crlf_left, n - i)
                i += take
                self._crlf_left -= take
                if self._crlf_left == 0:
                    self._chunk_state = "size"
            else:
                window = bytes(data[i : i + 64])
                j = window.find(b"\n")
                if j < 0:
                    self._chunk_line += window
                    i += len(window)
                    if len(self._chunk_line) > 1024:
                        raise MjpegParseError("chunk size line too long")
                    continue
                self._chunk_line += window[: j + 1]
                i += j + 1
                size = int(bytes(self._chunk_line).split(b";")[0].strip(), 16)
                self._chunk_line.clear()
                if size == 0:
                    self.ended = True
                    return
                self._chunk_left, self._chunk_state = size, "data"

    def _multipart(self, data: memoryview) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._body_left > 0:
                take = min(self._body_left, n - i)
                if self._body is not None:
                    self._body += data[i : i + take]
                i += take
                self._body_left -= take
                if self._body_left == 0:
                    self._finish_part()
                continue
            window = data[i : i + _HEAD_WINDOW]
            before = len(self._part_head)
            self._part_head += window
            end = self._part_head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._part_head) > _MAX_HEAD:
                    raise MjpegParseError("part head too long")
                i += len(window)
                continue
            i += end + 4 - before
            match = _CONTENT_LENGTH.search(self._part_head, 0, end)
            if match is None:
                raise MjpegParseError("part without Content-Length")
            self._body_left = int(match.group(1))
            self._part_head.clear()
            self._body = bytearray() if self._want_body() else None
            if self._body_left == 0:
                self._finish_part()

    def _finish_part(self) -> None:
        body, self._body = self._body, None
        self._body_left = -1
        self._on_part(bytes(body) if body is not None else None)
