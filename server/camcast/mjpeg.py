"""MJPEG over HTTP: one shared JPEG per frame, written to every client; and the snapshot."""

from __future__ import annotations

import time

from aiohttp import web

from camcast.appkeys import STREAM
from camcast.encoding.jpeg import BOUNDARY
from camcast.frames import now_us
from camcast.queryargs import float_arg

_NO_CACHE = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"}


def _who(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peer[0]}:{peer[1]}" if peer else "unknown"


async def mjpeg_handler(request: web.Request) -> web.StreamResponse:
    stream = request.app[STREAM]
    fps_cap = float_arg(request, "fps", 0.1, 240)
    min_interval = 1.0 / fps_cap if fps_cap else 0.0
    response = web.StreamResponse(headers={
        "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        "X-Accel-Buffering": "no",  # tell reverse proxies not to buffer an endless response
        **_NO_CACHE,
    })
    await response.prepare(request)
    if request.method == "HEAD":
        return response  # headers only: parts written straight to the socket below would be a body
    await response.write(f"--{BOUNDARY}\r\n".encode())
    transport = request.transport
    chunked = response.headers.get("Transfer-Encoding", "").lower() == "chunked"
    latest = stream.jpeg.latest
    # A fresh frame goes out at once: a new client need not wait for the next capture.
    fresh = latest is not None and now_us() - latest.captured_us < 1_000_000 / stream.settings.fps
    next_due = 0.0
    with stream.viewers.watching("mjpeg", _who(request)), \
            stream.jpeg.subscribe(maxsize=1, replay_latest=fresh) as parts:
        try:
            async for part in parts:
                if min_interval:
                    now = time.monotonic()
                    if now < next_due:
                        continue
                    # Schedule from the due time, with slack for capture jitter, so ?fps=N gives N.
                    next_due = max(next_due + min_interval, now + min_interval * 0.5)
                if transport is not None and not transport.is_closing() \
                        and not transport.get_write_buffer_size():
                    # The usual case, the hot path for many clients: one write straight to the
                    # socket, framed here (bench/ measured ~6% less server CPU at 200 clients).
                    chunk = part.chunk
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                else:
                    await response.write(part.chunk)  # behind: aiohttp waits for drain, or raises if gone
                stream.viewers.sent("mjpeg", len(part.chunk))
        except ConnectionError:
            pass  # the client went away
    return response


async def snapshot_handler(request: web.Request) -> web.Response:
    part = await request.app[STREAM].jpeg_encoder.snapshot()
    if part is None:
        raise web.HTTPServiceUnavailable(text="no frame yet\n")
    return web.Response(body=part.jpeg, content_type="image/jpeg",
                        headers={"X-Timestamp": f"{part.captured_us / 1e6:.6f}", **_NO_CACHE})
