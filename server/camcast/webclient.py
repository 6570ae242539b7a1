"""Serve the web player from the installed package (client/ ships as camcast.client)."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

# The player's assets: nothing user-supplied is inserted into them.
_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'self'"
)


def client_root() -> Path:
    """camcast/client/ in an installed package; the repository's client/ in a source checkout."""
    installed = Path(__file__).resolve().parent / "client"
    if (installed / "index.html").is_file():
        return installed
    return Path(__file__).resolve().parents[2] / "client"


def _asset(root: Path, name: str) -> web.Response:
    node = root.joinpath(name)
    if not name or "/" in name or name.startswith(".") or not node.is_file():
        raise web.HTTPNotFound(text="not found\n")
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if name.endswith(".js"):
        content_type = "text/javascript"
    return web.Response(body=node.read_bytes(), content_type=content_type,
                        headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache",
                                 "X-Content-Type-Options": "nosniff"})


def add_client_routes(app: web.Application) -> None:
    root = client_root()

    async def index(request: web.Request) -> web.Response:
        return _asset(root, "index.html")

    async def asset(request: web.Request) -> web.Response:
        return _asset(root, request.match_info["name"])

    app.router.add_get("/", index)
    app.router.add_get("/client/{name}", asset)
