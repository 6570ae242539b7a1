"""Health and status routes: /healthz, each camera's /api/status, and /api/cameras."""

from __future__ import annotations

from aiohttp import web

from camcast import __version__
from camcast.appkeys import CAMERAS, PEERS
from camcast.camera import Camera
from camcast.cameras import CAMERA_PREFIX, add_camera_route, camera_of


def _health_lines(cameras: list[Camera]) -> tuple[bool, str]:
    states = [(camera.name, camera.state) for camera in cameras]
    ok = all(state in ("up", "idle") for _, state in states)
    if len(states) == 1:
        state = states[0][1]
        text = "ok" if state == "up" else ("idle" if state == "idle" else "no frames from the source")
        return ok, text + "\n"
    lines = [f"{name}: {state}" for name, state in states]
    return ok, ("ok" if ok else "down") + "\n" + "\n".join(lines) + "\n"


async def healthz_handler(request: web.Request) -> web.Response:
    """200 while every camera delivers frames or is idle on demand (not down); 503 otherwise.
    `/cameras/<name>/healthz` asks about that camera alone."""
    cameras = [camera_of(request)] if "camera" in request.match_info else list(request.app[CAMERAS])
    ok, text = _health_lines(cameras)
    return web.Response(status=200 if ok else 503, text=text)


def status_of(app: web.Application, camera: Camera) -> dict[str, object]:
    width, height = camera.current_size
    supervisor = camera.supervisor
    return {
        "version": __version__,
        "camera": camera.name,
        "cameras": len(app[CAMERAS]),
        "state": camera.state,
        "on_demand": camera.settings.on_demand,
        "source": camera.description,
        "source_up": camera.source_up,
        "size": f"{width}x{height}",
        "width": width,
        "height": height,
        "fps": round(camera.fps_meter.fps, 2) if supervisor else 0.0,
        "fps_target": camera.settings.fps,
        "frames_captured": camera.frames_captured,
        "reconnects": camera.capture.reconnects,
        "source_opens": camera.capture.opens,
        "viewers": camera.viewers.by_kind(),
        "encoders": {"jpeg": camera.jpeg_encoder.running}
        | {enc.name: enc.running for enc in camera.all_video_encoders},
        "passthrough": camera.passthrough.status(),
        "audio": camera.audio.status() if camera.audio is not None else None,
        "mjpeg_variants": camera.mjpeg_variants.status(),
        "renditions": [{"name": r.name, "scale": r.scale, "bitrate": r.bitrate, "fps": r.fps}
                       for r in camera.ladder],
        "uptime": round(camera.uptime(), 1),
        "webrtc": app[PEERS].status(camera) if PEERS in app else None,
        "recording": camera.recorder.status(),
        "motion": camera.motion.status(),
        "publish": [publisher.status() for publisher in camera.publishers],
    }


async def status_handler(request: web.Request) -> web.Response:
    return web.json_response(status_of(request.app, camera_of(request)))


def camera_summary(camera: Camera) -> dict[str, object]:
    width, height = camera.current_size
    return {
        "name": camera.name,
        "url": CAMERA_PREFIX.format(camera=camera.name) + "/",
        "source": camera.description,
        "size": f"{width}x{height}",
        "width": width,
        "height": height,
        "fps": round(camera.fps_meter.fps, 2) if camera.supervisor else 0.0,
        "fps_target": camera.settings.fps,
        "state": camera.state,
        "up": camera.state == "up",
        "on_demand": camera.settings.on_demand,
        "viewers": camera.viewers.by_kind(),
        "recording": camera.recording,
        "motion": camera.motion.status(),
    }


async def cameras_handler(request: web.Request) -> web.Response:
    return web.json_response([camera_summary(c) for c in request.app[CAMERAS]],
                             headers={"Cache-Control": "no-store"})


def add_status_routes(app: web.Application) -> None:
    add_camera_route(app, "GET", "/api/status", status_handler)
    add_camera_route(app, "GET", "/healthz", healthz_handler)
    app.router.add_get("/api/cameras", cameras_handler)
