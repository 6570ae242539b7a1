"""HTTP: the record REST API, the recordings list, downloads (with Range) and deletes.

    GET  /api/record                 the state
    POST /api/record/start|stop      idempotent; answer the state
    GET  /api/recordings             [{name, bytes, duration, started, recording}], newest first
    GET  /recordings/<name>          the file (aiohttp's FileResponse answers Range with 206)
    DELETE /api/recordings/<name>    204; 409 while it is being written
"""

from __future__ import annotations

import asyncio
import mimetypes

from aiohttp import web

from camcast.cameras import add_camera_route, camera_of
from camcast.recorder.naming import is_safe_name
from camcast.recorder.sinks import RecordError
from camcast.recorder.storage import resolve

_NO_STORE = {"Cache-Control": "no-store"}
_TYPES = {"mp4": "video/mp4", "m4v": "video/mp4", "mov": "video/quicktime", "avi": "video/x-msvideo",
          "mkv": "video/x-matroska", "webm": "video/webm"}


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=_NO_STORE)


async def record_state(request: web.Request) -> web.Response:
    return _json(camera_of(request).recorder.state())


async def record_start(request: web.Request) -> web.Response:
    recorder = camera_of(request).recorder
    try:
        return _json(await recorder.start())
    except RecordError as exc:
        return _json(recorder.state() | {"error": f"cannot record: {exc}"}, status=503)


async def record_stop(request: web.Request) -> web.Response:
    return _json(await camera_of(request).recorder.stop())


async def list_recordings(request: web.Request) -> web.Response:
    recorder = camera_of(request).recorder
    rows = await asyncio.get_running_loop().run_in_executor(
        None, recorder.library.listing, recorder.active_files())
    return _json(rows)


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not is_safe_name(name):
        raise web.HTTPBadRequest(text="not a recording name\n")
    return name


async def download_recording(request: web.Request) -> web.StreamResponse:
    recorder = camera_of(request).recorder
    name = _name(request)
    path = await asyncio.get_running_loop().run_in_executor(None, resolve, recorder.library.folder, name)
    if path is None:
        raise web.HTTPNotFound(text="no such recording\n")
    extension = name.rsplit(".", 1)[-1].lower()
    content_type = _TYPES.get(extension) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return web.FileResponse(path, headers={
        "Content-Type": content_type, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'inline; filename="{name}"',
    })


async def delete_recording(request: web.Request) -> web.Response:
    recorder = camera_of(request).recorder
    name = _name(request)
    if recorder.is_active(name):
        raise web.HTTPConflict(text="this recording is being written; stop it first\n")
    loop = asyncio.get_running_loop()
    path = await loop.run_in_executor(None, resolve, recorder.library.folder, name)
    if path is None:
        raise web.HTTPNotFound(text="no such recording\n")
    try:
        await loop.run_in_executor(None, path.unlink)
    except FileNotFoundError:
        raise web.HTTPNotFound(text="no such recording\n") from None
    recorder.library.forget(name)
    return web.Response(status=204, headers=_NO_STORE)


def add_recorder_routes(app: web.Application) -> None:
    """The record API and the recordings of every camera (each camera owns its recorder)."""
    add_camera_route(app, "GET", "/api/record", record_state)
    add_camera_route(app, "POST", "/api/record/start", record_start)
    add_camera_route(app, "POST", "/api/record/stop", record_stop)
    add_camera_route(app, "GET", "/api/recordings", list_recordings)
    add_camera_route(app, "GET", "/recordings/{name}", download_recording)
    add_camera_route(app, "DELETE", "/api/recordings/{name}", delete_recording)
