"""The emulated-network bed itself: reachability, bandwidth shaping, random loss, and clean-up.

Needs root (CI is root); as another user the bed fails with a message that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from support.loopback import candidate_addresses
from support.netlab import (
    SERVER_ADDRESS,
    VIEWER_ADDRESS,
    NetLab,
    NetLabError,
    anetlab,
    ice_host_address,
    launch_server,
    namespace_pids,
    namespaces,
    netlab,
)
from support.webrtc_viewer import Viewer

PORT = 9000  # each namespace has its own ports: nothing else can hold this one
SO_RCVBUFFORCE = 33  # Linux's number; Python's socket module does not name it


@pytest.fixture
def lab() -> Iterator[NetLab]:
    with netlab() as bed:
        yield bed
    assert not {bed.server.namespace, bed.viewer.namespace} & namespaces()


# -- helpers that run inside a namespace (through Side.call / Side.submit) -----------------------
def listen(address: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if kind == socket.SOCK_DGRAM:
        # Room for every datagram of a burst: losses must come from the rule, not a full buffer.
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
    sock.bind((address, PORT))
    if kind == socket.SOCK_STREAM:
        sock.listen()
    return sock


def connect(address: str) -> socket.socket:
    return socket.create_connection((address, PORT), timeout=10)


class Receiver:
    """Reads a TCP stream and notes (monotonic time, bytes so far) after every read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.samples: list[tuple[float, int]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        total = 0
        with self.sock, contextlib.suppress(ConnectionResetError):
            while chunk := self.sock.recv(1 << 16):
                total += len(chunk)
                self.samples.append((time.monotonic(), total))

    def mbps(self, start: float, end: float) -> float:
        """Megabits per second received between two monotonic times."""
        inside = [(t, n) for t, n in self.samples if start <= t <= end]
        assert len(inside) >= 2, f"no data between {start:.2f} and {end:.2f}"
        (t0, n0), (t1, n1) = inside[0], inside[-1]
        return (n1 - n0) * 8 / (t1 - t0) / 1e6


def blast(sock: socket.socket, stop: threading.Event) -> None:
    """Send as fast as the link takes it until `stop`."""
    data = b"\0" * (1 << 16)
    sock.settimeout(0.2)
    # Reset on close instead of draining what is still queued (seconds at a low rate).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with sock:
        while not stop.is_set():
            try:
                sock.send(data)
            except TimeoutError:
                continue


# -- tests -------------------------------------------------------------------------------------
def test_the_two_ends_reach_each_other_over_the_veth(lab: NetLab) -> None:
    # A real TCP server process in the server's namespace, a client in the viewer's.
    echo = ("import socket\n"
            f"s = socket.create_server(({SERVER_ADDRESS!r}, {PORT}))\n"
            "print('listening', flush=True)\n"
            "c, a = s.accept()\n"
            "c.sendall(f'{a[0]} '.encode() + c.recv(100))\n")
    server = lab.server.popen([sys.executable, "-c", echo], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "listening"
    before = lab.server.counters()

    def ask() -> bytes:
        with connect(SERVER_ADDRESS) as sock:
            sock.sendall(b"hello")
            return sock.recv(100)

    assert lab.viewer.call(ask) == f"{VIEWER_ADDRESS} hello".encode()
    assert server.wait(10) == 0
    after = lab.server.counters()
    assert after["rx"]["packets"] > before["rx"]["packets"]
    assert after["tx"]["packets"] > before["tx"]["packets"]

    # And the other way round: the viewer's side listens, the server's side connects.
    listener = lab.viewer.call(listen, VIEWER_ADDRESS)
    with listener, lab.server.call(connect, VIEWER_ADDRESS) as client:
        accepted, (peer, _) = listener.accept()
        with accepted:
            assert peer == SERVER_ADDRESS
            client.sendall(b"ping")
            assert accepted.recv(10) == b"ping"


@contextlib.contextmanager
def tcp_stream(lab: NetLab) -> Iterator[Receiver]:
    """A TCP connection carrying as much as it can from the server's side to the viewer's."""
    listener = lab.viewer.call(listen, VIEWER_ADDRESS)
    with listener:
        sender_sock = lab.server.call(connect, VIEWER_ADDRESS)
        accepted, _ = listener.accept()
    receiver = Receiver(accepted)
    stop = threading.Event()
    sender = threading.Thread(target=blast, args=(sender_sock, stop), daemon=True)
    sender.start()
    try:
        yield receiver
    finally:
        stop.set()
        sender.join(5)
        receiver.thread.join(5)


def test_tbf_limits_throughput_and_the_rate_can_step(lab: NetLab) -> None:
    tcp: dict[str, float] = {}  # Mbit/s the TCP receiver got
    link: dict[str, float] = {}  # Mbit/s the tbf qdisc let through (retransmissions included)

    def phase(receiver: Receiver, name: str, seconds: float, settle: float) -> None:
        time.sleep(settle)  # the phase's length is the experiment, not a wait for a condition
        start, sent = time.monotonic(), lab.server.qdisc().get("bytes", 0)
        time.sleep(seconds)
        end = time.monotonic()
        tcp[name] = receiver.mbps(start, end)
        link[name] = (lab.server.qdisc().get("bytes", 0) - sent) * 8 / (end - start) / 1e6

    with tcp_stream(lab) as receiver:
        phase(receiver, "open", 0.5, 0.2)
        lab.server.shape(2_000_000)
        assert lab.server.qdisc()["options"]["rate"] == 2_000_000 // 8  # bytes/s
        phase(receiver, "2 Mbit/s", 2.5, 0.8)
        lab.server.shape(600_000)  # changed in place while the stream runs
        phase(receiver, "600 kbit/s", 2.5, 0.8)
        if tcp["600 kbit/s"] < 0.1:
            # The sender sat in a retransmission timeout (its backoff grows while the machine is
            # loaded): nothing crossed the link to measure, so the phase is measured once more.
            phase(receiver, "600 kbit/s", 4.0, 0.0)
    lab.server.clear()
    assert lab.server.qdisc()["kind"] != "tbf"
    # A fresh connection: the first may sit in a retransmission timeout a while after its losses.
    with tcp_stream(lab) as receiver:
        phase(receiver, "cleared", 0.5, 0.2)
    assert tcp["open"] > 20 and tcp["cleared"] > 20, tcp
    assert 1.8 < link["2 Mbit/s"] < 2.2 and 0.54 < link["600 kbit/s"] < 0.66, link
    # TCP's own goodput dips below the link rate after its retransmission timeouts: generous bounds.
    assert 0.8 < tcp["2 Mbit/s"] < 3.0, tcp
    assert 0.1 < tcp["600 kbit/s"] < min(0.9, 0.6 * tcp["2 Mbit/s"]), tcp


@pytest.mark.parametrize(("media_only", "on_arrival"), [(False, False), (True, False), (False, True)])
def test_the_loss_rule_drops_about_the_set_fraction_of_udp(lab: NetLab, media_only: bool,
                                                           on_arrival: bool) -> None:
    lab.server.loss(0.05, media_only=media_only, on_arrival=on_arrival)
    receiver = lab.viewer.call(listen, VIEWER_ADDRESS, socket.SOCK_DGRAM)
    sender = lab.server.call(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    count = 4000
    refused = 0  # sendto() fails with EPERM when the sender's own OUTPUT chain drops the datagram
    with receiver, sender:
        for i in range(count):
            size = 1200 if i % 2 else 100  # media-sized and small (RTCP-, STUN-sized) datagrams
            try:
                sender.sendto(i.to_bytes(4, "big") * (size // 4), (VIEWER_ADDRESS, PORT))
            except PermissionError:
                refused += 1
            if i % 20 == 19:
                time.sleep(0.001)  # pace the burst so the veth's backlog never overflows
        receiver.settimeout(2.0)
        got = {"big": 0, "small": 0}
        dropped = lab.server.dropped_by_loss()
        while sum(got.values()) < count - dropped:
            try:
                data = receiver.recv(2048)
            except TimeoutError:
                latest = lab.server.dropped_by_loss()
                if latest == dropped:
                    break  # more went missing than the rule dropped: the assertion below says so
                dropped = latest
                continue
            got["big" if len(data) > 500 else "small"] += 1
    lost = {kind: count // 2 - n for kind, n in got.items()}
    assert sum(lost.values()) == dropped  # every missing datagram was dropped by the rule
    assert refused == (0 if on_arrival else dropped)
    if media_only:
        assert lost["small"] == 0, lost
        assert 0.025 < lost["big"] / (count // 2) < 0.09, lost
    else:
        assert 0.025 < dropped / count < 0.09, lost
    lab.server.clear_loss()
    assert lab.server.dropped_by_loss() == 0


def test_camcast_serves_an_aiortc_viewer_across_the_link(lab: NetLab, tmp_path: Path) -> None:
    server = launch_server(lab, tmp_path)
    sent_before = lab.server.counters()["tx"]["bytes"]

    async def watch() -> tuple[int, set[str], str | None]:
        async with aiohttp.ClientSession() as http:
            viewer = Viewer(server.url, read_stamps=False)
            try:
                await viewer.connect(http, via="whep")
                frames = await viewer.wait_frames(15, timeout=20)
                offered = candidate_addresses(viewer.pc.localDescription.sdp)
                sessions = (await lab.server.acall(server.status))["webrtc"]["sessions"]
                return len(frames), offered, sessions[0]["remote"] if sessions else None
            finally:
                await viewer.close()

    with ice_host_address(VIEWER_ADDRESS):
        frames, offered, remote = lab.viewer.call(asyncio.run, watch())
    assert frames >= 15
    assert offered == {VIEWER_ADDRESS}
    assert remote is not None and remote.startswith(VIEWER_ADDRESS)
    assert lab.server.counters()["tx"]["bytes"] - sent_before > 50_000  # the media took the veth
    code, _ = server.terminate()
    assert code == 0 and "Traceback" not in server.log(), server.describe()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_everything_is_removed_even_after_an_exception(error: type[BaseException]) -> None:
    with pytest.raises(error), netlab() as lab:
        names = {lab.server.namespace, lab.viewer.namespace}
        assert names <= namespaces()
        sleeper = lab.viewer.popen(["sleep", "600"])
        # A process the bed did not start itself (as a browser's helpers would be).
        stray = lab.server.call(subprocess.Popen, ["sleep", "600"])
        assert stray.pid in namespace_pids(lab.server.namespace)
        raise error("boom")
    assert not names & namespaces()
    assert sleeper.poll() is not None
    assert stray.wait(5) is not None


async def test_the_async_bed_is_removed_when_its_task_is_cancelled() -> None:
    made: list[str] = []
    entered = asyncio.Event()

    async def use() -> None:
        async with anetlab() as lab:
            made.extend([lab.server.namespace, lab.viewer.namespace])
            interfaces = await lab.viewer.acall(socket.if_nameindex)
            assert {name for _, name in interfaces} == {"lo", lab.viewer.interface}
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.get_running_loop().create_task(use())
    await asyncio.wait_for(entered.wait(), 30)
    assert set(made) <= namespaces()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not set(made) & namespaces()


def test_stale_namespaces_of_a_dead_run_are_removed_and_live_ones_kept() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "600"])
    stale, other = f"cc-srv-{dead.pid}-0", f"cc-view-{alive.pid}-0"
    try:
        for name in (stale, other):
            subprocess.run(["ip", "netns", "add", name], check=True)
        with netlab():
            present = namespaces()
            assert stale not in present
            assert other in present  # another run, still going, keeps its bed
    finally:
        alive.kill()
        alive.wait()
        for name in (stale, other):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def test_without_root_the_bed_fails_saying_it_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NetLabError, match="needs root"), netlab():
        pass
