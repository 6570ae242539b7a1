"""Access control: one shared token, sent as a Bearer header or a `token` query parameter.

The query form exists for clients that cannot set headers (`<img src=/video.mjpg?token=...>`, many
WHEP players). Everything is closed by default; only the player page, its assets and the health
check are open, so the page can load and ask for the token.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from camcast.appkeys import TOKEN_GUARD
from camcast.ratelimit import TokenBucket

log = logging.getLogger("camcast.auth")

# Route patterns (as registered) that need no token: the page asks for the token, so it must load.
PUBLIC_ROUTES = frozenset({"/", "/healthz", "/favicon.ico", "/cameras/{camera}/", "/cameras/{camera}"})
PUBLIC_ROUTE_PREFIXES = ("/client/",)


def is_public(request: web.Request) -> bool:
    """Decided on the matched route, not the raw path: unmatched paths (404/405) stay closed."""
    resource = request.match_info.route.resource
    if resource is None:
        return False
    pattern = resource.canonical
    return pattern in PUBLIC_ROUTES or pattern == "/client" or pattern.startswith(PUBLIC_ROUTE_PREFIXES)


def presented_token(request: web.Request) -> str | None:
    """The token from `Authorization: Bearer ...`, else from `?token=`; None when neither is there."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token") or None


def _unauthorized(text: str, error: str | None) -> web.Response:
    # RFC 6750: the challenge names the scheme, and says `invalid_token` when one was presented.
    challenge = 'Bearer realm="camcast"' + (f', error="{error}"' if error else "")
    return web.Response(status=401, text=text + "\n",
                        headers={"WWW-Authenticate": challenge, "Cache-Control": "no-store"})


# Wrong tokens from one address: a burst of this many, then one a second (a guesser gets 429).
GUESS_BURST = 10
GUESS_RATE = 1.0
MAX_TRACKED_ADDRESSES = 4096  # the oldest are forgotten beyond this (a botnet cannot eat memory)


class TokenGuard:
    """The middleware that checks the token; counts rejections for /metrics and slows guessing:
    an address that keeps presenting wrong tokens gets 429 with Retry-After until it slows down."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("an empty token would let everyone in")
        self._token = token.encode()
        self.rejected = 0
        self.throttled = 0
        self._guesses: dict[str, TokenBucket] = {}

    def _too_many_guesses(self, address: str) -> bool:
        bucket = self._guesses.get(address)
        return bucket is not None and bucket.empty

    def _count_guess(self, address: str) -> None:
        bucket = self._guesses.pop(address, None) or TokenBucket(GUESS_RATE, GUESS_BURST)
        bucket.take()
        self._guesses[address] = bucket  # most recent last: eviction takes the oldest
        while len(self._guesses) > MAX_TRACKED_ADDRESSES:
            del self._guesses[next(iter(self._guesses))]

    def check(self, presented: str | None) -> bool:
        if presented is None:
            return False
        # Constant time: the comparison must not tell how many leading characters were right.
        return hmac.compare_digest(presented.encode(), self._token)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_public(request):
            return await handler(request)
        presented = presented_token(request)
        address = request.remote or "?"
        if presented is not None and self._too_many_guesses(address):
            self.throttled += 1
            return web.Response(status=429, text="too many wrong tokens from this address: wait a second\n",
                                headers={"Retry-After": "1", "Cache-Control": "no-store"})
        if self.check(presented):
            return await handler(request)
        self.rejected += 1
        if presented is not None:
            self._count_guess(address)
        # Debug only: a client retrying without a token must not be able to flood the log.
        log.debug("%s %s: %s token from %s", request.method, request.path,
                  "wrong" if presented else "no", request.remote)
        if presented is None:
            return _unauthorized("this server needs an access token (Bearer header or ?token=)", None)
        return _unauthorized("wrong access token", "invalid_token")



def add_token_guard(app: web.Application, token: str) -> None:
    """Require `token` on every non-public route (no-op without a token)."""
    if not token:
        return
    guard = TokenGuard(token)
    app[TOKEN_GUARD] = guard
    app.middlewares.append(guard.middleware)


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address == "localhost"
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def exposure_warning(bound_address: str, token: str) -> str | None:
    """The startup warning for a server others can reach without a token; None when it is fine."""
    if token or is_loopback(bound_address):
        return None
    return (f"listening on {bound_address} without --token: anyone on the network can watch and "
            "record these cameras; set --token (or CAMCAST_TOKEN), or bind to 127.0.0.1")
