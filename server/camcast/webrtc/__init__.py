"""WebRTC output: /offer and WHEP signalling, one peer per viewer fed from the shared packet hubs.

`setup_webrtc(app, options)` installs everything (routes, peer registry, host-address override,
control-channel handlers); other modules only read `app[PEERS]` for status.
"""

from camcast.webrtc.options import WebRtcOptions
from camcast.webrtc.registry import PEERS, PeerRegistry
from camcast.webrtc.setup import setup_webrtc

__all__ = ["PEERS", "PeerRegistry", "WebRtcOptions", "setup_webrtc"]
