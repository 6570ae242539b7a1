"""A tiny HTTP camera that serves known JPEG bytes the ways real cameras do, right and wrong.

Routes (query arguments of /stream):
- `/stream`: multipart/x-mixed-replace of `jpegs`, in turn, `count` parts then the closing delimiter
  (`count=0`: endless, at `fps`). `boundary=B` (default `frame`); `quoted=1` quotes it in the
  Content-Type; `header_dashes=1` puts "--" in the header value as well (the body lines stay
  "--B"); `bare=1` writes delimiter lines without "--"; `noboundary=1` leaves the boundary out of
  the Content-Type; `length=0` leaves Content-Length out; `length=wrong` sends one 10 bytes short;
  `headers=0` sends no part headers at all; `blank=1` puts an extra CRLF before each picture;
  `trap=1` sends `trap` (a JPEG with a delimiter line inside) before them.
- `/snapshot.jpg`: one JPEG per GET, the next one each time (`snapshot_hits` counts them).
- `/private/stream`, `/private/snapshot.jpg`: the same behind Basic auth `USER`:`PASSWORD`.
- `/digest`: 401 asking for Digest auth. `/redirect` → 302 to `/stream?...` (query kept), and
  `/private/redirect` → `/private/stream?...`.
- `/html`: a web page. `/notjpeg`: a multipart stream whose parts are PNGs.
- `/endless`: one part without Content-Length or boundary that never ends (random bytes).
- `/stall`: a boundary, part headers and half a JPEG, then nothing until the camera stops.
- `/silent`: accepts the request and never answers.

`raw_url` is a second, hand-written HTTP/1.0 server, like an old IP camera's: no chunked
encoding, boundary `--myboundary` in the header and "--myboundary" lines in the body, `count`
parts (`/?count=N`) and then the connection closes without a closing delimiter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator

import cv2
import numpy as np
from aiohttp import web

USER, PASSWORD = "admin", "p@ss:word"


def make_jpegs(count: int = 3, width: int = 160, height: int = 120) -> list[bytes]:
    """Distinct JPEGs of noise (so their bytes hold every value, CR and LF included)."""
    jpegs = []
    rng = np.random.default_rng(7)
    for i in range(count):
        image = rng.integers(0, 256, (height, width, 3), np.uint8)
        cv2.putText(image, str(i), (10, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70 + i * 10])
        assert ok
        jpegs.append(encoded.tobytes())
    return jpegs


def with_delimiter_inside(jpeg: bytes, boundary: str = "frame") -> bytes:
    """The JPEG with a comment that looks like a delimiter line and part headers: only a reader
    that honours Content-Length reads it whole."""
    comment = f"\r\n--{boundary}\r\nContent-Type: image/jpeg\r\n\r\n".encode()
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment  # a COM segment
    return jpeg[:2] + segment + jpeg[2:]


class MjpegCamera:
    def __init__(self, jpegs: list[bytes], fps: float = 50.0) -> None:
        self.jpegs = jpegs
        self.trap = with_delimiter_inside(jpegs[0])
        self.fps = fps
        self.snapshot_hits = 0
        self.url = ""
        self.raw_url = ""
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @contextlib.asynccontextmanager
    async def running(self, ssl_context: object = None) -> AsyncIterator[MjpegCamera]:
        app = web.Application()
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/snapshot.jpg", self._snapshot)
        app.router.add_get("/private/stream", self._private(self._stream))
        app.router.add_get("/private/snapshot.jpg", self._private(self._snapshot))
        app.router.add_get("/private/redirect", self._private(self._redirect))
        app.router.add_get("/digest", self._digest)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/html", self._html)
        app.router.add_get("/notjpeg", self._not_jpeg)
        app.router.add_get("/endless", self._endless)
        app.router.add_get("/stall", self._stall)
        app.router.add_get("/silent", self._silent)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)  # type: ignore[arg-type]
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        raw = await asyncio.start_server(self._raw, "127.0.0.1", 0)
        self.raw_url = f"http://127.0.0.1:{raw.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            self._stop.set()  # ends the endless handlers
            raw.close()
            await raw.wait_closed()
            await self._runner.cleanup()

    async def _raw(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            query = request.split(b" ", 2)[1].partition(b"?count=")[2]
            count = int(query or b"3")
            writer.write(b"HTTP/1.0 200 OK\r\nServer: old-camera\r\n"
                         b"Content-Type: multipart/x-mixed-replace;boundary=--myboundary\r\n\r\n")
            for i in range(count):
                jpeg = self.jpegs[i % len(self.jpegs)]
                writer.write(b"--myboundary\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                             % len(jpeg) + jpeg + b"\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    # -- handlers --------------------------------------------------------------------------------
    async def _stream(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        boundary = q.get("boundary", "frame")
        value = ("--" + boundary) if q.get("header_dashes") == "1" else boundary
        if q.get("quoted") == "1":
            value = f'"{value}"'
        content_type = "multipart/x-mixed-replace"
        if q.get("noboundary") != "1":
            content_type += f"; boundary={value}"
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):  # the reader may leave at any time
            delimiter = (boundary if q.get("bare") == "1" else "--" + boundary).encode()
            count = int(q.get("count", "0"))
            sent = 0
            jpegs = [self.trap, *self.jpegs] if q.get("trap") == "1" else self.jpegs
            while not count or sent < count:
                jpeg = jpegs[sent % len(jpegs)]
                head = b"" if sent else b"preamble that readers skip\r\n"
                head += delimiter + b"\r\n"
                if q.get("headers") != "0":
                    head += b"Content-Type: image/jpeg\r\n"
                    if q.get("length", "1") == "1":
                        head += b"Content-Length: %d\r\n" % len(jpeg)
                    elif q.get("length") == "wrong":
                        head += b"Content-Length: %d\r\n" % (len(jpeg) - 10)
                    head += b"\r\n"
                if q.get("blank") == "1":
                    head += b"\r\n"
                await response.write(head + jpeg + b"\r\n")
                sent += 1
                if not count:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), 1 / self.fps)
                    if self._stop.is_set():
                        break
            await response.write(delimiter + b"--\r\n")
            await response.write_eof()
        return response

    async def _snapshot(self, request: web.Request) -> web.Response:
        jpeg = self.jpegs[self.snapshot_hits % len(self.jpegs)]
        self.snapshot_hits += 1
        return web.Response(body=jpeg, content_type="image/jpeg")

    def _private(self, handler):  # type: ignore[no-untyped-def]
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

        async def guarded(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Authorization") != expected:
                raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="camera"'})
            return await handler(request)

        return guarded

    async def _digest(self, request: web.Request) -> web.Response:
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Digest realm="camera", nonce="abc"'})

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{request.path.replace('redirect', 'stream')}?{request.query_string}")

    async def _html(self, request: web.Request) -> web.Response:
        return web.Response(text="<html>login</html>", content_type="text/html")

    async def _not_jpeg(self, request: web.Request) -> web.StreamResponse:
        _, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
        response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=b"})
        await response.prepare(request)
        await response.write(b"--b\r\nContent-Type: image/png\r\n\r\n" + png.tobytes() + b"\r\n--b\r\n")
        await self._stop.wait()
        return response

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=b"})
        await response.prepare(request)
        await response.write(b"--b\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8")
        with contextlib.suppress(ConnectionError):
            while not self._stop.is_set():
                await response.write(os.urandom(64 * 1024).replace(b"\n", b"x"))
        return response

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame"})
        await response.prepare(request)
        jpeg = self.jpegs[1]
        await response.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                             + jpeg[: len(jpeg) // 2])
        await self._stop.wait()
        return response

    async def _silent(self, request: web.Request) -> web.Response:
        await self._stop.wait()
        return web.Response(status=204)
