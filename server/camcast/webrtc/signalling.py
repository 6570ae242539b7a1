"""HTTP signalling: POST /offer (JSON, the bundled player) and WHEP (POST /whep, DELETE /whep/<id>).

Every offer is answered only once ICE gathering is complete (no trickle). A bad offer gets a 4xx
with the reason as text, a full server a 503; CORS for WHEP players comes from camcast.cors.
"""

from __future__ import annotations

import json

from aiohttp import web
from multidict import CIMultiDict

from camcast.webrtc.iceconfig import link_headers
from camcast.webrtc.offer import OfferError
from camcast.webrtc.registry import PEERS

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


async def offer_handler(request: web.Request) -> web.Response:
    """POST /offer: {"sdp": ..., "type": "offer"} → {"sdp": ..., "type": "answer", "id": ...}."""
    if request.content_type != JSON:
        return _fail(415, f"an offer is POSTed as JSON with Content-Type: {JSON}", {"Accept-Post": JSON})
    try:
        text = await _body_text(request)
        try:
            body = json.loads(text)
        except Exception:
            raise OfferError(400, 'the body must be JSON: {"sdp": "...", "type": "offer"}') from None
        if not isinstance(body, dict) or not isinstance(body.get("sdp"), str):
            raise OfferError(400, 'the body must be a JSON object with a string "sdp"')
        if body.get("type", "offer") != "offer":
            raise OfferError(400, '"type" must be "offer"')
        peer, answer = await request.app[PEERS].open_session(body["sdp"], _remote(request), "offer")
    except OfferError as exc:
        return _refused(exc)
    return web.json_response({"sdp": answer, "type": "answer", "id": peer.id}, headers=_NO_STORE)


async def whep_post_handler(request: web.Request) -> web.Response:
    """POST /whep with an SDP offer → 201 Created, Location: /whep/<id>, the SDP answer."""
    registry = request.app[PEERS]
    if request.content_type != SDP:
        return _fail(415, f"a WHEP offer is POSTed with Content-Type: {SDP}", {"Accept-Post": SDP})
    try:
        text = await _body_text(request)
        peer, answer = await registry.open_session(text, _remote(request), "whep")
    except OfferError as exc:
        return _refused(exc)
    headers: CIMultiDict[str] = CIMultiDict(_NO_STORE)
    headers["Location"] = f"/whep/{peer.id}"
    for link in link_headers(registry.options.ice_servers):
        headers.add("Link", link)
    return web.Response(status=201, body=answer.encode(), content_type=SDP, headers=headers)


async def whep_options_handler(request: web.Request) -> web.Response:
    """OPTIONS /whep (not a CORS preflight; camcast.cors answers those): what the endpoint takes."""
    headers: CIMultiDict[str] = CIMultiDict({"Allow": "POST, OPTIONS", "Accept-Post": SDP})
    for link in link_headers(request.app[PEERS].options.ice_servers):
        headers.add("Link", link)
    return web.Response(status=204, headers=headers)


async def whep_delete_handler(request: web.Request) -> web.Response:
    """DELETE /whep/<id>: end that session, WHEP or /offer alike (they share one id space)."""
    if not await request.app[PEERS].close_session(request.match_info["id"], "ended by DELETE"):
        return _fail(404, "no such session")
    return web.Response(status=200, text="session ended\n", headers=_NO_STORE)


async def whep_session_options_handler(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"Allow": "DELETE, OPTIONS"})


def add_signalling_routes(app: web.Application) -> None:
    app.router.add_post("/offer", offer_handler)
    app.router.add_post("/whep", whep_post_handler)
    app.router.add_route("OPTIONS", "/whep", whep_options_handler)
    app.router.add_delete("/whep/{id}", whep_delete_handler)
    app.router.add_route("OPTIONS", "/whep/{id}", whep_session_options_handler)
