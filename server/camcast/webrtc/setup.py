"""Install the WebRTC output into an app: session registry, routes, lifetime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from camcast.appkeys import PEERS
from camcast.webrtc.compat import closed_connects_quiet, rsa_peers_accepted
from camcast.webrtc.iceconfig import offered_host_addresses
from camcast.webrtc.options import WebRtcOptions
from camcast.webrtc.registry import PeerRegistry
from camcast.webrtc.signalling import add_signalling_routes


def setup_webrtc(app: web.Application, options: WebRtcOptions) -> None:
    """Call before the cameras' context is added: ICE host addresses are fixed for their whole life,
    and sessions left after the cameras stopped (none, normally) are closed last."""
    registry = PeerRegistry(options)
    app[PEERS] = registry

    async def webrtc_ctx(app: web.Application) -> AsyncIterator[None]:
        with offered_host_addresses(options.ice_addresses), \
                closed_connects_quiet(asyncio.get_running_loop()), rsa_peers_accepted():
            yield
            await registry.close_all()

    async def refuse_new_sessions(app: web.Application) -> None:
        registry.refuse_new()

    app.on_shutdown.append(refuse_new_sessions)
    app.cleanup_ctx.append(webrtc_ctx)
    add_signalling_routes(app)
