"""TURN: GET /api/ice-servers, credentials minted from --turn-secret (coturn's use-auth-secret), and
a viewer that reaches the server only through a relay.

The credentials are checked by Debian's coturn itself: a real allocation and a relayed datagram
with aioice (aiortc's ICE), and two aiortc peers that may only use relay candidates. Then the
emulated network (support.netlab): the server in one namespace with coturn next to it on
127.0.0.4, Chromium in the viewer's namespace, and iptables letting nothing but the web port
through between the two, so the only way for the media is the relay. Without TURN the player
cannot connect over WebRTC on that network (and falls back to MJPEG), which proves the block.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aioice import stun, turn
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from camcast.config import ConfigError, load_config
from camcast.webrtc import PeerRegistry, WebRtcOptions
from camcast.webrtc.iceconfig import TURN_CREDENTIAL_TTL, current_ice_servers, turn_credentials
from support.coturn import Coturn, start_coturn
from support.netlab import NetLab, launch_server, netlab
from support.server import ServerProcess
from support.waiting import eventually

SECRET = "test-turn-secret-7f3a"
TOKEN = "turn-test-token"
TURN_ADDRESS = "127.0.0.4"  # coturn in the server's namespace; the viewer reaches it over the veth
USERNAME = re.compile(r"(\d+):camcast")


def expected_password(secret: str, username: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def check_minted(username: str, credential: str, secret: str = SECRET) -> None:
    """The TURN REST API form: "<expiry>:camcast", expiring an hour from now, and its HMAC."""
    match = USERNAME.fullmatch(username)
    assert match, username
    assert abs(int(match.group(1)) - (time.time() + TURN_CREDENTIAL_TTL)) < 60
    assert credential == expected_password(secret, username)


# -- the endpoint and the options (a real server, loopback HTTP only) ------------------------------

async def test_ice_servers_route_mints_turn_credentials_behind_the_token(start_server, http) -> None:
    server = start_server("--token", TOKEN, "--ice-server", "stun:127.0.0.1:3478",
                          "--ice-server", "turn:127.0.0.1:3478?transport=tcp",
                          "--ice-server", "turn:alice:pa%24s@127.0.0.1:3479",
                          env={"CAMCAST_TURN_SECRET": SECRET})
    async with http.get(server.url + "api/ice-servers") as response:
        assert response.status == 401  # like every /api/ route
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with http.get(server.url + "api/ice-servers", headers=auth) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
    stun_server, minted, static = body["iceServers"]
    assert stun_server == {"urls": "stun:127.0.0.1:3478"}
    assert minted["urls"] == "turn:127.0.0.1:3478?transport=tcp"
    check_minted(minted["username"], minted["credential"])
    assert static == {"urls": "turn:127.0.0.1:3479", "username": "alice", "credential": "pa$s"}
    # WHEP players get the same servers, with credentials minted for each answer.
    async with http.options(server.url + "whep", headers=auth) as response:
        links = response.headers.getall("Link")
    (link,) = [link for link in links if link.startswith("<turn:127.0.0.1:3478?")]
    username, credential = re.fullmatch(r'.*username="([^"]+)"; credential="([^"]+)".*', link).groups()
    check_minted(username, credential)
    # The page can ask with the token in the query too (as <img> and WHEP players do).
    async with http.get(server.url + "api/ice-servers", params={"token": TOKEN}) as response:
        assert response.status == 200
    assert SECRET not in server.log() + server.stdout()


async def test_without_servers_the_route_lists_none(server: ServerProcess, http) -> None:
    async with http.get(server.url + "api/ice-servers") as response:
        assert response.status == 200
        assert await response.json() == {"iceServers": []}


def test_turn_secret_options() -> None:
    config = load_config(["--ice-server", "turn:turn.example.org"], env={"CAMCAST_TURN_SECRET": SECRET})
    assert config.turn_secret == SECRET
    assert SECRET not in repr(config)  # never printed with the config
    with pytest.raises(ConfigError, match="--turn-secret needs a TURN server"):
        load_config(["--turn-secret", SECRET, "--ice-server", "stun:stun.example.org"])
    with pytest.raises(ConfigError, match="--turn-secret needs a TURN server"):  # one with a user is no use
        load_config(["--turn-secret", SECRET, "--ice-server", "turn:a:b@turn.example.org"])
    with pytest.raises(ConfigError, match=r"needs USER:PASSWORD@ before the host \(or --turn-secret\)"):
        load_config(["--ice-server", "turn:turn.example.org"])
    servers = (("stun:h", None, None), ("turn:h", None, None), ("turn:g", "u", "p"))
    options = WebRtcOptions(ice_servers=servers, turn_secret=SECRET)
    assert SECRET not in repr(options)
    assert current_ice_servers(options, now=1000.0) == [
        ("stun:h", None, None),  # STUN needs no credentials
        ("turn:h", "4600:camcast", expected_password(SECRET, "4600:camcast")),  # expires 3600 s later
        ("turn:g", "u", "p"),  # given by hand: kept
    ]


# -- the credentials against coturn (this namespace, 127.0.0.1) ------------------------------------

@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    server = start_coturn(tmp_path / "coturn", "127.0.0.1", SECRET)
    try:
        yield server
    finally:
        server.stop()


class _Received(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, tuple[str, int]]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.datagrams.append((data, addr))


async def allocate(coturn: Coturn, username: str, password: str) -> tuple[asyncio.DatagramTransport, Any]:
    """A TURN allocation on coturn with aioice, aiortc's ICE library."""
    return await turn.create_turn_endpoint(asyncio.DatagramProtocol, (coturn.address, coturn.port),
                                           username=username, password=password, lifetime=60)


async def test_minted_credentials_allocate_on_coturn_and_relay(coturn: Coturn) -> None:
    options = WebRtcOptions(ice_servers=((coturn.url, None, None),), turn_secret=SECRET)
    ((url, username, password),) = current_ice_servers(options)
    assert url == coturn.url and username is not None and password is not None
    loop = asyncio.get_running_loop()
    peer, received = await loop.create_datagram_endpoint(_Received, local_addr=("127.0.0.1", 0))
    relay, _ = await allocate(coturn, username, password)
    try:
        relayed = relay.get_extra_info("sockname")
        assert relayed[0] == coturn.address  # an allocation on coturn's relay address
        relay.sendto(b"through the relay", peer.get_extra_info("sockname"))
        await eventually(lambda: received.datagrams, 5, "the relayed datagram")
        assert received.datagrams[0] == (b"through the relay", relayed)
    finally:
        relay.close()
        peer.close()

    # coturn refuses what the secret did not sign, and what has expired.
    now = time.time()
    expired = turn_credentials(SECRET, now - 2 * TURN_CREDENTIAL_TTL)
    other_secret = turn_credentials("another-secret", now)
    renamed = (username.replace(":camcast", ":someone"), password)
    for bad_user, bad_password in (expired, other_secret, renamed):
        with pytest.raises(stun.TransactionFailed, match="401"):
            await allocate(coturn, bad_user, bad_password)


async def test_aiortc_peers_with_the_servers_configuration_connect_over_the_relay(coturn: Coturn) -> None:
    # The configuration the server gives each of its peers, held to relay candidates only.
    registry = PeerRegistry(WebRtcOptions(ice_servers=((coturn.url, None, None),), turn_secret=SECRET))

    def relay_only() -> RTCConfiguration:
        return RTCConfiguration(iceServers=registry.configuration.iceServers,
                                iceTransportPolicy=RTCIceTransportPolicy.RELAY)

    (server_side,) = registry.configuration.iceServers
    check_minted(server_side.username, server_side.credential)
    a, b = RTCPeerConnection(relay_only()), RTCPeerConnection(relay_only())
    try:
        channel = a.createDataChannel("check")
        opened: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        @b.on("datachannel")
        def on_channel(incoming: Any) -> None:
            incoming.on("message", lambda message: opened.done() or opened.set_result(message))

        channel.on("open", lambda: channel.send("hello over the relay"))
        await a.setLocalDescription(await a.createOffer())
        assert " typ relay" in a.localDescription.sdp and " typ host" not in a.localDescription.sdp
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        assert await asyncio.wait_for(opened, 20) == "hello over the relay"
    finally:
        await a.close()
        await b.close()


# -- the emulated network: only the relay connects the viewer and the server ----------------------

PC_HOOK_JS = """(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    pc.__states = [];
    pc.addEventListener("iceconnectionstatechange", () => pc.__states.push(pc.iceConnectionState));
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
})();"""

# Every connection the page made: its ICE states, its servers, and (while open) the candidates
# of the selected pair and the frames decoded.
PCS_JS = """async () => {
  const out = [];
  for (const pc of window.__pcs || []) {
    const servers = pc.getConfiguration().iceServers.map((s) => ({urls: s.urls, username: s.username}));
    const entry = {state: pc.connectionState, states: pc.__states, servers,
                   answerRelay: !!pc.remoteDescription && / typ relay /.test(pc.remoteDescription.sdp),
                   frames: 0, local: null, remote: null};
    if (pc.connectionState !== "closed") {
      const report = await pc.getStats();
      let pair = null;
      report.forEach((s) => {
        if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
        if (s.type === "inbound-rtp" && s.kind === "video") entry.frames += s.framesDecoded || 0;
      });
      const local = pair && report.get(pair.localCandidateId);
      const remote = pair && report.get(pair.remoteCandidateId);
      if (local) entry.local = {type: local.candidateType, address: local.address, url: local.url || null};
      if (remote) entry.remote = {type: remote.candidateType, address: remote.address};
    }
    out.push(entry);
  }
  return out;
}"""

PLAYER_PLAYS = ("window.camcast && window.camcast.transport === 'webrtc' "
                "&& window.camcast.state === 'playing' && window.camcast.framesDecoded > 10")
WALL_PLAYS = """window.camcastWall ? window.camcastWall.stats().then((tiles) =>
  Object.values(tiles).length === 2
  && Object.values(tiles).every((t) => t.transport === 'webrtc' && t.framesDecoded > 10)) : false"""
PLAYER_ON_MJPEG = ("window.camcast && window.camcast.transport === 'mjpeg' "
                   "&& window.camcast.framesDecoded > 3 "
                   "&& String(window.camcast.lastError).startsWith('WebRTC')")


def block_direct_path(lab: NetLab, web_port: int) -> None:
    """Between the viewer (127.0.0.3) and the server (127.0.0.2) only the web port passes, in both
    directions; coturn on 127.0.0.4 stays reachable."""
    server, viewer = lab.server, lab.viewer
    # The viewer reaches coturn over the veth (in the server's namespace 127.0.0.4 is local).
    lab.viewer.run("ip", "route", "add", f"{TURN_ADDRESS}/32", "dev", viewer.interface, "src", viewer.address)
    inbound = ["INPUT", "-i", server.interface, "-s", viewer.address, "-d", server.address]
    outbound = ["OUTPUT", "-o", server.interface, "-s", server.address, "-d", viewer.address]
    server.run("iptables", "-A", *inbound, "-p", "tcp", "--dport", str(web_port), "-j", "ACCEPT")
    server.run("iptables", "-A", *outbound, "-p", "tcp", "--sport", str(web_port), "-j", "ACCEPT")
    for rule in (inbound, outbound):
        server.run("iptables", "-A", *rule, "-j", "DROP")


def dropped(lab: NetLab, chain: str) -> int:
    out = lab.server.run("iptables", "-L", chain, "-v", "-x", "-n").stdout
    return sum(int(line.split()[0]) for line in out.splitlines()[2:] if " DROP " in f" {line} ")


@pytest.fixture
def lab() -> Iterator[NetLab]:
    with netlab() as bed:
        yield bed


def start_server(lab: NetLab, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
    # Small pictures: two cameras on a shared machine; the stamp is not read here.
    return launch_server(lab, tmp_path / "server", ["--size", "320x240", "--fps", "15", *args], env=env)


Connections = list[dict[str, Any]]


async def _open(browser: Any, url: str, ready: str, timeout: float) -> Connections:
    """Open `url`, wait until `ready` holds there; what every RTCPeerConnection of the page says."""
    from support.browser import open_page

    async with open_page(browser, url) as page:
        await page.add_init_script(PC_HOOK_JS)
        await page.goto(url)
        try:
            await eventually(lambda: page.evaluate(ready), timeout, ready, interval=0.2)
        except AssertionError as exc:
            state, pcs = await page.evaluate("window.camcast"), await page.evaluate(PCS_JS)
            raise AssertionError(f"{exc}; player: {state}; connections: {pcs}") from None
        return await page.evaluate(PCS_JS)


async def _watch(pages: list[tuple[str, str]], timeout: float) -> list[Connections]:
    """Each (url, ready) in turn in one Chromium, started in this thread's namespace."""
    from playwright.async_api import async_playwright

    from support.browser import launch_chromium

    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            return [await _open(browser, url, ready, timeout) for url, ready in pages]
        finally:
            await browser.close()


def watch_in_viewer(lab: NetLab, pages: list[tuple[str, str]], timeout: float = 40) -> list[Connections]:
    return lab.viewer.call(asyncio.run, _watch(pages, timeout))


def test_player_and_wall_play_over_the_relay_when_only_the_web_port_passes(lab: NetLab,
                                                                          tmp_path: Path) -> None:
    coturn = start_coturn(tmp_path / "coturn", TURN_ADDRESS, SECRET, port=3478, side=lab.server)
    server = start_server(lab, tmp_path, "--camera", "side=testpattern", "--ice-server", coturn.url,
                          env={"CAMCAST_TURN_SECRET": SECRET})
    try:
        block_direct_path(lab, server.port)
        player, wall = watch_in_viewer(lab, [(server.url + "cameras/side/", PLAYER_PLAYS),
                                             (server.url, WALL_PLAYS)])
        print(f"\nplayer: {player[-1]['local']} -> {player[-1]['remote']}; "
              f"wall: {wall[-1]['local']} -> {wall[-1]['remote']}; "
              f"dropped on the direct path: {dropped(lab, 'INPUT')} in, {dropped(lab, 'OUTPUT')} out")
        for pcs in (player, wall):
            pc = pcs[-1]
            assert pc["state"] == "connected"
            (servers,) = pc["servers"]  # the page asked the server for them
            assert servers["urls"] == [coturn.url]
            assert USERNAME.fullmatch(servers["username"])
            # The viewer's end of the pair in use is its relay on coturn; the server allocated one too
            # (its answer offers it), with credentials minted from the same secret.
            assert pc["local"]["type"] == "relay" and pc["local"]["address"] == TURN_ADDRESS
            assert pc["answerRelay"]
            assert pc["frames"] > 10
        # The direct path was tried (host candidates on both sides) and blocked.
        assert dropped(lab, "INPUT") > 0 and dropped(lab, "OUTPUT") > 0
        assert SECRET not in server.log() + server.stdout()
    finally:
        code, _ = server.terminate()
        coturn.stop()
    assert code == 0


def test_without_turn_the_player_cannot_connect_on_that_network(lab: NetLab, tmp_path: Path) -> None:
    server = start_server(lab, tmp_path)
    try:
        block_direct_path(lab, server.port)
        # The web port still passes: the player falls back to MJPEG after WebRTC failed.
        (pcs,) = watch_in_viewer(lab, [(server.url, PLAYER_ON_MJPEG)])
        assert pcs, "the player tried WebRTC"
        for pc in pcs:
            assert pc["servers"] == []
            assert "checking" in pc["states"], pc  # candidates were there to check ...
            assert not {"connected", "completed"} & set(pc["states"]), pc  # ... and none connected
        assert dropped(lab, "INPUT") > 0
    finally:
        code, _ = server.terminate()
    assert code == 0

