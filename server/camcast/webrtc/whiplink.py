"""WHIP's HTTP side (RFC 9725): `Link: <url>; rel="ice-server"` headers read back into ICE servers,
redirects resolved, and the Bearer token kept off plain-HTTP hops it did not start on."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urljoin, urlsplit, urlunsplit

from camcast.webrtc.options import IceServerValues

# One link: <target> then ;-separated parameters whose values are tokens or quoted strings
# (RFC 8288), as iceconfig.link_headers writes them for our own WHEP answers.
_LINK = re.compile(r'\s*<([^>]*)>((?:\s*;\s*[A-Za-z0-9*-]+\s*(?:=\s*(?:"(?:[^"\\]|\\.)*"|[^;,\s"]*))?)*)\s*')
_PARAM = re.compile(r';\s*([A-Za-z0-9*-]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;,\s"]*))?')
_ICE_SCHEMES = ("stun:", "turn:", "turns:")


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_ice_links(headers: Iterable[str]) -> list[IceServerValues]:
    """The STUN/TURN servers of every `rel="ice-server"` link in `headers` (each value may hold
    several links, comma-separated); links of other relations and other schemes are skipped."""
    servers: list[IceServerValues] = []
    for header in headers:
        position = 0
        while position < len(header):
            match = _LINK.match(header, position)
            if match is None:
                break  # not a link we can read: the rest of this header is ignored
            position = match.end()
            if position < len(header) and header[position] == ",":
                position += 1
            url = match[1].strip()
            params = {name.lower(): _unquoted(value or "") for name, value in _PARAM.findall(match[2])}
            if "ice-server" not in params.get("rel", "").lower().split():
                continue
            if not url.lower().startswith(_ICE_SCHEMES):
                continue
            servers.append((url, params.get("username"), params.get("credential")))
    return servers


def redirect_target(current: str, location: str) -> str:
    """Where a 307/308 answer's Location points, resolved against the URL that answered."""
    return urljoin(current, location)


def same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def token_may_follow(original: str, target: str) -> bool:
    """The Bearer token goes to a redirect's target unless it would drop from HTTPS to plain HTTP."""
    return not (urlsplit(original).scheme == "https" and urlsplit(target).scheme != "https")


def shown_url(url: str) -> str:
    """A target as logs, /api/status and /metrics show it: without user:password@ or a query (both
    may carry secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
