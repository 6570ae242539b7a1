"""Typed keys for the state the app holds (no module globals)."""

from __future__ import annotations

from aiohttp import web

from camcast.config import Config
from camcast.control import ControlBus
from camcast.stream import Stream

CONFIG = web.AppKey("config", Config)
STREAM = web.AppKey("stream", Stream)
CONTROL = web.AppKey("control", ControlBus)
