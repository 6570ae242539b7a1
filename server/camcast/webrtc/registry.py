"""All WebRTC peers of one stream: admission (--max-peers), lookup by id, teardown, status."""

from __future__ import annotations

import asyncio
import logging
import secrets

from aiohttp import web

from camcast.control import ControlBus
from camcast.stream import Stream
from camcast.webrtc.iceconfig import rtc_configuration
from camcast.webrtc.offer import OfferError, plan_offer
from camcast.webrtc.options import WebRtcOptions
from camcast.webrtc.peer import Peer

log = logging.getLogger("camcast.webrtc")


class PeerRegistry:
    def __init__(self, stream: Stream, bus: ControlBus, options: WebRtcOptions) -> None:
        self.stream = stream
        self.bus = bus
        self.options = options
        self.configuration = rtc_configuration(options.ice_servers)
        self._peers: dict[str, Peer] = {}
        self._negotiating = 0
        self._closed = False
        self.sessions_total = 0
        self.rejected_full = 0
        self.rejected_offers = 0

    def __len__(self) -> int:
        return len(self._peers)

    def get(self, peer_id: str) -> Peer | None:
        return self._peers.get(peer_id)

    async def open_session(self, offer_sdp: str, remote: str, via: str) -> tuple[Peer, str]:
        """Answer an offer with a new peer; raises OfferError (4xx, or 503 when full)."""
        if self._closed:
            raise OfferError(503, "the server is shutting down")
        try:
            plan = plan_offer(offer_sdp, self.options.codec)
        except OfferError:
            self.rejected_offers += 1
            raise
        limit = self.options.max_peers
        if len(self._peers) + self._negotiating >= limit:
            self.rejected_full += 1
            raise OfferError(503, f"server full: {limit} of {limit} WebRTC sessions in use (--max-peers)")
        self._negotiating += 1  # holds a slot while this offer is being answered
        try:
            peer = Peer(secrets.token_urlsafe(12), remote, via, plan.codec, self.configuration,
                        self.stream, self.bus, self.options.peer_timeout, self._forget)
            try:
                answer = await peer.negotiate(offer_sdp)
                if self._closed:
                    raise OfferError(503, "the server is shutting down")
                if peer.closed:  # e.g. its transport failed meanwhile: nothing left to answer with
                    raise OfferError(409, f"the session ended before it was answered ({peer.close_reason})")
            except BaseException as exc:
                if isinstance(exc, OfferError):
                    self.rejected_offers += 1
                await peer.close("negotiation failed")
                raise
        finally:
            self._negotiating -= 1
        self._peers[peer.id] = peer
        self.sessions_total += 1
        # Counted as a viewer once connected (Peer): an answer alone may never be used.
        log.debug("session %s answered for %s (%s, %s)", peer.id, remote, via, plan.codec)
        peer.start()
        return peer, answer

    def _forget(self, peer: Peer) -> None:
        if self._peers.get(peer.id) is peer:
            del self._peers[peer.id]

    async def close_session(self, peer_id: str, reason: str) -> bool:
        peer = self._peers.get(peer_id)
        if peer is None:
            return False
        await peer.close(reason)
        return True

    async def close_all(self) -> None:
        self._closed = True
        peers = list(self._peers.values())
        if peers:
            log.info("closing %d WebRTC peer(s)", len(peers))
        await asyncio.gather(*(p.close("server shutting down") for p in peers), return_exceptions=True)

    def status(self) -> dict[str, object]:
        stream = self.stream
        encoders = {
            codec: {
                "running": enc.running,
                "starts": enc.starts,
                "subscribers": stream.packets[codec].subscriber_count,
                "frames_encoded": enc.frames_encoded,
                "keyframes": enc.keyframes,
            }
            for codec, enc in stream.video_encoders.items()
        }
        return {
            "peers": len(self._peers),
            "negotiating": self._negotiating,
            "max_peers": self.options.max_peers,
            "codec": self.options.codec,
            "sessions_total": self.sessions_total,
            "rejected_full": self.rejected_full,
            "rejected_offers": self.rejected_offers,
            "running_encoders": sum(1 for e in encoders.values() if e["running"]),
            "encoders": encoders,
            "sessions": [p.status() for p in self._peers.values()],
        }


PEERS = web.AppKey("webrtc_peers", PeerRegistry)
