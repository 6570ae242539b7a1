"""ICE settings: the RTCConfiguration for server peers, and the host addresses they offer."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterator, Sequence

from aiortc import RTCConfiguration, RTCIceServer

from camcast.webrtc.compat import host_addresses_replaced
from camcast.webrtc.options import IceServerValues

log = logging.getLogger("camcast.webrtc")


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
