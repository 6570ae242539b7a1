"""CORS for the routes other sites may call: WHEP (players on other origins) and /api/.

Routes need not know about it: a middleware answers preflight requests for those paths, and
`on_response_prepare` adds the headers to every response there, errors and 401s included (a
cross-origin player must be able to read a 401 to ask for the token). Other paths never get CORS
headers. The default origin `*` is the WHEP norm and safe here: access is by Bearer token, never
by cookies, so no credentials mode is ever allowed.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from camcast.cameras import unprefixed

ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, If-Match"
# WHEP clients read Location (the session), Link (ICE servers), ETag and Accept-Patch (trickle ICE).
EXPOSE_HEADERS = "Location, Link, ETag, Accept-Patch, WWW-Authenticate"
PREFLIGHT_MAX_AGE = "600"


def in_cors_scope(path: str) -> bool:
    path = unprefixed(path)  # /cameras/<name>/whep is a WHEP endpoint like /whep
    return path == "/whep" or path.startswith(("/whep/", "/api/"))


class CorsPolicy:
    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = frozenset(origins)
        self.any_origin = "*" in self.origins

    def allowed_origin(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for a request from `origin`, or None."""
        if self.any_origin:
            return "*"
        if origin is not None and origin in self.origins:
            return origin
        return None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # A preflight carries no token (browsers never send one), so it is answered before auth.
        if (request.method == hdrs.METH_OPTIONS and in_cors_scope(request.path)
                and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers):
            return web.Response(status=204, headers={
                hdrs.ALLOW: ALLOW_METHODS,
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOW_METHODS,
                hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOW_HEADERS,
                hdrs.ACCESS_CONTROL_MAX_AGE: PREFLIGHT_MAX_AGE,
            })
        return await handler(request)

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if not in_cors_scope(request.path):
            return
        if not self.any_origin:
            response.headers.add(hdrs.VARY, "Origin")  # the answer depends on the origin: tell caches
        allowed = self.allowed_origin(request.headers.get(hdrs.ORIGIN))
        if allowed is None:
            return
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = allowed
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSE_HEADERS


def add_cors(app: web.Application, origins: Iterable[str]) -> None:
    """Install CORS for /whep and /api/; call before other middlewares so preflights skip them."""
    policy = CorsPolicy(origins)
    app.middlewares.append(policy.middleware)
    app.on_response_prepare.append(policy.on_response_prepare)
