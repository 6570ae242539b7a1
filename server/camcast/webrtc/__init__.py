"""WebRTC output: /offer, WHEP and the wall's signalling, one peer per viewer fed from the shared
packet hubs of the cameras it watches.

`setup_webrtc(app, options)` installs everything (routes, session registry, host-address override);
other modules only read `app[PEERS]` for status.
"""

from camcast.webrtc.options import WebRtcOptions
from camcast.webrtc.registry import PeerRegistry
from camcast.webrtc.setup import setup_webrtc

__all__ = ["PeerRegistry", "WebRtcOptions", "setup_webrtc"]
