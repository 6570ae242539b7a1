"""Validated query parameters: odd values get a 400 with a message, never a 500."""

from __future__ import annotations

import math

from aiohttp import web


def float_arg(request: web.Request, name: str, low: float, high: float) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a number, got {raw[:40]!r}\n") from None
    if not math.isfinite(value) or not (low <= value <= high):
        raise web.HTTPBadRequest(text=f"{name} must be between {low:g} and {high:g}, got {raw[:40]!r}\n")
    return value
