"""Keep aiortc peers in the test process on 127.0.0.1.

aioice gathers host candidates from every interface except loopback; tests must never send
traffic to the machine's other addresses, so they replace `aioice.ice.get_host_addresses`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

LOOPBACK = "127.0.0.1"


def loopback_host_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
    """Drop-in for aioice.ice.get_host_addresses that offers only 127.0.0.1."""
    return [LOOPBACK] if use_ipv4 else []


def patch_aioice(monkeypatch: Any) -> None:
    """Patch with pytest's monkeypatch (undone at the end of the test)."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback_host_addresses)


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Patch for the duration of a `with` block (for code outside a test function)."""
    import aioice.ice

    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = loopback_host_addresses
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


def rtc_configuration() -> Any:
    """An RTCConfiguration with no STUN/TURN servers: host candidates only."""
    from aiortc import RTCConfiguration

    return RTCConfiguration(iceServers=[])


def candidate_addresses(sdp: str) -> set[str]:
    """The connection addresses of every a=candidate line in an SDP (to assert loopback only)."""
    addresses = set()
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) > 4:
                addresses.add(fields[4])
    return addresses
