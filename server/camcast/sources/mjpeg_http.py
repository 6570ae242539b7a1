"""A camera that already speaks JPEG over HTTP: its pictures pass through as the bytes it sent.

Two kinds of URL: an MJPEG stream (multipart/x-mixed-replace: another camcast, an IP camera, an
ESP32-CAM), read part by part at the camera's own rate; or a snapshot URL that answers one JPEG
per GET (`/snapshot.jpg`), fetched again at `fps`. Blocking stdlib HTTP, since it runs in the
capture thread; every socket wait is bounded by `timeout`, so a camera that goes silent makes
read() return None instead of hanging, and close() from another thread wakes a read at once.
"""

from __future__ import annotations

import base64
import http.client
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from camcast.sources.base import JpegImage, SourceError
from camcast.sources.multipart_jpeg import (
    EOI,
    MAX_PART_BYTES,
    SOI,
    MultipartError,
    MultipartJpegParser,
    boundary_of,
)

log = logging.getLogger("camcast.source")

MAX_REDIRECTS = 5
READ_SIZE = 64 * 1024
JPEG_TYPES = ("image/jpeg", "image/jpg", "image/pjpeg")
# No Content-Type, or one that says nothing: the first bytes tell a JPEG from a multipart body.
UNTYPED = ("", "application/octet-stream", "binary/octet-stream")


@dataclass(frozen=True)
class _Target:
    url: str
    parts: SplitResult
    auth: str | None  # the Authorization header value, from user:pass@ in the URL


def _target(url: str, auth: str | None = None) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceError(f"{redact(url)}: not an http:// or https:// URL")
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return _Target(url, parts, auth)


def redact(url: str) -> str:
    """The URL with its password replaced by ***, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


class NotJpegError(SourceError):
    """The URL answers, with something other than JPEGs (a video stream PyAV may read)."""


class HttpMjpegSource:
    """Source protocol (camcast.sources.base): open(), read() -> JpegImage | None, close()."""

    stamps = False  # the camera's pictures pass through untouched: no stamp can be drawn on them

    def __init__(self, url: str, fps: float = 10.0, timeout: float = 5.0,
                 max_part: int = MAX_PART_BYTES, ssl_context: ssl.SSLContext | None = None) -> None:
        self.url = url
        self.description = redact(url)
        self.fps = fps  # snapshot URLs only: a stream comes at the camera's own rate
        self.timeout = timeout
        self.max_part = max_part
        self.ssl_context = ssl_context
        self.mode = ""  # "stream" or "snapshot" once open
        self.last_error = ""  # why the last read() returned None ("" when it was closed)
        self._target: _Target | None = None  # the URL checked by open() (never here: make() must not raise)
        self._conn: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None
        self._parser: MultipartJpegParser | None = None
        self._pending: bytes | None = None  # the snapshot open() fetched, handed out first
        self._next_due = 0.0
        self._closed = threading.Event()
        self._io = threading.Lock()  # held by open()/read() while they use the connection

    # -- Source ----------------------------------------------------------------------------------
    def open(self) -> None:
        with self._io:
            if self._closed.is_set():
                raise SourceError(f"{self.description}: closed")
            self._target = _target(self.url)
            try:
                self._open()
            except SourceError:
                self._drop_connection()
                raise
            except TimeoutError:
                self._drop_connection()
                raise SourceError(f"{self._where()}: nothing received for {self.timeout:g} s") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                raise SourceError(f"{self._where()}: {exc or type(exc).__name__}") from None

    def _open(self) -> None:
        response = self._get()
        content_type = response.getheader("Content-Type", "")
        kind = _media_type(content_type)
        first = b""
        if kind in UNTYPED:  # the first bytes tell a JPEG from a multipart body
            first = self._first_bytes(response)
            kind = "image/jpeg" if first.startswith(SOI) else "multipart/x-mixed-replace"
        if kind.startswith("multipart/"):
            self.mode = "stream"
            self._parser = MultipartJpegParser(boundary_of(content_type), self.max_part)
            self._parser.feed(first)
        elif kind in JPEG_TYPES:
            self.mode = "snapshot"
            self._pending = self._whole_jpeg(response, first)
            self._next_due = time.monotonic() + 1.0 / self.fps  # this GET was the first tick
        else:
            raise NotJpegError(f"{self._where()}: Content-Type {kind!r} is neither an MJPEG stream "
                               "(multipart/x-mixed-replace) nor a JPEG")

    def read(self) -> JpegImage | None:
        try:
            with self._io:
                if self._closed.is_set() or not self.mode:
                    return None  # closed, or never opened
                data = self._read_stream() if self.mode == "stream" else self._read_snapshot()
        except SourceError as exc:
            return self._failed(str(exc))
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # Also what a read woken by close() from another thread sees: a shut-down socket.
            if self._closed.is_set():
                return None
            if isinstance(exc, TimeoutError):
                return self._failed(f"{self.description}: nothing received for {self.timeout:g} s")
            return self._failed(f"{self.description}: {exc or type(exc).__name__}")
        if data is None:
            return self._failed("" if self._closed.is_set() else f"{self.description}: the stream ended")
        return JpegImage(data)

    def close(self) -> None:
        self._closed.set()
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a read() blocked in another thread
            except OSError:
                pass
        # The reader lets go of the connection as soon as its socket is shut down.
        if self._io.acquire(timeout=self.timeout + 1.0):
            try:
                self._drop_connection()
            finally:
                self._io.release()
        else:
            self._drop_connection()

    # -- reading ---------------------------------------------------------------------------------
    def _read_stream(self) -> bytes | None:
        parser, response = self._parser, self._response
        if parser is None or response is None:
            return None  # not open
        try:
            while (jpeg := parser.next_jpeg()) is None:
                if parser.ended:
                    return None
                chunk = response.read1(READ_SIZE)
                if not chunk:
                    return None
                parser.feed(chunk)
        except MultipartError as exc:
            raise SourceError(f"{self.description}: {exc}") from None
        return jpeg

    def _read_snapshot(self) -> bytes | None:
        if self._pending is not None:
            jpeg, self._pending = self._pending, None
            return jpeg
        # At `fps` from a fixed start (no drift); after a slow GET the ticks it missed are skipped,
        # so the next ones do not bunch up behind it.
        interval, now = 1.0 / self.fps, time.monotonic()
        if self._next_due > now:
            if self._closed.wait(self._next_due - now):
                return None
            self._next_due += interval
        else:
            self._next_due += (int((now - self._next_due) / interval) + 1) * interval
        response = self._get(reuse=True)
        kind = _media_type(response.getheader("Content-Type", ""))
        if kind not in JPEG_TYPES and kind not in UNTYPED:
            raise SourceError(f"{self._where()}: Content-Type {kind!r} is not a JPEG")
        return self._whole_jpeg(response, b"")

    def _whole_jpeg(self, response: http.client.HTTPResponse, first: bytes) -> bytes:
        length = response.length  # None without Content-Length (and for a chunked body)
        if length is not None and length + len(first) > self.max_part:
            raise SourceError(f"{self._where()}: a JPEG of {length + len(first)} bytes is over the "
                              f"limit of {self.max_part}")
        data = bytearray(first)
        while chunk := response.read1(READ_SIZE):
            data += chunk
            if len(data) > self.max_part:
                raise SourceError(f"{self._where()}: a JPEG of more than {self.max_part} bytes")
        response.close()  # read to its end: the kept-alive connection is free for the next GET
        if not data.startswith(SOI):
            raise SourceError(f"{self._where()}: the body is not a JPEG (starts with {bytes(data[:8])!r})")
        if not data.rstrip(b"\r\n\x00").endswith(EOI):
            raise SourceError(f"{self._where()}: the JPEG is cut short (no end marker)")
        if response.will_close:
            self._drop_connection()
        return bytes(data)

    # -- HTTP ------------------------------------------------------------------------------------
    def _get(self, reuse: bool = False) -> http.client.HTTPResponse:
        """GET the URL, following redirects: the 200 response, its body not read yet."""
        target = self._target
        assert target is not None, "open() first"
        for _ in range(MAX_REDIRECTS + 1):
            response = self._request(target, reuse)
            reuse = False
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                location = urljoin(target.url, response.getheader("Location", ""))
                new = urlsplit(location)
                same_origin = ((new.scheme, new.hostname, new.port)
                               == (target.parts.scheme, target.parts.hostname, target.parts.port))
                # Credentials follow a redirect on the same origin only, never to another host.
                target = _target(location, target.auth if same_origin else None)
                self._drop_connection()
                continue
            if response.status != 200:
                self._fail_status(target, response)
            self._target = target  # a redirect is followed once, not on every snapshot
            return response
        raise SourceError(f"{self.description}: more than {MAX_REDIRECTS} redirects")

    def _first_bytes(self, response: http.client.HTTPResponse) -> bytes:
        try:
            return response.read1(READ_SIZE)
        except TimeoutError:
            raise SourceError(f"{self._where()}: no data within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise SourceError(f"{self._where()}: {exc or type(exc).__name__}") from None

    def _request(self, target: _Target, reuse: bool) -> http.client.HTTPResponse:
        headers = {"User-Agent": "camcast", "Accept": "multipart/x-mixed-replace, image/jpeg, */*"}
        if target.auth:
            headers["Authorization"] = target.auth
        path = target.parts.path or "/"
        if target.parts.query:
            path += "?" + target.parts.query
        if reuse and self._conn is not None:
            try:  # a kept-alive connection to a snapshot URL; the camera may have closed it meanwhile
                self._conn.request("GET", path, headers=headers)
                self._response = self._conn.getresponse()
                return self._response
            except TimeoutError:
                raise  # a camera that is slow to answer is not one that dropped the connection
            except (OSError, http.client.HTTPException):
                if self._closed.is_set():
                    raise
        self._drop_connection()
        self._conn = self._connect(target)
        try:
            self._conn.request("GET", path, headers=headers)
            self._response = self._conn.getresponse()
        except TimeoutError:
            raise SourceError(f"{redact(target.url)}: no answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            if self._closed.is_set():
                raise SourceError(f"{self.description}: closed") from None
            raise SourceError(f"{redact(target.url)}: {exc or type(exc).__name__}") from None
        return self._response

    def _connect(self, target: _Target) -> http.client.HTTPConnection:
        host, port = target.parts.hostname or "", target.parts.port
        conn: http.client.HTTPConnection
        if target.parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        self._conn = conn  # close() can reach it while it connects
        try:
            conn.connect()
        except TimeoutError:
            raise SourceError(f"{redact(target.url)}: no connection within {self.timeout:g} s") from None
        except ssl.SSLError as exc:
            raise SourceError(f"{redact(target.url)}: TLS failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise SourceError(f"{redact(target.url)}: cannot connect: {exc.strerror or exc}") from None
        if self._closed.is_set():
            conn.close()
            raise SourceError(f"{self.description}: closed")
        return conn

    def _fail_status(self, target: _Target, response: http.client.HTTPResponse) -> None:
        where = f"{redact(target.url)}: {response.status} {response.reason}".rstrip()
        self._drop_connection()
        if response.status == 401:
            challenge = response.getheader("WWW-Authenticate", "")
            if challenge.lower().startswith("digest"):
                raise SourceError(f"{where} (the camera asks for Digest authentication; only Basic "
                                  "is supported)")
            if target.auth:
                raise SourceError(f"{where} (the user and password in the URL were refused)")
            raise SourceError(f"{where} (put the camera's user and password in the URL: "
                              "http://USER:PASSWORD@host/...)")
        raise SourceError(where)

    def _where(self) -> str:
        """The URL answering now (after redirects), password hidden."""
        return redact(self._target.url) if self._target else self.description

    def _failed(self, reason: str) -> None:
        self.last_error = reason
        if reason:
            log.warning("%s", reason)
        return None

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._response = None
        if conn is not None:
            conn.close()
