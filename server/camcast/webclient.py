"""Serve the web player from the installed package (client/ ships as camcast.client)."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

from camcast.appkeys import CAMERAS
from camcast.cameras import camera_of

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


def _load_assets(root: Path) -> dict[str, tuple[bytes, str]]:
    """Every file of the player (a few small ones that never change while it runs): name → (bytes,
    content type), read once, so no request reads a file on the event loop."""
    assets = {}
    for node in sorted(root.iterdir()):
        if node.name.startswith(".") or not node.is_file():
            continue
        content_type = mimetypes.guess_type(node.name)[0] or "application/octet-stream"
        if node.name.endswith(".js"):
            content_type = "text/javascript"
        assets[node.name] = (node.read_bytes(), content_type)
    return assets


def _asset(assets: dict[str, tuple[bytes, str]], name: str) -> web.Response:
    if name not in assets:
        raise web.HTTPNotFound(text="not found\n")
    body, content_type = assets[name]
    return web.Response(body=body, content_type=content_type,
                        headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache",
                                 "X-Content-Type-Options": "nosniff"})


def add_client_routes(app: web.Application) -> None:
    """`/`: the player with one camera, the wall with several; `/cameras/<name>/`: that camera's player."""
    assets = _load_assets(client_root())

    async def index(request: web.Request) -> web.Response:
        wall = len(request.app[CAMERAS]) > 1 and "wall.html" in assets
        return _asset(assets, "wall.html" if wall else "index.html")

    async def camera_page(request: web.Request) -> web.Response:
        camera_of(request)  # 404 for a camera that does not exist
        return _asset(assets, "index.html")

    async def camera_page_slash(request: web.Request) -> web.Response:
        camera = camera_of(request)
        raise web.HTTPFound(f"/cameras/{camera.name}/" + (f"?{request.query_string}"
                                                          if request.query_string else ""))

    async def asset(request: web.Request) -> web.Response:
        return _asset(assets, request.match_info["name"])

    app.router.add_get("/", index)
    app.router.add_get("/cameras/{camera}/", camera_page)
    app.router.add_get("/cameras/{camera}", camera_page_slash)
    app.router.add_get("/client/{name}", asset)
