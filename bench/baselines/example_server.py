"""The serving half of aiortc's examples, shared by the baselines built on their design: POST /offer
signalling with {"sdp","type"}, every peer closed when it fails and at shutdown, WebRTC kept on
loopback, and a process that runs until SIGTERM/SIGINT (or a time limit, so none outlives its run).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection

PCS = web.AppKey("pcs", set[RTCPeerConnection])


def new_peer(app: web.Application) -> RTCPeerConnection:
    """A peer as the examples make one (no STUN), closed and forgotten when it fails."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pcs = app[PCS]
    pcs.add(pc)

    @pc.on("connectionstatechange")
    async def on_connectionstatechange() -> None:
        if pc.connectionState in ("failed", "closed"):
            await pc.close()
            pcs.discard(pc)

    return pc


async def close_peers(app: web.Application) -> None:
    pcs = app[PCS]
    await asyncio.gather(*[pc.close() for pc in pcs], return_exceptions=True)
    pcs.clear()


def loopback_ice() -> None:
    """The examples offer every interface; the bench keeps WebRTC on loopback."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"] if use_ipv4 else []


async def serve_until_stopped(app: web.Application, port: int, banner: str, max_seconds: float) -> None:
    """Serve `app` on 127.0.0.1:`port` (0: any), print `banner` with the URL, and return on
    SIGTERM/SIGINT or after `max_seconds`."""
    app.setdefault(PCS, set())
    app.on_shutdown.insert(0, close_peers)  # the peers first, then what feeds them
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"{banner} at http://127.0.0.1:{runner.addresses[0][1]}/", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), max_seconds)
    await runner.cleanup()
