"""The WebRTC settings, as plain values (only cli/app read the config)."""

from __future__ import annotations

from dataclasses import dataclass, field

# (url without credentials, username, credential): stun:HOST[:PORT] or turn:HOST[:PORT][?transport=..]
IceServerValues = tuple[str, str | None, str | None]


@dataclass(frozen=True)
class WebRtcOptions:
    max_peers: int = 64
    peer_timeout: float = 10.0  # seconds without receiver reports before a peer is dropped
    ice_servers: tuple[IceServerValues, ...] = ()
    ice_addresses: tuple[str, ...] = ()  # host candidates to offer; empty: every non-loopback interface
    # Mints credentials for the TURN servers listed without any (see iceconfig.current_ice_servers).
    turn_secret: str = field(default="", repr=False)
