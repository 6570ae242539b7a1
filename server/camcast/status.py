"""Health and status routes."""

from __future__ import annotations

from aiohttp import web

from camcast import __version__
from camcast.appkeys import STREAM
from camcast.recorder import RECORDER
from camcast.webrtc import PEERS


async def healthz_handler(request: web.Request) -> web.Response:
    stream = request.app[STREAM]
    if stream.healthy:
        return web.Response(text="ok\n")
    return web.Response(status=503, text="no frames from the source\n")


def status_of(app: web.Application) -> dict[str, object]:
    stream = app[STREAM]
    width, height = stream.current_size
    capture = stream.capture
    return {
        "version": __version__,
        "source": capture.description if capture and capture.description else stream.settings.source,
        "source_up": stream.source_up,
        "size": f"{width}x{height}",
        "width": width,
        "height": height,
        "fps": round(stream.fps_meter.fps, 2),
        "fps_target": stream.settings.fps,
        "frames_captured": capture.frames_captured if capture else 0,
        "reconnects": capture.reconnects if capture else 0,
        "viewers": stream.viewers.by_kind(),
        "encoders": {"jpeg": stream.jpeg_encoder.running}
        | {codec: enc.running for codec, enc in stream.video_encoders.items()},
        "uptime": round(stream.uptime(), 1),
        "webrtc": app[PEERS].status() if PEERS in app else None,
        "recording": app[RECORDER].status() if RECORDER in app else None,
    }


async def status_handler(request: web.Request) -> web.Response:
    return web.json_response(status_of(request.app))
