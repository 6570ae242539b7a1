"""MJPEG over HTTP: one shared JPEG per frame, fanned out to every client in one pass; the snapshot.

The fan-out holds a single subscription to the JPEG hub and, per frame, writes the same
pre-framed buffer straight to each client's socket. Per client that is one `transport.write`
and no task wake-up. A client whose socket still holds unsent bytes skips the frame (counted),
so it gets the newest picture when it catches up and never holds back the others.

`?width=` and `?quality=` pick a variant (camcast.mjpegvariants): the same fan-out over that
variant's own shared encoder. Without them a request takes exactly the path it always did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web

from camcast.appkeys import CAMERAS
from camcast.cameras import add_camera_route, camera_of
from camcast.encoding.jpeg import BOUNDARY, SharedJpegEncoder
from camcast.frames import JpegPart, now_us
from camcast.hub import Hub, HubClosed
from camcast.mjpegvariants import VariantKey, VariantUnavailable, requested_variant
from camcast.queryargs import float_arg
from camcast.viewers import Viewers

if TYPE_CHECKING:
    from camcast.camera import Camera

log = logging.getLogger("camcast.mjpeg")

STALLED_CLIENT_SECONDS = 30.0

_NO_CACHE = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"}


class MjpegClient:
    __slots__ = ("busy_since", "chunked", "done", "dropped", "min_interval", "next_due", "stall_limit",
                 "transport")

    def __init__(self, transport: asyncio.Transport, min_interval: float, chunked: bool,
                 stall_limit: float = STALLED_CLIENT_SECONDS) -> None:
        self.transport = transport
        self.stall_limit = stall_limit
        self.min_interval = min_interval  # from ?fps=N; 0 means every frame
        self.next_due = 0.0
        self.chunked = chunked  # HTTP/1.1 responses are chunked; HTTP/1.0 ones are raw
        self.dropped = 0
        self.busy_since = 0.0  # when its socket last became too full to take a frame
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def send(self, part: JpegPart, now: float) -> int:
        """Write this part if due and the socket is free; the number of bytes written."""
        if self.min_interval and now < self.next_due:
            return 0
        if self.transport.get_write_buffer_size():
            self.dropped += 1  # still sending an older frame: skip to a newer one
            if not self.busy_since:
                self.busy_since = now
            elif now - self.busy_since > self.stall_limit:
                # Took nothing for this long: gone without a reset (pulled cable, dead NAT entry).
                self.transport.abort()
            return -1
        self.busy_since = 0.0
        if self.min_interval:
            # Only a frame written counts (a skipped one must not push the next further out).
            # Scheduled from the due time, with slack for capture jitter, so ?fps=N gives N.
            self.next_due = max(self.next_due + self.min_interval, now + self.min_interval * 0.5)
        self.transport.write(part.http_chunk if self.chunked else part.chunk)
        return len(part.chunk)


class MjpegFanout:
    def __init__(self, parts: Hub[JpegPart], viewers: Viewers, fps: float) -> None:
        self._parts = parts
        self._viewers = viewers
        self._fps = fps
        self._clients: list[MjpegClient] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.dropped = 0  # frames skipped for clients that were behind

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def add(self, client: MjpegClient) -> None:
        if self._closed or self._parts.closed:
            client.finish()
            return
        latest = self._parts.latest
        # A fresh frame goes out at once: a new client need not wait for the next capture.
        if latest is not None and now_us() - latest.captured_us < 1_000_000 / self._fps:
            self._viewers.sent("mjpeg", max(0, client.send(latest, time.monotonic())))
        self._clients.append(client)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mjpeg-fanout")

    def remove(self, client: MjpegClient) -> None:
        with contextlib.suppress(ValueError):
            self._clients.remove(client)
        client.finish()

    async def _run(self) -> None:
        # The subscription lives while anyone watches: it is what keeps the JPEG encoder running.
        with self._parts.subscribe(maxsize=1) as parts:
            try:
                while self._clients:
                    self._send(await parts.get())
            except HubClosed:
                pass
            finally:
                for client in self._clients:
                    client.finish()

    def _send(self, part: JpegPart) -> None:
        now = time.monotonic()
        sent = 0
        gone: list[MjpegClient] = []
        for client in self._clients:
            if client.transport.is_closing():
                gone.append(client)
                continue
            written = client.send(part, now)
            if written > 0:
                sent += written
            elif written < 0:
                self.dropped += 1
        for client in gone:
            self.remove(client)
        self._viewers.sent("mjpeg", sent)

    async def close(self) -> None:
        self._closed = True
        for client in list(self._clients):
            self.remove(client)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _who(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peer[0]}:{peer[1]}" if peer else "unknown"


@contextlib.contextmanager
def _outputs_of(camera: Camera, key: VariantKey | None) -> Iterator[tuple[MjpegFanout, SharedJpegEncoder]]:
    """The camera's own fan-out and encoder, or those of the variant `key` while the block runs."""
    if key is None:
        yield camera.mjpeg, camera.jpeg_encoder
        return
    try:
        with camera.mjpeg_variants.lease(key) as variant:
            yield variant.fanout, variant.encoder
    except VariantUnavailable as exc:
        raise web.HTTPServiceUnavailable(text=f"{exc}\n") from None


def _variant_of(request: web.Request, camera: Camera) -> VariantKey | None:
    return requested_variant(request, camera.current_size[0], camera.settings.jpeg_quality)


async def mjpeg_handler(request: web.Request) -> web.StreamResponse:
    camera = camera_of(request)
    fps_cap = float_arg(request, "fps", 0.1, 240)
    key = _variant_of(request, camera)
    if request.method == "HEAD":
        key = None  # a HEAD gets the headers only: no variant starts for it
    with _outputs_of(camera, key) as (fanout, _):
        return await _stream(request, camera, fanout, fps_cap)


async def _stream(request: web.Request, camera: Camera, fanout: MjpegFanout,
                  fps_cap: float | None) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        "X-Accel-Buffering": "no",  # tell reverse proxies not to buffer an endless response
        **_NO_CACHE,
    })
    await response.prepare(request)
    transport = request.transport
    if request.method == "HEAD" or transport is None:
        return response
    await response.write(f"--{BOUNDARY}\r\n".encode())
    chunked = response.headers.get("Transfer-Encoding", "").lower() == "chunked"
    client = MjpegClient(transport, 1.0 / fps_cap if fps_cap else 0.0, chunked)  # type: ignore[arg-type]
    with camera.viewers.watching("mjpeg", _who(request)):
        fanout.add(client)
        try:
            await client.done
        finally:
            fanout.remove(client)
    return response


async def snapshot_handler(request: web.Request) -> web.Response:
    camera = camera_of(request)
    with _outputs_of(camera, _variant_of(request, camera)) as (_, encoder):
        part = await camera.snapshot(encoder)
    if part is None:
        raise web.HTTPServiceUnavailable(text="no frame yet\n")
    return web.Response(body=part.jpeg, content_type="image/jpeg",
                        headers={"X-Timestamp": f"{part.captured_us / 1e6:.6f}", **_NO_CACHE})


async def _end_endless_responses(app: web.Application) -> None:
    # MJPEG responses never end by themselves: ending the fan-outs lets every handler return.
    for camera in app[CAMERAS]:
        await camera.mjpeg.close()
        await camera.mjpeg_variants.close()


def add_mjpeg(app: web.Application) -> None:
    """The MJPEG stream and the snapshot of every camera (the fan-outs live in the cameras)."""
    app.on_shutdown.append(_end_endless_responses)
    add_camera_route(app, "GET", "/video.mjpg", mjpeg_handler)
    add_camera_route(app, "GET", "/snapshot.jpg", snapshot_handler)
