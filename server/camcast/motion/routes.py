"""HTTP: a camera's motion events (each route unprefixed for the first camera and under /cameras/<name>/).

    GET    /api/events?since=<ISO 8601 or epoch seconds>&limit=<1..1000>   {"events": [...]}, newest first
    GET    /api/events/<id>        the event
    GET    /api/events/<id>.jpg    its thumbnail (the picture with the most motion, its box drawn)
    DELETE /api/events/<id>        204; 404 for an unknown one
"""

from __future__ import annotations

import math
import re
from datetime import datetime

from aiohttp import web

from camcast.cameras import add_camera_route, camera_of
from camcast.motion.store import EventStore

_NO_STORE = {"Cache-Control": "no-store"}
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_ID = "{id:[0-9a-f]{6,32}}"


def parse_since(text: str) -> int:
    """µs since the epoch from `2024-05-01T12:00:00Z` (any ISO 8601 with a zone) or epoch seconds."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            # A "+01:00" zone arrives as " 01:00" when the query was not percent-encoded.
            zoned = re.sub(r" (\d\d:?\d\d)$", r"+\1", text)
            moment = datetime.fromisoformat(zoned.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError("since: expected ISO 8601 (e.g. 2024-05-01T12:00:00Z) or epoch "
                             "seconds") from None
        if moment.tzinfo is None:
            raise ValueError("since: give a time zone (e.g. a trailing Z for UTC)") from None
        return int(moment.timestamp() * 1e6)
    if not math.isfinite(seconds) or not 0 <= seconds < 1e11:
        raise ValueError("since: epoch seconds out of range")
    return int(seconds * 1e6)


def parse_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise ValueError(f"limit: expected a whole number 1..{MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit: expected a whole number 1..{MAX_LIMIT}")
    return limit


def _store(request: web.Request) -> EventStore | None:
    return camera_of(request).motion.store


async def list_events(request: web.Request) -> web.Response:
    try:
        since = request.query.get("since")
        since_us = parse_since(since) if since is not None else None
        limit = parse_limit(request.query.get("limit"))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    store = _store(request)
    events = await store.listing(since_us, limit) if store is not None else []
    return web.json_response({"events": [event.to_json() for event in events]}, headers=_NO_STORE)


async def get_event(request: web.Request) -> web.Response:
    store = _store(request)
    event = await store.get(request.match_info["id"]) if store is not None else None
    if event is None:
        raise web.HTTPNotFound(text="no such event\n")
    return web.json_response(event.to_json(), headers=_NO_STORE)


async def get_thumbnail(request: web.Request) -> web.Response:
    store = _store(request)
    jpeg = await store.thumbnail(request.match_info["id"]) if store is not None else None
    if jpeg is None:
        raise web.HTTPNotFound(text="no such event (or it has no thumbnail)\n")
    # The peak picture may still change while the event goes on.
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-cache"})


async def delete_event(request: web.Request) -> web.Response:
    if not await camera_of(request).motion.delete(request.match_info["id"]):
        raise web.HTTPNotFound(text="no such event\n")
    return web.Response(status=204, headers=_NO_STORE)


def add_motion_routes(app: web.Application) -> None:
    add_camera_route(app, "GET", "/api/events", list_events)
    add_camera_route(app, "GET", f"/api/events/{_ID}.jpg", get_thumbnail)
    add_camera_route(app, "GET", f"/api/events/{_ID}", get_event)
    add_camera_route(app, "DELETE", f"/api/events/{_ID}", delete_event)
