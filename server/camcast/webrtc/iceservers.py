"""GET /api/ice-servers: the STUN/TURN servers for the bundled player and the wall, as RTCIceServer
dicts ({"iceServers": [{"urls", "username"?, "credential"?}]}), TURN credentials minted per request.

WHEP players learn the same servers from the answer's Link headers; the bundled pages ask here
before they create their RTCPeerConnection, so a viewer behind another NAT can meet the server on
a relay. The route needs the access token like every /api/ route (credentials of a TURN server
are no one else's business) and is never cached.
"""

from __future__ import annotations

from aiohttp import web

from camcast.appkeys import PEERS
from camcast.webrtc.iceconfig import current_ice_servers
from camcast.webrtc.options import IceServerValues

PATH = "/api/ice-servers"


def rtc_ice_server(server: IceServerValues) -> dict[str, str]:
    """One server as the browser's RTCIceServer dictionary."""
    url, username, credential = server
    entry = {"urls": url}
    if username is not None:
        entry.update(username=username, credential=credential or "")
    return entry


async def ice_servers_handler(request: web.Request) -> web.Response:
    servers = current_ice_servers(request.app[PEERS].options)
    return web.json_response({"iceServers": [rtc_ice_server(s) for s in servers]},
                             headers={"Cache-Control": "no-store"})


def add_ice_servers_route(app: web.Application) -> None:
    """Needs setup_webrtc first (the servers are the WebRTC output's)."""
    app.router.add_get(PATH, ice_servers_handler)
