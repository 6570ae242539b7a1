"""Viewers for the whip suite, one process per role, run inside the Janus bed's network namespace:

    python -m bench.whip_subs count  --n 17 --start T --settle S --window W
    python -m bench.whip_subs decode --n 3 ...                 # through Janus, stamps read
    python -m bench.whip_subs direct --n 1 --url http://127.0.0.1:PORT/ ...   # camcast itself
    python -m bench.whip_subs rejoin --since T --timeout 30     # after a Janus restart

Janus subscribers go through Janus's HTTP API (non-trickle): create a session, attach the videoroom,
find the publisher, join as a subscriber, answer Janus's offer; a long poll per session keeps it
alive. `count` peers count frames on the RTP marker bit and decode nothing (bench.rtc_receivers);
`decode` and `direct` peers decode with the marker-aware jitter buffer and read camcast's stamps,
so both latencies are measured the same way. Each process prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

ADDRESS = "127.0.0.2"  # the bed's veth address (tests/support/janus.py)
ROOM = 4242
JANUS_HTTP = "http://127.0.0.1:8088/janus"


@dataclass
class PeerResult:
    frames: int = 0  # inside the window
    fps: float = 0.0
    max_gap_ms: float = 0.0
    lost_packets: int = 0  # counting peers: sequence numbers never seen, whole run
    error: str | None = None


@dataclass
class Result:
    role: str
    peers: list[PeerResult] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)  # capture to decoded, window only
    cpu_s: float = 0.0  # this process over the window
    first_frame_s: float | None = None  # rejoin: from `since` to a fresh decoded frame
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


class JanusError(RuntimeError):
    pass


async def _janus(http: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    body = {**body, "transaction": os.urandom(6).hex()}
    async with http.post(url, json=body) as response:
        answer: dict[str, Any] = await response.json(content_type=None)
    if answer.get("janus") == "error":
        raise JanusError(f"Janus refused {body.get('janus')}: {answer.get('error')}")
    return answer


class Subscriber:
    """One subscriber of the room's publisher; `track` once joined."""

    def __init__(self, http: Any) -> None:
        self.http = http
        self.pc: Any = None
        self.track: Any = None
        self.session_url = ""
        self._offers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._poller: asyncio.Task[None] | None = None

    async def join(self, timeout: float) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        created = await _janus(self.http, JANUS_HTTP, {"janus": "create"})
        self.session_url = f"{JANUS_HTTP}/{created['data']['id']}"
        self._poller = asyncio.get_running_loop().create_task(self._poll())
        attached = await _janus(self.http, self.session_url,
                                {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        handle = f"{self.session_url}/{attached['data']['id']}"
        listed = await _janus(self.http, handle, {"janus": "message",
                                                  "body": {"request": "listparticipants", "room": ROOM}})
        publishers = [p for p in listed["plugindata"]["data"].get("participants", []) if p.get("publisher")]
        if not publishers:
            raise JanusError("no publisher in the room yet")
        join = {"request": "join", "ptype": "subscriber", "room": ROOM,
                "streams": [{"feed": publishers[0]["id"]}]}
        await _janus(self.http, handle, {"janus": "message", "body": join})
        offer = await asyncio.wait_for(self._offers.get(), timeout)
        self.pc = pc = RTCPeerConnection()
        got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pc.on("track", lambda track: got.done() or got.set_result(track))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await _janus(self.http, handle, {"janus": "message", "body": {"request": "start"},
                                         "jsep": {"type": "answer", "sdp": pc.localDescription.sdp}})
        self.track = await asyncio.wait_for(got, timeout)

    async def _poll(self) -> None:
        # The long poll carries Janus's offer, and keeps the session from timing out (60 s).
        while True:
            try:
                async with self.http.get(f"{self.session_url}?maxev=10") as response:
                    events = await response.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.2)
                continue
            for event in events if isinstance(events, list) else [events]:
                if event.get("jsep", {}).get("type") == "offer":
                    self._offers.put_nowait(event["jsep"])

    def buffer(self) -> Any:
        from bench.rtc_receivers import jitter_buffer_of

        return jitter_buffer_of(self.pc.getTransceivers()[0].receiver)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pc.close(), 3.0)
        if self.session_url:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_janus(self.http, self.session_url, {"janus": "destroy"}), 2.0)


def _window(times: list[float], t0: float, t1: float) -> PeerResult:
    inside = [t for t in times if t0 <= t < t1]
    gaps = [b - a for a, b in itertools.pairwise(inside)]
    return PeerResult(len(inside), len(inside) / (t1 - t0), max(gaps, default=0.0) * 1000.0)


async def _sleep_until(wall: float) -> None:
    await asyncio.sleep(max(0.0, wall - time.time()))


def _http(timeout: float = 40.0) -> Any:
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))


async def _decode_loop(track: Any, times: list[float], latency: list[tuple[float, float]],
                       fresh_after_us: float = 0.0, first: asyncio.Event | None = None) -> None:
    from camcast.stamp import read_stamp

    while True:
        frame = await track.recv()
        stamp = read_stamp(frame.to_ndarray(format="gray"))
        now = time.time()
        if stamp < fresh_after_us:  # a picture from before `since`: not playing again yet
            continue
        times.append(now)
        latency.append((now, (now * 1e6 - stamp) / 1000.0))
        if first is not None:
            first.set()


async def run_window(args: argparse.Namespace) -> Result:
    """count, decode, direct: join from `start` (spread over `ramp`), measure over the window."""
    import psutil

    result = Result(args.role)
    t0, t1 = args.start + args.settle, args.start + args.settle + args.window
    me = psutil.Process()
    async with _http() as http:
        frames: list[list[float]] = [[] for _ in range(args.n)]
        stamps: list[tuple[float, float]] = []
        joined: list[Any] = [None] * args.n
        tasks: list[asyncio.Task[None]] = []

        async def one(i: int) -> None:
            await _sleep_until(args.start + args.ramp * i / max(1, args.n))
            try:
                if args.role == "direct":
                    from tests.support.webrtc_viewer import Viewer

                    viewer = Viewer(args.url, codecs=("h264",), control=False, read_stamps=True)
                    joined[i] = viewer
                    await asyncio.wait_for(viewer.connect(http), args.join_timeout)
                    return  # it decodes and reads stamps itself
                else:
                    sub = Subscriber(http)
                    joined[i] = sub
                    await sub.join(args.join_timeout)
                    track = sub.track
                if args.role == "count":
                    return
                tasks.append(asyncio.get_running_loop().create_task(_decode_loop(track, frames[i], stamps)))
            except Exception as exc:
                result.errors.append(f"{i}: {type(exc).__name__}: {exc}"[:200])

        await asyncio.gather(*(one(i) for i in range(args.n)))
        await _sleep_until(t0)
        cpu0 = sum(me.cpu_times()[:2])
        await _sleep_until(t1)
        result.cpu_s = sum(me.cpu_times()[:2]) - cpu0
        for i, peer in enumerate(joined):
            lost = 0
            if args.role == "count" and isinstance(peer, Subscriber) and peer.pc is not None:
                frames[i] = list(peer.buffer().frame_times)
                lost = peer.buffer().lost
            elif args.role == "direct" and peer is not None:
                offset = time.time() - time.monotonic()
                for f in peer.frames:
                    frames[i].append(f.arrived + offset)
                    if f.latency_ms is not None:
                        stamps.append((f.arrived + offset, f.latency_ms))
            stats = _window(frames[i], t0, t1)
            stats.lost_packets = lost
            if peer is None or (args.role != "count" and not frames[i]):
                stats.error = "not joined" if peer is None else "no frames"
            result.peers.append(stats)
        result.latency_ms = [ms for t, ms in stamps if t0 <= t < t1]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*(p.close() for p in joined if p is not None), return_exceptions=True)
    return result


async def run_rejoin(args: argparse.Namespace) -> Result:
    """Subscribe again and again from `since` until a picture captured after `since` decodes."""
    result = Result("rejoin")
    await _sleep_until(args.since)
    deadline = time.monotonic() + args.timeout
    async with _http(5.0) as http:
        while time.monotonic() < deadline and result.first_frame_s is None:
            result.attempts += 1
            sub = Subscriber(http)
            task = None
            try:
                await sub.join(3.0)
                first = asyncio.Event()
                task = asyncio.get_running_loop().create_task(
                    _decode_loop(sub.track, [], [], args.since * 1e6, first))
                await asyncio.wait_for(first.wait(), 3.0)
                result.first_frame_s = time.time() - args.since
            except Exception as exc:
                text = f"{type(exc).__name__}: {exc}"[:120]
                if text not in result.errors:
                    result.errors.append(text)
                await asyncio.sleep(0.2)
            finally:
                if task is not None:
                    task.cancel()
                await sub.close()
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.whip_subs")
    p.add_argument("role", choices=("count", "decode", "direct", "rejoin"))
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--url", default="")
    p.add_argument("--start", type=float, default=0.0)
    p.add_argument("--ramp", type=float, default=1.0)
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--join-timeout", type=float, default=10.0)
    p.add_argument("--since", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args(argv)

    import aioice.ice

    from bench.rtc_receivers import install

    # The bed's address is the only one both Janus and aioice gather.
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: [ADDRESS] if use_ipv4 else []
    install("count" if args.role == "count" else "marker")
    result = asyncio.run(run_rejoin(args) if args.role == "rejoin" else run_window(args))
    sys.stdout.write(json.dumps(asdict(result)) + "\n")


if __name__ == "__main__":
    main()
