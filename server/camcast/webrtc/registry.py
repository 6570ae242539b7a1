"""All WebRTC sessions of the server: admission (--max-peers), lookup by id, teardown, status.

Sessions belong to cameras (a camera closes the ones that carry it when it stops); the registry
is what they share: one id space, one limit, and refusing new offers once shutdown begins.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiortc import RTCConfiguration

from camcast.webrtc.iceconfig import current_ice_servers, rtc_configuration
from camcast.webrtc.offer import (
    OfferError,
    camera_profile,
    offers_h264_profile,
    offers_opus,
    plan_offer,
    plan_sections,
)
from camcast.webrtc.options import WebRtcOptions
from camcast.webrtc.peer import Peer

if TYPE_CHECKING:
    from camcast.camera import Camera

log = logging.getLogger("camcast.webrtc")


class PeerRegistry:
    def __init__(self, options: WebRtcOptions) -> None:
        self.options = options
        self._peers: dict[str, Peer] = {}
        self._negotiating = 0
        self._closed = False
        self.sessions_total = 0
        self.rejected_full = 0
        self.rejected_offers = 0

    def __len__(self) -> int:
        return len(self._peers)

    @property
    def configuration(self) -> RTCConfiguration:
        """Built for each new peer: TURN credentials minted from --turn-secret expire."""
        return rtc_configuration(current_ice_servers(self.options))

    def get(self, peer_id: str) -> Peer | None:
        return self._peers.get(peer_id)

    async def open_session(self, camera: Camera, offer_sdp: str, remote: str, via: str,
                           rendition: str | None = None) -> tuple[Peer, str]:
        """Answer a player's or WHEP offer for one camera; raises OfferError (4xx, or 503 when full).
        `rendition` pins the viewer to that rendition (else its link chooses)."""
        self._admit()
        try:
            plan = plan_offer(offer_sdp, camera.settings.codec)
            if plan.codec is None and (camera.audio is None or not camera.audio.available):
                why = camera.audio.source.description if camera.audio is not None else "--audio none"
                raise OfferError(400, f"camera {camera.name} has no sound ({why}): an offer with only an "
                                 "audio m-line cannot be answered")
        except OfferError:
            self.rejected_offers += 1
            raise
        peer = self._new_peer(remote, via, camera)
        if plan.codec is None:  # the sound alone
            peer.add_audio(camera)
            return await self._answer(peer, offer_sdp)
        # The camera's own profile is answered when offered. When it is not (Debian's Chromium offers
        # Main and High 4:4:4 but not High), its stream still goes out: the software decoders
        # browsers use follow the SPS, as go2rtc and MediaMTX rely on too.
        profile = camera_profile(camera.passthrough.profile) if camera.passthrough.h264 else None
        if plan.codec != "h264" or (profile is not None and not offers_h264_profile(offer_sdp, profile)):
            profile = None
        peer.add_camera(camera, plan.codec, rendition, h264_profile=profile)
        if camera.audio is not None and camera.audio.available and offers_opus(offer_sdp):
            peer.add_audio(camera)
        return await self._answer(peer, offer_sdp)

    async def open_wall(self, cameras: Sequence[Camera | str], offer_sdp: str,
                        remote: str) -> tuple[Peer, str]:
        """Answer an offer with one video m-line per camera (the wall). A name that is no camera,
        or a camera whose m-line cannot take its codec, gets that m-line answered inactive."""
        self._admit()
        settings = [c.settings.codec if not isinstance(c, str) else "auto" for c in cameras]
        try:
            plans = plan_sections(offer_sdp, settings)
        except OfferError:
            self.rejected_offers += 1
            raise
        peer = self._new_peer(remote, "wall", None)
        for camera, plan in zip(cameras, plans, strict=True):
            if isinstance(camera, str):
                peer.refuse_camera(camera, None, f"no camera {camera[:40]!r}")
            elif isinstance(plan, OfferError):
                peer.refuse_camera(camera.name, camera, plan.reason)
            else:
                peer.add_camera(camera, plan)
        return await self._answer(peer, offer_sdp)

    def _admit(self) -> None:
        if self._closed:
            raise OfferError(503, "the server is shutting down")
        limit = self.options.max_peers
        if len(self._peers) + self._negotiating >= limit:
            self.rejected_full += 1
            raise OfferError(503, f"server full: {limit} of {limit} WebRTC sessions in use (--max-peers)")

    def _new_peer(self, remote: str, via: str, camera: Camera | None) -> Peer:
        # A player's session speaks on its camera's control scope; the wall's has none.
        return Peer(secrets.token_urlsafe(12), remote, via, self.configuration, self.options.peer_timeout,
                    self._forget, camera.control if camera is not None else None)

    async def _answer(self, peer: Peer, offer_sdp: str) -> tuple[Peer, str]:
        self._negotiating += 1  # holds a slot while this offer is being answered
        try:
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
        log.debug("session %s answered for %s (%s, %s)", peer.id, peer.remote, peer.via,
                  ", ".join(f"{f.name}:{f.codec}" for f in peer.live_feeds))
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

    def peers_of(self, camera: Camera) -> list[Peer]:
        return [p for p in self._peers.values() if p in camera.sessions]

    def refuse_new(self) -> None:
        """Shutdown has begun: no new session is answered (the cameras close the open ones)."""
        self._closed = True

    def status(self, camera: Camera) -> dict[str, object]:
        encoders = {
            output.encoder.name: {
                "running": output.encoder.running,
                "starts": output.encoder.starts,
                "subscribers": output.packets.subscriber_count,
                "frames_encoded": output.encoder.frames_encoded,
                "keyframes": output.encoder.keyframes,
            }
            for outputs in camera.renditions.values() for output in outputs
        }
        sessions = self.peers_of(camera)
        return {
            "peers": len(sessions),
            "negotiating": self._negotiating,
            "max_peers": self.options.max_peers,
            "codec": camera.settings.codec,
            "sessions_total": self.sessions_total,
            "rejected_full": self.rejected_full,
            "rejected_offers": self.rejected_offers,
            "running_encoders": sum(1 for e in encoders.values() if e["running"]),
            "encoders": encoders,
            "sessions": [p.status(camera) for p in sessions],
        }
