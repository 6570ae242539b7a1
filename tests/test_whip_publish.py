"""Publishing over WHIP to a real SFU: Janus 1.1.2 behind Debian's simple-whip-server, in a network
namespace whose veth carries 127.0.0.2 (support.janus). camcast runs inside it with --publish; an
aiortc subscriber joins the Janus room through Janus's HTTP API and decodes camcast's stamped
frames. Janus crashing mid-stream makes camcast publish again; shutting camcast down DELETEs the
session. Then the options: --publish, --publish-token, per-camera `publish`, bad URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aioice import stun
from aiortc import RTCPeerConnection, RTCSessionDescription

from camcast.config import ConfigError, load_config
from camcast.stamp import read_stamp
from camcast.webrtc.whiplink import parse_ice_links, shown_url
from support import janus
from support.coturn import start_coturn
from support.janus import JanusBed, janus_bed, watch_room_blocking
from support.rtspcamera import RtspCamera
from support.server import ServerProcess, camcast_command, clean_env
from support.waiting import eventually

TOKEN = "whip-test-token-5d1c"


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JanusBed]:
    problem = janus.missing()
    if problem:
        pytest.fail(problem)
    with janus_bed(tmp_path_factory.mktemp("janus")) as bed:
        yield bed


def launch_in(bed: JanusBed, workdir: Path, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
    """camcast inside the bed's namespace, HTTP on 127.0.0.1 there, ICE on the veth's address."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = camcast_command("--source", "testpattern", "--port", "0", "--ice-address", janus.ADDRESS,
                           "--recordings", str(workdir / "recordings"), *args)
    out, err = workdir / "server.stdout", workdir / "server.stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = bed.side.popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=workdir,
                              env=clean_env(env))
    server = ServerProcess(proc, argv, workdir, out, err, workdir / "recordings")
    server.wait_for_url()
    return server


def publish_status(bed: JanusBed, server: ServerProcess) -> dict[str, Any]:
    status = bed.side.call(server.status)
    assert len(status["publish"]) == 1, status["publish"]
    return status["publish"][0]


async def test_publishes_through_janus_and_again_after_janus_crashes(bed: JanusBed, tmp_path: Path) -> None:
    url = bed.create_endpoint("cam", token=TOKEN)
    server = launch_in(bed, tmp_path, "--publish", url, env={"CAMCAST_PUBLISH_TOKEN": TOKEN})
    try:
        first = await eventually(lambda: bed.side.acall(publish_status, bed, server), 15,
                                 "camcast publishing to Janus", until=lambda s: s["state"] == "publishing")
        assert first["url"] == url and first["retries"] == 0 and first["last_error"] is None

        watched = await bed.side.acall(watch_room_blocking, 30)
        assert watched.frames >= 30 and watched.size == (640, 480)
        # The test pattern's tone went along (one Opus m-line): about 50 packets a second.
        assert watched.audio_frames >= 20, watched.audio_frames
        # camcast's own pictures: the stamps are recent capture times, in order.
        now_us = time.time() * 1e6
        assert all(abs(now_us - stamp) < 10e6 for stamp in watched.stamps), watched.stamps[:3]
        assert watched.stamps == sorted(watched.stamps)
        print(f"first frame through Janus {watched.first_frame_after * 1000:.0f} ms after joining")

        # Janus crashes and comes back: camcast notices the silence and publishes again.
        assert bed.janus is not None
        crashed = time.monotonic()
        bed.janus.send_signal(signal.SIGKILL)
        bed.janus.wait()
        bed.start_janus()
        again = await eventually(lambda: bed.side.acall(publish_status, bed, server), 30,
                                 "camcast publishing again",
                                 until=lambda s: s["state"] == "publishing" and s["sessions"] >= 2)
        print(f"publishing again {time.monotonic() - crashed:.1f} s after Janus crashed")
        assert again["retries"] >= 1 and again["bytes_sent"] > first["bytes_sent"]

        watched = await bed.side.acall(watch_room_blocking, 30)
        assert watched.frames >= 30
        assert min(watched.stamps) > now_us  # pictures captured after the first subscriber's

        metrics = bed.side.call(server.get, "metrics")[2].decode()
        assert f'camcast_publish_state{{camera="default",state="publishing",target="{url}"}} 1.0' in metrics
        assert f'camcast_publish_retries_total{{camera="default",target="{url}"}}' in metrics
        assert TOKEN not in metrics and TOKEN not in server.log() and TOKEN not in server.stdout()

        deletes = bed.deletes_seen("cam")
        assert server.terminate()[0] == 0
        assert bed.deletes_seen("cam") == deletes + 1, bed.whip_log()[-2000:]
        assert bed.endpoint_state("cam")["enabled"] is False
        assert "answered 200" in server.log()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


async def test_a_refused_target_retries_and_leaves_local_viewers_alone(bed: JanusBed, tmp_path: Path) -> None:
    url = bed.create_endpoint("guarded", token=TOKEN)
    server = launch_in(bed, tmp_path, "--publish", url, "--publish-token", "wrong-token")
    try:
        status = await eventually(lambda: bed.side.acall(publish_status, bed, server), 15,
                                  "a second refused attempt", until=lambda s: s["retries"] >= 1)
        assert status["state"] in ("retrying", "connecting")
        assert "403" in (status["last_error"] or ""), status
        code, _, body = bed.side.call(server.get, "snapshot.jpg")
        assert code == 200 and body[:2] == b"\xff\xd8"
        assert bed.side.call(server.get, "healthz")[0] == 200
        assert "wrong-token" not in server.log() and "wrong-token" not in server.stdout()
        assert server.terminate()[0] == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


async def test_a_camera_passed_through_is_published_as_it_is(bed: JanusBed, tmp_path: Path) -> None:
    """An RTSP camera's own High-profile H.264 goes to Janus unchanged: camcast encodes nothing."""
    camera = RtspCamera(size=(1280, 720), gop=30, profile="high", host=janus.ADDRESS, wrap=bed.side.command())
    url = bed.create_endpoint("rtsp", token=TOKEN)
    with camera:
        server = launch_in(bed, tmp_path, "--source", camera.url, "--publish", url, "--publish-token", TOKEN)
        try:
            await eventually(lambda: bed.side.acall(publish_status, bed, server), 20,
                             "camcast publishing the camera", until=lambda s: s["state"] == "publishing")
            watched = await bed.side.acall(watch_room_blocking, 30)
            assert watched.frames >= 30 and watched.size == (1280, 720)
            now_us = time.time() * 1e6
            assert all(abs(now_us - stamp) < 10e6 for stamp in watched.stamps), watched.stamps[:3]
            status = bed.side.call(server.status)
            assert status["passthrough"]["mode"] == "passthrough", status["passthrough"]
            assert status["passthrough"]["profile_level_id"].startswith("64"), status["passthrough"]  # High
            assert status["encoders"]["h264"] is False, status["encoders"]
            assert server.terminate()[0] == 0
        finally:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()


# -- the options ------------------------------------------------------------------------------------

def test_publish_options_and_the_first_camera(tmp_path: Path) -> None:
    config = load_config(["--publish", "http://sfu.example/whip/a", "--publish", "https://sfu.example/whip/b",
                          "--publish-token", "sekrit"], env={})
    assert config.cameras[0].publish == ("http://sfu.example/whip/a", "https://sfu.example/whip/b")
    assert config.cameras[0].publish_token == "sekrit"
    assert "sekrit" not in repr(config)
    env = load_config([], env={"CAMCAST_PUBLISH": "http://a.example/w", "CAMCAST_PUBLISH_TOKEN": "t0k"})
    assert env.cameras[0].publish == ("http://a.example/w",) and env.cameras[0].publish_token == "t0k"

    file = tmp_path / "cams.toml"
    file.write_text('publish_token = "shared"\n'
                    '[cameras.front]\nsource = "testpattern"\n'
                    '[cameras.back]\nsource = "testpattern"\npublish = ["http://sfu.example/whip/back"]\n'
                    'publish_token = "own"\n')
    front = "http://sfu.example/whip/front"
    cameras = load_config(["--config", str(file), "--publish", front], env={}).cameras
    assert [(c.name, c.publish, c.publish_token) for c in cameras] == [
        ("front", (front,), "shared"),
        ("back", ("http://sfu.example/whip/back",), "own")]


@pytest.mark.parametrize("url", ["ftp://sfu.example/whip", "sfu.example/whip", "http:///whip",
                                 "http://sfu.example:99999/whip"])
def test_a_bad_publish_url_is_one_line_and_exit_2(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--publish"):
        load_config(["--publish", url], env={})
    file = tmp_path / "cams.toml"
    file.write_text(f'[cameras.front]\nsource = "testpattern"\npublish = [{json.dumps(url)}]\n')
    with pytest.raises(ConfigError, match=r"cams.toml: \[cameras.front\] publish"):
        load_config(["--config", str(file)], env={})


def test_the_server_stops_at_a_bad_publish_url_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "camcast", "--check", "--source", "testpattern",
                             "--publish", "ftp://user:pw@sfu.example/whip?token=t0k"], capture_output=True,
                            text=True, env=clean_env(), cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    # One line, and what it shows of the URL has neither the password nor the query's token.
    assert result.stderr == ("camcast: error: --publish ftp://sfu.example/whip: expected a WHIP endpoint "
                             "URL, http(s)://HOST[:PORT]/PATH\n")


def test_link_headers_and_shown_urls() -> None:
    servers = parse_ice_links([
        '<stun:stun.example.net>; rel="ice-server", <turn:turn.example.net?transport=udp>; rel="ice-server"; '
        'username="u\\"1"; credential="p,w"; credential-type="password"',
        '<https://example.net/other>; rel="help", <turns:t.example.net:5349>; rel=ice-server',
    ])
    assert servers == [("stun:stun.example.net", None, None),
                       ("turn:turn.example.net?transport=udp", 'u"1', "p,w"),
                       ("turns:t.example.net:5349", None, None)]
    assert shown_url("https://user:pw@sfu.example:8443/whip/x?token=abc") == "https://sfu.example:8443/whip/x"


# -- the WHIP client's HTTP side against an endpoint of our own (loopback, an aiortc answerer) -------

class StunRecorder(asyncio.DatagramProtocol):
    """A STUN server that answers binding requests and notes them: proof that the ICE servers of the
    endpoint's Link header reached the publisher's peer connection."""

    def __init__(self) -> None:
        self.requests = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if request.message_method != stun.Method.BINDING or request.message_class != stun.Class.REQUEST:
            return
        self.requests += 1
        response = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE,
                                transaction_id=request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        assert self.transport is not None
        self.transport.sendto(bytes(response), addr)


@dataclass
class Endpoint:
    """A WHIP endpoint: /old redirects (307) to /whip, which answers with an aiortc receiver."""

    stun_port: int | None  # the STUN server its Link header names; None: no Link header
    posts: list[dict[str, str]] = field(default_factory=list)
    offers: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    options: int = 0
    stamps: list[int] = field(default_factory=list)
    peers: list[RTCPeerConnection] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("OPTIONS", "/whip", self.on_options)
        app.router.add_route("*", "/old", self.on_old)  # OPTIONS and POST alike
        app.router.add_post("/whip", self.on_post)
        app.router.add_delete("/resource/{id}", self.on_delete)
        return app

    async def on_options(self, request: web.Request) -> web.Response:
        self.options += 1
        if self.stun_port is None:
            return web.Response(status=204)
        link = f'<stun:127.0.0.1:{self.stun_port}>; rel="ice-server"'
        return web.Response(status=204, headers={"Link": link})

    async def on_old(self, request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/whip")

    async def on_post(self, request: web.Request) -> web.Response:
        self.posts.append({"authorization": request.headers.get("Authorization", ""),
                           "content_type": request.content_type})
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401, text="who are you")
        pc = RTCPeerConnection()
        self.peers.append(pc)
        self.offers.append(await request.text())
        pc.on("track", lambda track: self.tasks.append(asyncio.ensure_future(self._read(track))))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=self.offers[-1], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": f"/resource/{len(self.peers)}"})

    async def on_delete(self, request: web.Request) -> web.Response:
        self.deletes.append(request.match_info["id"] + " " + request.headers.get("Authorization", ""))
        return web.Response(status=200)

    async def _read(self, track: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                self.stamps.append(read_stamp(frame.to_ndarray(format="bgr24")))


@contextlib.asynccontextmanager
async def serving(endpoint: Endpoint) -> AsyncIterator[int]:
    """The endpoint on 127.0.0.1 (its port), its receiving peers closed afterwards."""
    runner = web.AppRunner(endpoint.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        for task in endpoint.tasks:
            task.cancel()
        for pc in endpoint.peers:
            await pc.close()
        await runner.cleanup()


async def test_redirect_token_link_servers_and_delete(start_server: Any, loopback_ice: None) -> None:
    loop = asyncio.get_running_loop()
    stun_transport, recorder = await loop.create_datagram_endpoint(StunRecorder, local_addr=("127.0.0.1", 0))
    endpoint = Endpoint(stun_transport.get_extra_info("sockname")[1])
    try:
        async with serving(endpoint) as port:
            server = start_server("--publish", f"http://127.0.0.1:{port}/old",
                                  env={"CAMCAST_PUBLISH_TOKEN": TOKEN})
            status = await eventually(lambda: server.status()["publish"][0], 15, "publishing",
                                      until=lambda s: s["state"] == "publishing")
            assert status["url"] == f"http://127.0.0.1:{port}/old"
            await eventually(lambda: len(endpoint.stamps) >= 30, 15, "30 frames at the endpoint")
            assert abs(time.time() * 1e6 - endpoint.stamps[-1]) < 5e6
            # The redirect was followed with the token and the SDP; the Link header's STUN server was used.
            assert endpoint.posts == [{"authorization": f"Bearer {TOKEN}", "content_type": "application/sdp"}]
            assert endpoint.options == 1 and recorder.requests >= 1
            # In a thread: the endpoint lives on this event loop and must answer the DELETE meanwhile.
            assert (await asyncio.to_thread(server.terminate))[0] == 0
            assert endpoint.deletes == [f"1 Bearer {TOKEN}"]
            assert TOKEN not in server.log() and TOKEN not in server.stdout()
    finally:
        stun_transport.close()


async def test_the_publisher_uses_our_turn_server_when_the_endpoint_names_none(
        start_server: Any, loopback_ice: None, tmp_path: Path) -> None:
    """--ice-server and --turn-secret reach the publisher too: with credentials minted for it,
    Debian's coturn gives its peer a relayed address, offered to the SFU beside its own."""
    secret = "whip-turn-secret-41c9"
    turn = start_coturn(tmp_path / "coturn", "127.0.0.1", secret)
    endpoint = Endpoint(None)
    try:
        async with serving(endpoint) as port:
            server = start_server("--publish", f"http://127.0.0.1:{port}/whip", "--publish-token", TOKEN,
                                  "--ice-server", f"turn:127.0.0.1:{turn.port}", "--turn-secret", secret)
            await eventually(lambda: server.status()["publish"][0], 15, "publishing",
                             until=lambda s: s["state"] == "publishing")
            relayed = [line for line in endpoint.offers[0].splitlines()
                       if line.startswith("a=candidate:") and " typ relay" in line]
            assert relayed and all(" 127.0.0.1 " in line for line in relayed), endpoint.offers[0]
            await eventually(lambda: len(endpoint.stamps) >= 10, 15, "frames at the endpoint")
    finally:
        turn.stop()
