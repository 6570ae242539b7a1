"""Typed keys for every piece of state the app holds (no module globals).

The types are imported for type checking only, so any module may import its key from here
without importing the module that defines the type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from camcast.auth import TokenGuard
    from camcast.cameras import CameraRegistry
    from camcast.config import Config
    from camcast.metrics import AppMetrics
    from camcast.webrtc.registry import PeerRegistry

CONFIG: web.AppKey[Config] = web.AppKey("config")
CAMERAS: web.AppKey[CameraRegistry] = web.AppKey("cameras")
PEERS: web.AppKey[PeerRegistry] = web.AppKey("webrtc_peers")
METRICS: web.AppKey[AppMetrics] = web.AppKey("metrics")
TOKEN_GUARD: web.AppKey[TokenGuard] = web.AppKey("token_guard")
