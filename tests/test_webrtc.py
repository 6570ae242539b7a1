"""WebRTC output: real aiortc peers over loopback against the real server (POST /offer, control channel).

Most tests share one server (320x240 at 30 fps, keyframes only when forced: --keyframe-interval 60,
so a keyframe that arrives quickly proves a forced one). Peers gather 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from camcast.config import ConfigError, load_config, parse_ice_server
from camcast.control import ControlBus
from camcast.frames import EncodedPacket
from camcast.hub import Hub
from camcast.viewers import Viewers
from camcast.webrtc import peer as peer_module
from camcast.webrtc.iceconfig import fixed_host_addresses, link_headers, rtc_configuration
from camcast.webrtc.offer import OfferError
from camcast.webrtc.options import WebRtcOptions
from camcast.webrtc.peer import Peer
from camcast.webrtc.registry import PeerRegistry
from camcast.webrtc.track import PacketTrack
from support.loopback import candidate_addresses
from support.server import ServerProcess, clean_env, launch
from support.waiting import eventually
from support.webrtc_viewer import OfferRejected, Viewer

pytestmark = pytest.mark.usefixtures("loopback_ice")

MakeViewer = Callable[..., Viewer]
VIEWER_SCRIPT = Path(__file__).parent / "support" / "webrtc_viewer.py"


@pytest.fixture(scope="module")
def rtc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = launch(tmp_path_factory.mktemp("webrtc"), ["--size", "320x240", "--keyframe-interval", "60"])
    try:
        yield server
    finally:
        code, _ = server.terminate()
        assert code == 0, server.describe()
        assert "Traceback" not in server.log(), server.describe()


@pytest_asyncio.fixture
async def viewer() -> AsyncIterator[MakeViewer]:
    """Factory for Viewer objects; every one is closed at the end of the test."""
    made: list[Viewer] = []

    def make(url: str, **options: Any) -> Viewer:
        made.append(Viewer(url, **options))
        return made[-1]

    yield make
    await asyncio.gather(*(v.close() for v in made), return_exceptions=True)


async def webrtc_status(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, Any]:
    async with http.get(server.url + "api/status") as r:
        assert r.status == 200
        status = await r.json()
    return status | {"viewers_webrtc": status["viewers"]["webrtc"], **status["webrtc"]}


async def wait_status(http: aiohttp.ClientSession, server: ServerProcess,
                      check: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
    return await eventually(lambda: webrtc_status(http, server), timeout, "the status to match", until=check)


def no_peers(status: dict[str, Any]) -> bool:
    return status["peers"] == 0 and status["viewers_webrtc"] == 0


# -- media ----------------------------------------------------------------------------------------

async def test_h264_frames_decode_with_sane_latency(rtc_server: ServerProcess, viewer: MakeViewer,
                                                    http: aiohttp.ClientSession) -> None:
    await wait_status(http, rtc_server, no_peers)
    v = viewer(rtc_server.url)  # aiortc offers VP8 and H.264: auto picks H.264
    await v.connect(http)
    assert candidate_addresses(v.answer["sdp"]) == {"127.0.0.1"}
    frames = await v.wait_frames(45)
    first_frame_ms = (frames[0].arrived - v.offer_sent_at) * 1000
    status = await webrtc_status(http, rtc_server)
    (session,) = status["sessions"]
    assert session["codec"] == "h264" and session["id"] == v.answer["id"]
    assert status["viewers_webrtc"] == 1
    assert frames[0].key, "a peer starts on a keyframe"
    assert {(f.width, f.height) for f in frames} == {(320, 240)}
    latencies = sorted(f.latency_ms for f in frames[5:] if f.latency_ms is not None)
    median, worst = statistics.median(latencies), latencies[-1]
    print(f"\n1 peer H.264 320x240: capture-to-decode median {median:.1f} ms, max {worst:.1f} ms; "
          f"offer to first decoded frame {first_frame_ms:.0f} ms")
    assert -50 < median < 1000, latencies
    assert first_frame_ms < 5000


async def test_auto_sends_vp8_to_a_peer_without_h264(rtc_server: ServerProcess, viewer: MakeViewer,
                                                     http: aiohttp.ClientSession) -> None:
    v = viewer(rtc_server.url, codecs=["vp8"])
    await v.connect(http)
    assert "VP8/90000" in v.answer["sdp"] and "H264" not in v.answer["sdp"]
    frames = await v.wait_frames(20)
    latencies = [f.latency_ms for f in frames[5:] if f.latency_ms is not None]
    assert -50 < statistics.median(latencies) < 1000
    status = await webrtc_status(http, rtc_server)
    (session,) = [s for s in status["sessions"] if s["id"] == v.answer["id"]]
    # aiortc's VP8 decoder does not flag keyframes; the server counts what it sent.
    assert session["codec"] == "vp8" and session["keyframes_sent"] >= 1
    assert status["encoders"]["vp8"]["running"]


async def test_eight_peers_at_full_rate_share_one_encoder(rtc_server: ServerProcess, viewer: MakeViewer,
                                                          http: aiohttp.ClientSession) -> None:
    await wait_status(http, rtc_server, lambda s: no_peers(s) and not s["encoders"]["h264"]["running"])
    before = (await webrtc_status(http, rtc_server))["encoders"]["h264"]
    peers = [viewer(rtc_server.url, codecs=["h264"], control=False, read_stamps=False) for _ in range(8)]
    await asyncio.gather(*(p.connect(http) for p in peers))
    await asyncio.gather(*(p.wait_frames(10) for p in peers))
    start_status = await webrtc_status(http, rtc_server)
    start = time.monotonic()
    await asyncio.sleep(3.0)  # measure every peer's frame rate over 3 s
    end = time.monotonic()
    end_status = await webrtc_status(http, rtc_server)
    rates = [p.fps_between(start, end) for p in peers]
    assert min(rates) >= 24, f"frames per second per peer: {rates}"
    h264 = end_status["encoders"]["h264"]
    assert end_status["peers"] == 8 and end_status["viewers_webrtc"] == 8
    assert h264["running"] and h264["subscribers"] == 8
    assert h264["starts"] == before["starts"] + 1, "one encoder start for all eight peers"
    assert end_status["running_encoders"] == 1
    # One encode per captured frame, whatever the number of peers.
    encoded = h264["frames_encoded"] - start_status["encoders"]["h264"]["frames_encoded"]
    captured = end_status["frames_captured"] - start_status["frames_captured"]
    assert encoded <= captured + 2, (encoded, captured)


async def test_peer_joining_mid_stream_starts_on_a_forced_keyframe(
        rtc_server: ServerProcess, viewer: MakeViewer, http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    first = viewer(rtc_server.url, control=False, read_stamps=False)
    await first.connect(http)
    await first.wait_frames(10)
    await asyncio.sleep(0.6)  # past the encoder's keyframe rate limit
    caplog.set_level(logging.WARNING, logger="aiortc")
    late = viewer(rtc_server.url, control=False)
    await late.connect(http)
    frames = await late.wait_frames(15)
    # Keyframes come every 60 s on their own: one within a few seconds was forced for this peer.
    assert frames[0].key
    assert frames[0].arrived - late.offer_sent_at < 5.0
    assert not [r for r in caplog.records if "decode" in r.getMessage().lower()], caplog.text
    assert all(-50 < f.latency_ms < 1000 for f in frames if f.latency_ms is not None)


async def test_pli_yields_a_keyframe(rtc_server: ServerProcess, viewer: MakeViewer,
                                     http: aiohttp.ClientSession) -> None:
    v = viewer(rtc_server.url, control=False, read_stamps=False)
    await v.connect(http)
    await v.wait_frames(10)
    await asyncio.sleep(0.6)  # past the encoder's keyframe rate limit
    before = await webrtc_status(http, rtc_server)
    seen = len(v.frames)
    await v.send_pli()
    keyframe = await v.wait_keyframe(after=seen, timeout=5.0)
    assert keyframe.arrived > v.frames[seen - 1].arrived
    after = await webrtc_status(http, rtc_server)
    (session,) = [s for s in after["sessions"] if s["id"] == v.answer["id"]]
    assert session["pli"] >= 1
    assert after["encoders"]["h264"]["keyframes"] > before["encoders"]["h264"]["keyframes"]


# -- control channel ------------------------------------------------------------------------------

async def test_control_channel_ping_errors_and_latency_reports(rtc_server: ServerProcess, viewer: MakeViewer,
                                                                http: aiohttp.ClientSession) -> None:
    other = viewer(rtc_server.url, control=False, read_stamps=False)
    await other.connect(http)
    v = viewer(rtc_server.url, read_stamps=False)
    await v.connect(http)
    await v.wait_open()
    await other.wait_frames(5)

    sent_ms = time.time() * 1000
    v.send('{"type":"ping","t":123.5}')
    pong = await v.next_message()
    assert pong["type"] == "pong" and pong["t"] == 123.5
    assert abs(pong["server_time"] - sent_ms) < 5000

    garbage: list[str | bytes] = ["not json", "[1, 2]", '"text"', '{"no":"type"}', '{"type":"nope"}',
                                  '{"type":"ping"}', '{"type":"ping","t":"x"}', b"\x00\x01binary",
                                  "[" * 5000, '{"type":"latency","ms":"fast"}', "x" * 20_000]
    for message in garbage:
        v.send(message)
        reply = await v.next_message()
        assert reply["type"] == "error" and reply["message"], (message[:30], reply)
    await v.send_invalid_utf8()
    reply = await v.next_message()
    assert reply == {"type": "error", "message": "text messages must be UTF-8"}

    v.send('{"type":"latency","ms":42.5}')  # accepted silently: the next reply is the pong
    v.send('{"type":"ping","t":7}')
    assert (await v.next_message())["t"] == 7
    status = await webrtc_status(http, rtc_server)
    (session,) = [s for s in status["sessions"] if s["id"] == v.answer["id"]]
    assert session["latency_ms"] == 42.5 and session["control_open"]

    # Neither the garbage nor its sender broke anything: both peers keep receiving video.
    count_other, count_v = len(other.frames), len(v.frames)
    await other.wait_frames(count_other + 10)
    await v.wait_frames(count_v + 10)


# -- lifetime -------------------------------------------------------------------------------------

async def test_closed_peer_is_removed_and_the_encoder_stops(rtc_server: ServerProcess, viewer: MakeViewer,
                                                            http: aiohttp.ClientSession) -> None:
    await wait_status(http, rtc_server, no_peers)
    v = viewer(rtc_server.url, read_stamps=False)
    await v.connect(http)
    await v.wait_open()
    await v.wait_frames(5)
    status = await webrtc_status(http, rtc_server)
    assert status["peers"] == 1 and status["viewers_webrtc"] == 1
    await v.close()
    await wait_status(http, rtc_server, no_peers)
    # The encoder is lazy: it stops a moment after its last subscriber left.
    await wait_status(http, rtc_server, lambda s: s["running_encoders"] == 0)
    log = rtc_server.log()
    assert f"webrtc viewer connected: {v.answer['id']} from 127.0.0.1" in log
    assert f"webrtc viewer disconnected: {v.answer['id']} from 127.0.0.1" in log


async def test_a_peer_that_goes_silent_is_dropped(start_server: Callable[..., ServerProcess],
                                                  http: aiohttp.ClientSession) -> None:
    server = start_server("--size", "160x120", "--peer-timeout", "3")
    # A viewer in another process, killed without a goodbye: no DTLS close, no RTCP BYE.
    proc = subprocess.Popen([sys.executable, str(VIEWER_SCRIPT), server.url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=clean_env())
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert line.startswith(b"playing "), (line, proc.stderr.read() if proc.poll() is not None else b"")
        status = await webrtc_status(http, server)
        assert status["peers"] == 1
    finally:
        proc.kill()
        proc.wait()
    started = time.monotonic()
    await wait_status(http, server, no_peers, timeout=15.0)
    print(f"\nsilent peer dropped after {time.monotonic() - started:.1f} s")


async def test_forced_h264(start_server: Callable[..., ServerProcess], viewer: MakeViewer,
                           http: aiohttp.ClientSession) -> None:
    server = start_server("--size", "160x120", "--codec", "h264")
    v = viewer(server.url, read_stamps=False)
    await v.connect(http)
    assert (await v.wait_frames(5))[0].key
    assert "H264/90000" in v.answer["sdp"] and "VP8" not in v.answer["sdp"]
    with pytest.raises(OfferRejected) as rejected:
        await viewer(server.url, codecs=["vp8"]).connect(http)
    assert rejected.value.status == 422 and "H.264" in rejected.value.text


async def test_forced_vp8_and_shutdown_with_a_peer(start_server: Callable[..., ServerProcess],
                                                   viewer: MakeViewer, http: aiohttp.ClientSession) -> None:
    server = start_server("--size", "160x120", "--codec", "vp8")
    v = viewer(server.url, read_stamps=False)  # offers VP8 and H.264
    await v.connect(http)
    await v.wait_frames(5)
    assert "VP8/90000" in v.answer["sdp"] and "H264" not in v.answer["sdp"]
    with pytest.raises(OfferRejected) as rejected:
        await viewer(server.url, codecs=["h264"]).connect(http)
    assert rejected.value.status == 422 and "VP8" in rejected.value.text
    # Shutdown closes the connected peer and exits cleanly (the fixture checks the exit status).
    code, seconds = await asyncio.to_thread(server.terminate)
    assert code == 0 and seconds < 5
    assert "closing 1 WebRTC peer" in server.log()


# -- ICE settings (no network) --------------------------------------------------------------------

def test_ice_server_urls() -> None:
    assert parse_ice_server("stun:stun.example.org").url == "stun:stun.example.org"
    turn = parse_ice_server("turn:alice:s%40cret@turn.example.org:3478?transport=tcp")
    assert (turn.url, turn.username, turn.credential) == (
        "turn:turn.example.org:3478?transport=tcp", "alice", "s@cret")
    for bad in ("stun:", "http://x", "turn:turn.example.org", "stun:u:p@host", "stun:host:99999",
                "turn:alice:s%0D%0ALink:%20x@turn.example.org", "turn:al%0Aice:pw@h", "turn:a:b%00@h"):
        with pytest.raises(ConfigError):
            parse_ice_server(bad)
    with pytest.raises(ConfigError, match="control characters"):  # the CLI exits 2 on a ConfigError
        load_config(["--ice-server", "turn:alice:s%0D%0A@turn.example.org"])
    config = rtc_configuration([(turn.url, turn.username, turn.credential)])
    (server,) = config.iceServers
    assert (server.urls, server.username, server.credential) == (turn.url, "alice", "s@cret")
    assert rtc_configuration([]).iceServers == []  # never aiortc's public default
    assert link_headers([(turn.url, "alice", "s@cret"), ("stun:h", None, None)]) == [
        '<turn:turn.example.org:3478?transport=tcp>; rel="ice-server"; username="alice"; '
        'credential="s@cret"; credential-type="password"',
        '<stun:h>; rel="ice-server"',
    ]
    (link,) = link_headers([("turn:h", 'a"b', "c\\")])  # a quoted-string: quote and backslash escaped
    assert link.endswith('username="a\\"b"; credential="c\\\\"; credential-type="password"')


def test_fixed_host_addresses_respect_the_address_family() -> None:
    get = fixed_host_addresses(["127.0.0.1", "::1", "192.0.2.7"])
    assert get(True, True) == ["127.0.0.1", "::1", "192.0.2.7"]
    assert get(True, False) == ["127.0.0.1", "192.0.2.7"]
    assert get(False, True) == ["::1"]


# -- the per-peer track, on its own (no network) --------------------------------------------------

class _Payload:
    """Stands in for an av.Packet: the track only reads its size and hands it on."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.size = 100


def _packet(seq: int, key: bool = False, generation: int = 1) -> EncodedPacket:
    return EncodedPacket(_Payload(seq), "h264", key, seq, seq * 33_000, 320, 240, generation)


async def test_track_starts_on_a_keyframe_and_resyncs_after_a_gap() -> None:
    hub: Hub[EncodedPacket] = Hub("packets")
    requests: list[float] = []
    track = PacketTrack(hub, lambda: requests.append(time.monotonic()) is None, queue_frames=4)
    try:
        first = asyncio.ensure_future(track.recv())
        await asyncio.sleep(0)  # recv subscribed, and asked for a keyframe: a new peer
        assert hub.subscriber_count == 1 and len(requests) == 1
        for seq, key in [(1, False), (2, False), (3, True), (4, False)]:
            hub.publish(_packet(seq, key))
        assert (await first).seq == 3  # everything before the first keyframe is skipped
        assert (await track.recv()).seq == 4 and track.skipped == 2

        for seq in range(5, 11):  # the peer falls behind: its queue of 4 drops 5 and 6
            hub.publish(_packet(seq))
        resumed = asyncio.ensure_future(track.recv())
        await asyncio.sleep(0)
        assert not resumed.done() and track.resyncs == 1 and len(requests) == 2  # asked for a keyframe
        hub.publish(_packet(11, key=True))
        assert (await resumed).seq == 11 and track.dropped == 2 and track.skipped == 2 + 4

        hub.publish(_packet(12, generation=2))  # the encoder restarted: wait for its first keyframe
        hub.publish(_packet(13, key=True, generation=2))
        assert (await track.recv()).seq == 13
        assert track.frames_sent == 4 and track.keyframes_sent == 3
    finally:
        track.stop()  # ends a pending recv() whatever happened
    assert hub.subscriber_count == 0  # left the hub: the encoder may stop
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_track_ends_when_the_hub_closes() -> None:
    hub: Hub[EncodedPacket] = Hub("packets")
    track = PacketTrack(hub, lambda: True)
    pending = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    hub.close()
    with pytest.raises(MediaStreamError):
        await pending
    assert track.readyState == "ended"


# -- peers and the registry in this process (loopback ICE, no server) ----------------------------

def _camera() -> Any:
    """The parts of a Camera a peer uses: an H.264 packet hub, its encoder, the viewer counts, its
    sessions, its control scope and codec setting, and that it encodes (no passthrough) without sound."""
    encoder = SimpleNamespace(force_keyframe=lambda: True)
    top = SimpleNamespace(rendition=SimpleNamespace(name="high", bitrate=2_000_000), packets=Hub("h264"),
                          encoder=encoder)
    return SimpleNamespace(name="default", renditions={"h264": [top]}, viewers=Viewers(), sessions=set(),
                           control=ControlBus(), settings=SimpleNamespace(codec="h264"),
                           note_switch=lambda *_: None, passthrough=SimpleNamespace(h264=False),
                           bridge=None, audio=None)


async def _offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def test_a_failing_watchdog_closes_its_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer_module, "WATCH_INTERVAL", 0.01)
    closed: list[Peer] = []
    peer = Peer("p1", "127.0.0.1", "offer", RTCConfiguration(iceServers=[]), 10.0, closed.append,
                ControlBus())
    peer.add_camera(_camera(), "h264")

    async def broken_stats() -> Any:
        raise RuntimeError("stats broke")

    peer.feeds[0].sender = SimpleNamespace(getStats=broken_stats)  # type: ignore[assignment]
    peer.connected_at = time.monotonic()
    peer.start()
    await eventually(lambda: closed, 10, "the peer to close")
    assert closed == [peer] and "stats broke" in (peer.close_reason or "")


async def test_viewers_count_connected_peers_not_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _camera()
    registry = PeerRegistry(WebRtcOptions())
    peer, answer = await registry.open_session(stream, await _offer(), "127.0.0.1", "offer")
    assert answer.startswith("v=0") and len(registry) == 1
    assert stream.viewers.current["webrtc"] == 0  # answered, never connected: no viewer
    assert await registry.close_session(peer.id, "test")
    assert len(registry) == 0
    assert stream.viewers.current["webrtc"] == 0 and stream.viewers.total["webrtc"] == 0

    # A peer closed while it was being answered (its transport failed) is refused, not registered.
    negotiate = Peer.negotiate

    async def negotiate_then_fail(self: Peer, offer_sdp: str) -> str:
        answer = await negotiate(self, offer_sdp)
        await self.close("connection failed")
        return answer

    monkeypatch.setattr(Peer, "negotiate", negotiate_then_fail)
    with pytest.raises(OfferError) as refused:
        await registry.open_session(stream, await _offer(), "127.0.0.1", "offer")
    assert 400 <= refused.value.status < 500 and "connection failed" in refused.value.reason
    assert len(registry) == 0 and registry.rejected_offers == 1
    await registry.close_all()
