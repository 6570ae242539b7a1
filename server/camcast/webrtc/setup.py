"""Install the WebRTC output into an app: peer registry, routes, control handlers, lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from camcast.appkeys import CONTROL, STREAM
from camcast.webrtc.iceconfig import offered_host_addresses
from camcast.webrtc.options import WebRtcOptions
from camcast.webrtc.ping import ping
from camcast.webrtc.registry import PEERS, PeerRegistry
from camcast.webrtc.signalling import add_signalling_routes


def setup_webrtc(app: web.Application, options: WebRtcOptions) -> None:
    """Call after the stream's encoder contexts: peers are closed before the encoders stop."""
    registry = PeerRegistry(app[STREAM], app[CONTROL], options)
    app[PEERS] = registry
    app[CONTROL].register("ping", ping)

    async def webrtc_ctx(app: web.Application) -> AsyncIterator[None]:
        with offered_host_addresses(options.ice_addresses):
            yield
            await registry.close_all()

    app.cleanup_ctx.append(webrtc_ctx)
    add_signalling_routes(app)
