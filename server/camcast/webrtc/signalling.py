"""HTTP signalling: POST /offer (JSON, the bundled player), WHEP (POST /whep, DELETE /whep/<id>),
each for one camera (unprefixed: the first one; `/cameras/<name>/...`), and POST /wall/offer for the
wall (one connection, one video m-line per camera).

Every offer is answered only once ICE gathering is complete (no trickle). A bad offer gets a 4xx
with the reason as text, a full server a 503; CORS for WHEP players comes from camcast.cors.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from camcast.appkeys import CAMERAS, PEERS
from camcast.cameras import CAMERA_PREFIX, add_camera_route, camera_of
from camcast.webrtc.iceconfig import current_ice_servers, link_headers
from camcast.webrtc.offer import OfferError

if TYPE_CHECKING:
    from camcast.camera import Camera

SDP = "application/sdp"
JSON = "application/json"
_NO_STORE = {"Cache-Control": "no-store"}


def _fail(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=reason + "\n", headers={**_NO_STORE, **(headers or {})})


def _refused(exc: OfferError) -> web.Response:
    # A full server may have room again soon; anything else would fail the same way again.
    return _fail(exc.status, exc.reason, {"Retry-After": "5"} if exc.status == 503 else None)


async def _body_text(request: web.Request) -> str:
    try:
        return await request.text()
    except UnicodeDecodeError:
        raise OfferError(400, "the body is not UTF-8 text") from None


def _remote(request: web.Request) -> str:
    return request.remote or "unknown"


async def _json_offer(request: web.Request) -> dict[str, object]:
    """The body of a JSON offer: {"sdp": ..., "type": "offer", ...}; OfferError when it is not one."""
    text = await _body_text(request)
    try:
        body = json.loads(text)
    except Exception:
        raise OfferError(400, 'the body must be JSON: {"sdp": "...", "type": "offer"}') from None
    if not isinstance(body, dict) or not isinstance(body.get("sdp"), str):
        raise OfferError(400, 'the body must be a JSON object with a string "sdp"')
    if body.get("type", "offer") != "offer":
        raise OfferError(400, '"type" must be "offer"')
    return body


def _rendition(request: web.Request, camera: Camera) -> str | None:
    """?rendition=NAME pins the viewer to one rendition (a quality chosen by hand); auto or none
    lets its link decide."""
    name = request.query.get("rendition", "auto")
    if name in ("", "auto"):
        return None
    known = [r.name for r in camera.ladder]
    if name not in known:
        raise OfferError(400, f"rendition {name[:40]!r}: camera {camera.name} has "
                              f"{', '.join(known)} (or auto)")
    return name


def _json_only(request: web.Request) -> web.Response | None:
    if request.content_type != JSON:
        return _fail(415, f"an offer is POSTed as JSON with Content-Type: {JSON}", {"Accept-Post": JSON})
    return None


async def offer_handler(request: web.Request) -> web.Response:
    """POST /offer: {"sdp": ..., "type": "offer"} → {"sdp": ..., "type": "answer", "id": ...}."""
    camera = camera_of(request)
    refused = _json_only(request)
    if refused is not None:
        return refused
    try:
        pinned = _rendition(request, camera)
        body = await _json_offer(request)
        peer, answer = await request.app[PEERS].open_session(camera, str(body["sdp"]), _remote(request),
                                                             "offer", pinned)
    except OfferError as exc:
        return _refused(exc)
    return web.json_response({"sdp": answer, "type": "answer", "id": peer.id}, headers=_NO_STORE)


MAX_WALL_CAMERAS = 64


async def wall_offer_handler(request: web.Request) -> web.Response:
    """POST /wall/offer: {"sdp", "type": "offer", "cameras": [names]} with one recvonly video m-line
    per camera, in order → {"sdp", "type": "answer", "id", "cameras": [{"name", "ok", "error"?}]}."""
    refused = _json_only(request)
    if refused is not None:
        return refused
    registry = request.app[CAMERAS]
    try:
        body = await _json_offer(request)
        names = body.get("cameras", registry.names)
        if (not isinstance(names, list) or not names or len(names) > MAX_WALL_CAMERAS
                or not all(isinstance(n, str) for n in names)):
            raise OfferError(400, f'"cameras" must be a list of 1..{MAX_WALL_CAMERAS} camera names')
        cameras = [registry.get(name) or name for name in names]
        peer, answer = await request.app[PEERS].open_wall(cameras, str(body["sdp"]), _remote(request))
    except OfferError as exc:
        return _refused(exc)
    tiles = [{"name": f.name, "ok": True} if f.track is not None else
             {"name": f.name, "ok": False, "error": f.refused} for f in peer.feeds]
    return web.json_response({"sdp": answer, "type": "answer", "id": peer.id, "cameras": tiles},
                             headers=_NO_STORE)


async def whep_post_handler(request: web.Request) -> web.Response:
    """POST /whep with an SDP offer → 201 Created, Location: /whep/<id>, the SDP answer."""
    camera = camera_of(request)
    registry = request.app[PEERS]
    if request.content_type != SDP:
        return _fail(415, f"a WHEP offer is POSTed with Content-Type: {SDP}", {"Accept-Post": SDP})
    try:
        pinned = _rendition(request, camera)
        text = await _body_text(request)
        peer, answer = await registry.open_session(camera, text, _remote(request), "whep", pinned)
    except OfferError as exc:
        return _refused(exc)
    headers: CIMultiDict[str] = CIMultiDict(_NO_STORE)
    prefix = "" if "camera" not in request.match_info else CAMERA_PREFIX.format(camera=camera.name)
    headers["Location"] = f"{prefix}/whep/{peer.id}"
    for link in link_headers(current_ice_servers(registry.options)):
        headers.add("Link", link)
    return web.Response(status=201, body=answer.encode(), content_type=SDP, headers=headers)


async def whep_options_handler(request: web.Request) -> web.Response:
    """OPTIONS /whep (not a CORS preflight; camcast.cors answers those): what the endpoint takes."""
    camera_of(request)  # an unknown camera is a 404 here too
    headers: CIMultiDict[str] = CIMultiDict({"Allow": "POST, OPTIONS", "Accept-Post": SDP})
    for link in link_headers(current_ice_servers(request.app[PEERS].options)):
        headers.add("Link", link)
    return web.Response(status=204, headers=headers)


async def whep_delete_handler(request: web.Request) -> web.Response:
    """DELETE /whep/<id>: end that session, WHEP, /offer or the wall's alike (one id space)."""
    camera_of(request)
    if not await request.app[PEERS].close_session(request.match_info["id"], "ended by DELETE"):
        return _fail(404, "no such session")
    return web.Response(status=200, text="session ended\n", headers=_NO_STORE)


async def whep_session_options_handler(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"Allow": "DELETE, OPTIONS"})


def add_signalling_routes(app: web.Application) -> None:
    add_camera_route(app, "POST", "/offer", offer_handler)
    add_camera_route(app, "POST", "/whep", whep_post_handler)
    add_camera_route(app, "OPTIONS", "/whep", whep_options_handler)
    add_camera_route(app, "DELETE", "/whep/{id}", whep_delete_handler)
    add_camera_route(app, "OPTIONS", "/whep/{id}", whep_session_options_handler)
    app.router.add_post("/wall/offer", wall_offer_handler)
