"""ICE settings: the STUN/TURN servers (with TURN credentials minted from a shared secret), the
RTCConfiguration for server peers, and the host addresses they offer."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterator, Sequence

from aiortc import RTCConfiguration, RTCIceServer

from camcast.webrtc.compat import host_addresses_replaced
from camcast.webrtc.options import IceServerValues, WebRtcOptions

log = logging.getLogger("camcast.webrtc")


TURN_CREDENTIAL_TTL = 3600  # seconds a minted TURN credential stays valid
TURN_USER = "camcast"  # the name part of minted usernames (what the TURN server takes for the user)


def turn_credentials(secret: str, now: float, ttl: int = TURN_CREDENTIAL_TTL) -> tuple[str, str]:
    """A username and password for a TURN server that shares `secret` (coturn's `use-auth-secret`,
    the TURN REST API): "<expiry unix time>:camcast" and base64(HMAC-SHA1(secret, username)).
    The server checks the HMAC and the expiry itself, so nothing is stored on either side."""
    username = f"{int(now) + ttl}:{TURN_USER}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def current_ice_servers(options: WebRtcOptions, now: float | None = None) -> list[IceServerValues]:
    """The configured servers as they are to be used now: with --turn-secret, a TURN server given
    without user and password gets freshly minted credentials (call it per peer and per answer:
    they expire)."""
    servers = []
    for url, username, credential in options.ice_servers:
        if username is None and options.turn_secret and not url.startswith("stun:"):
            username, credential = turn_credentials(options.turn_secret, time.time() if now is None else now)
        servers.append((url, username, credential))
    return servers


def rtc_configuration(servers: Sequence[IceServerValues]) -> RTCConfiguration:
    # An explicit empty list: aiortc falls back to a public Google STUN server when given None.
    return RTCConfiguration(iceServers=[
        RTCIceServer(urls=url, username=username, credential=credential)
        for url, username, credential in servers
    ])


def link_headers(servers: Sequence[IceServerValues]) -> list[str]:
    """WHEP `Link: <url>; rel="ice-server"` headers, so a player can use the same STUN/TURN servers."""
    links = []
    for url, username, credential in servers:
        link = f'<{url}>; rel="ice-server"'
        if username is not None:
            user, secret = _quoted(username), _quoted(credential or "")
            link += f'; username="{user}"; credential="{secret}"; credential-type="password"'
        links.append(link)
    return links


def _quoted(text: str) -> str:
    """The inside of an HTTP quoted-string (RFC 9110 5.6.4); control characters never get here."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def fixed_host_addresses(addresses: Sequence[str]) -> Callable[[bool, bool], list[str]]:
    """A stand-in for aioice's interface discovery that returns exactly `addresses`."""
    parsed = [ipaddress.ip_address(a) for a in addresses]

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [str(a) for a in parsed if (use_ipv4 and a.version == 4) or (use_ipv6 and a.version == 6)]

    return get_host_addresses


@contextlib.contextmanager
def offered_host_addresses(addresses: Sequence[str]) -> Iterator[None]:
    """While inside, every ICE agent in this process gathers host candidates on `addresses` only.

    aioice has no per-connection setting for this, so its module-level discovery function is
    replaced for the app's lifetime and restored afterwards. Nothing changes when `addresses` is
    empty (aioice then offers every non-loopback interface).
    """
    if not addresses:
        yield
        return
    for address in addresses:
        problem = _bind_problem(address)
        if problem:
            log.warning("--ice-address %s cannot be used (%s): ICE binds its host candidates to it, so "
                        "it must be an address of this machine", address, problem)
    log.info("ICE host candidates: %s", ", ".join(addresses))
    with host_addresses_replaced(fixed_host_addresses(addresses)):
        yield


def _bind_problem(address: str) -> str | None:
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((address, 0))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
