"""Mutated real SDP offers against POST /offer and POST /whep: never a 500, never a leaked peer.

The mutations start from a real aiortc offer (video, audio, data channel): cut short, lines
duplicated, dropped, swapped or garbled, m-sections dropped or duplicated, the BUNDLE group
shuffled, numbers made absurd, random bytes, and thousands of candidates. Every answer is a 2xx
(then the session is ended with DELETE) or a 4xx with a reason; afterwards no peer is left, the
server is healthy, and a real viewer still plays.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from support.server import ServerProcess, running
from support.webrtc_viewer import Viewer

pytestmark = pytest.mark.usefixtures("loopback_ice")

MUTATIONS = 150
SEED = 20240501
SDP = "application/sdp"


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(tmp_path_factory.mktemp("sdp-fuzz"), ["--size", "160x120"]) as server:
        yield server


async def real_offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        pc.createDataChannel("control")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


# -- mutations: each takes the offer's lines and a random source, and returns a body --------------
Lines = list[str]


def _join(lines: Lines) -> str:
    return "\r\n".join(lines)


def _sections(lines: Lines) -> list[int]:
    return [i for i, line in enumerate(lines) if line.startswith("m=")]


def truncate(lines: Lines, rng: random.Random) -> str | bytes:
    text = _join(lines)
    return text[: rng.randrange(len(text))]


def duplicate_line(lines: Lines, rng: random.Random) -> str | bytes:
    i = rng.randrange(len(lines))
    return _join([*lines[: i + 1], *[lines[i]] * rng.choice((1, 2, 50)), *lines[i + 1 :]])


def drop_line(lines: Lines, rng: random.Random) -> str | bytes:
    i = rng.randrange(len(lines))
    return _join(lines[:i] + lines[i + 1 :])


def swap_lines(lines: Lines, rng: random.Random) -> str | bytes:
    out = list(lines)
    i, j = rng.randrange(len(out)), rng.randrange(len(out))
    out[i], out[j] = out[j], out[i]
    return _join(out)


def garble_line(lines: Lines, rng: random.Random) -> str | bytes:
    out = list(lines)
    i = rng.randrange(len(out))
    junk = "".join(rng.choice("0123456789 :/=abcxyz-.\t\x00") for _ in range(rng.randrange(60)))
    out[i] = out[i][:2] + junk
    return _join(out)


def drop_section(lines: Lines, rng: random.Random) -> str | bytes:
    starts = _sections(lines)
    k = rng.randrange(len(starts))
    end = starts[k + 1] if k + 1 < len(starts) else len(lines)
    return _join(lines[: starts[k]] + lines[end:])


def duplicate_section(lines: Lines, rng: random.Random) -> str | bytes:
    starts = _sections(lines)
    k = rng.randrange(len(starts))
    end = starts[k + 1] if k + 1 < len(starts) else len(lines)
    return _join(lines[:end] + lines[starts[k] : end] + lines[end:])


def shuffle_bundle(lines: Lines, rng: random.Random) -> str | bytes:
    out = list(lines)
    i = next(i for i, line in enumerate(out) if line.startswith("a=group:BUNDLE"))
    mids = [*out[i].split()[1:], "9", "x"]
    rng.shuffle(mids)
    out[i] = "a=group:BUNDLE " + " ".join(mids[: rng.randrange(len(mids) + 1)])
    return _join(out)


def absurd_numbers(lines: Lines, rng: random.Random) -> str | bytes:
    huge = rng.choice(("99999999999999999999", "-1", "0", "65536", "1e400"))
    out = []
    for line in lines:
        if line.startswith(("m=", "a=rtpmap:", "a=fmtp:", "a=candidate:", "a=ssrc:", "a=max-message")):
            fields = line.split(" ")
            j = rng.randrange(len(fields))
            fields[j] = "".join(huge if c.isdigit() else c for c in fields[j]) if rng.random() < 0.5 else huge
            line = " ".join(fields)
        out.append(line)
    return _join(out)


def random_bytes(lines: Lines, rng: random.Random) -> str | bytes:
    data = bytearray(_join(lines).encode())
    for _ in range(rng.randrange(1, 30)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def many_candidates(lines: Lines, rng: random.Random) -> str | bytes:
    count = rng.choice((300, 10_000))  # 300 fit in 64 KB; 10 000 do not (413)
    candidates = [f"a=candidate:{n} 1 udp {2130706431 - n} 127.0.0.1 {20000 + n} typ host"
                  for n in range(count)]
    i = next(i for i, line in enumerate(lines) if line.startswith("a=candidate:"))
    return _join(lines[: i + 1] + candidates + lines[i + 1 :])


MUTATORS: list[Callable[[Lines, random.Random], str | bytes]] = [
    truncate, duplicate_line, drop_line, swap_lines, garble_line, drop_section, duplicate_section,
    shuffle_bundle, absurd_numbers, random_bytes, many_candidates,
]


# -- the test -------------------------------------------------------------------------------------
async def send(http: aiohttp.ClientSession, base: str, via: str,
               body: str | bytes) -> tuple[int, str, str | None]:
    """POST the offer; returns (status, text, the session's DELETE path when one was created)."""
    if via == "whep":
        data = body if isinstance(body, bytes) else body.encode()
        async with http.post(base + "whep", data=data, headers={"Content-Type": SDP}) as r:
            text = await r.text(errors="replace")
            return r.status, text, r.headers.get("Location") if r.status == 201 else None
    sdp = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    async with http.post(base + "offer", data=json.dumps({"sdp": sdp, "type": "offer"}),
                         headers={"Content-Type": "application/json"}) as r:
        text = await r.text(errors="replace")
        return r.status, text, f"/whep/{json.loads(text)['id']}" if r.status == 200 else None


async def test_mutated_offers_never_500_nor_leak_a_peer(fuzz_server: ServerProcess,
                                                        http: aiohttp.ClientSession) -> None:
    lines = (await real_offer()).split("\r\n")
    rng = random.Random(SEED)
    outcomes: Counter[tuple[str, int]] = Counter()
    started = time.monotonic()
    for n in range(MUTATIONS):
        mutator = MUTATORS[n % len(MUTATORS)]
        body = mutator(lines, rng)
        via = "whep" if n % 2 else "offer"
        status, text, session = await send(http, fuzz_server.url, via, body)
        outcomes[(mutator.__name__, status)] += 1
        assert status in (200, 201, 400, 413, 415, 422), (mutator.__name__, via, status, text[:200])
        if status >= 400:
            assert text.strip(), f"{status} without a reason"
        if session is not None:
            async with http.delete(fuzz_server.url + session.lstrip("/")) as r:
                assert r.status == 200
    elapsed = time.monotonic() - started
    print(f"\n{MUTATIONS} mutated offers in {elapsed:.1f} s: "
          + ", ".join(f"{name} {status} x{count}" for (name, status), count in sorted(outcomes.items())))
    assert any(status == 413 for _, status in outcomes), "10 000 candidates are over the 64 KB limit"
    assert any(status in (200, 201) for _, status in outcomes)
    assert any(status == 400 for _, status in outcomes)

    async with http.get(fuzz_server.url + "api/status") as r:
        webrtc = (await r.json())["webrtc"]
    assert webrtc["peers"] == 0 and webrtc["negotiating"] == 0 and webrtc["sessions"] == []
    async with http.get(fuzz_server.url + "healthz") as r:
        assert r.status == 200
    assert "did not close cleanly" not in fuzz_server.log()  # every refused peer let go of its sockets
    # The server still serves real viewers.
    viewer = Viewer(fuzz_server.url, read_stamps=False)
    try:
        await viewer.connect(http)
        await viewer.wait_frames(5)
    finally:
        await viewer.close()
