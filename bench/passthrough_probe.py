"""A decoding WebRTC viewer of camcast in its own process: capture-to-decode latency, and joins.

Its receiver is bench.rtc_receivers' marker-aware one (a frame leaves the jitter buffer on its
marker packet, as in browsers), decodes every frame with aiortc and reads its stamp, and notes when
each frame's marker packet arrived, when its connection came up (ICE and DTLS: from then on a plain
relay could send too) and when its first RTP packet arrived. Every peer is held on the top
rendition (`?rendition=high`), the one a camera's own packets feed.

- `latency`: one peer connects; once /api/status shows it off the start-up bridge (on the
  camera's packets) and the bridge's encoder stopped, it records `(stamp, decoded, marker
  arrival, slice key)` of every frame for `seconds`.
- `joins`: `count` fresh peers one after another, each after a random pause, so the joins land at
  random points of the camera's GOP: offer (POST /offer sent), connected, first packet, first
  decoded frame, that frame's own capture-to-decode latency (how current the first picture is),
  and the first decoded frame captured after the offer.
- `watch`: `peers` peers that count frames without decoding them until told to stop: the load of
  the CPU windows, and beside the joins a viewer already watching (does a new viewer hold the
  pictures of those already there up?).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import queue
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urljoin

from bench.workerpool import end_process

READY_TIMEOUT = 60.0


@dataclass
class Join:
    offer: float  # wall s: POST /offer sent
    connected: float = math.nan  # wall s: this peer's ICE and DTLS are up
    first_packet: float = math.nan  # wall s: the first RTP packet of the video arrived
    first_frame: float = math.nan  # wall s: the first frame decoded (and its stamp read)
    first_key: bool = False  # the first decoded frame was a keyframe
    first_age_ms: float = math.nan  # that frame's capture-to-decode latency (from its stamp)
    # wall s: the first decoded frame captured after the offer (an older picture is not news)
    first_fresh: float = math.nan
    size: str = ""
    error: str = ""


@dataclass
class ProbeResult:
    # latency: per decoded frame (stamp µs, decoded, its marker packet's arrival (wall s), slice_key)
    frames: list[tuple[int, float, float, str]] = field(default_factory=list)
    keyframes_seen: int = 0
    joins: list[dict[str, Any]] = field(default_factory=list)
    # watch: per peer its session id, the wall s of every whole frame counted, packets lost
    watchers: list[dict[str, Any]] = field(default_factory=list)
    decode_errors: int = 0
    error: str = ""


def _install() -> None:
    """Loopback ICE, and a marker-aware receiver that notes when each frame's packets arrived."""
    import aiortc.rtcrtpreceiver as rtcrtpreceiver
    from aiortc.jitterbuffer import JitterBuffer
    from aiortc.rtp import RtpPacket

    from bench.passthrough_direct import slice_key
    from bench.rtc_receivers import MarkerJitterBuffer, loopback_only

    loopback_only()

    class ArrivalJitterBuffer(MarkerJitterBuffer):
        def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
            super().__init__(capacity, prefetch, is_video)
            self.first_packet = math.nan
            self._origin_ts = 0
            # RTP timestamp from the first packet's (aiortc's decoded frames count their pts from
            # there) -> wall s its marker packet arrived.
            self.markers: dict[int, float] = {}
            self.keys: dict[int, str] = {}  # the same RTP timestamp -> slice_key of the frame's bytes

        def add(self, packet: RtpPacket) -> tuple[bool, Any]:
            now = time.time()
            if math.isnan(self.first_packet):
                self.first_packet, self._origin_ts = now, packet.timestamp
            if packet.marker:
                self.markers[(packet.timestamp - self._origin_ts) % 2**32] = now
            return super().add(packet)

        def _remove_frame(self, sequence_number: int) -> Any:
            frame = super()._remove_frame(sequence_number)
            if frame is not None:
                self.keys[(frame.timestamp - self._origin_ts) % 2**32] = slice_key(frame.data)
            return frame

    def make(capacity: int, prefetch: int = 0, is_video: bool = False) -> JitterBuffer:
        return (ArrivalJitterBuffer if is_video else JitterBuffer)(capacity, prefetch, is_video)

    rtcrtpreceiver.JitterBuffer = make  # type: ignore[misc,assignment]


def _viewer(url: str) -> Any:
    """The tests' viewer, noting for every decoded frame its stamp, RTP timestamp and decode time."""
    from aiortc.mediastreams import MediaStreamError
    from tests.support.webrtc_viewer import FrameInfo, Viewer

    from camcast.frames import now_us
    from camcast.stamp import read_stamp

    class StampViewer(Viewer):
        def __post_init__(self) -> None:
            super().__post_init__()
            self.decoded: list[tuple[int, int, float]] = []  # (stamp µs, RTP timestamp, wall s)
            self.connected = math.nan  # wall s: ICE and DTLS up (a relay could send from here)

            @self.pc.on("connectionstatechange")
            def on_state() -> None:
                if self.pc.connectionState == "connected" and math.isnan(self.connected):
                    self.connected = time.time()

        async def _read(self) -> None:
            assert self._track is not None
            with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
                while True:
                    frame = await self._track.recv()
                    gray = frame.to_ndarray(format="gray")
                    decoded = time.time()  # decoded and in hand as gray pixels (as the direct viewer's)
                    stamp = read_stamp(gray)
                    self.decoded.append((stamp, frame.pts, decoded))
                    self.frames.append(FrameInfo(time.monotonic(), bool(frame.key_frame), frame.width,
                                                 frame.height, (now_us() - stamp) / 1000))
                    self._new_frame.set()

    return StampViewer(url, codecs=("h264",), control=False, read_stamps=True, query="?rendition=high")


def _wall(monotonic: float) -> float:
    return time.time() - (time.monotonic() - monotonic)


async def _settled(http: Any, url: str, session: str, timeout: float) -> None:
    """Wait until /api/status shows the session on its rendition, not moving to it, and the bridge's
    encoder stopped (while it runs, the camera is decoded, which holds its packets up)."""
    deadline = time.monotonic() + timeout
    while True:
        async with http.get(urljoin(url, "api/status")) as response:
            state = await response.json()
        mine = [x for x in state["webrtc"]["sessions"] if x.get("id") == session]
        if mine and mine[0].get("switching_to") is None and not state["encoders"].get("h264-bridge"):
            return
        if time.monotonic() > deadline:
            moving = mine[0].get("switching_to") if mine else "no session"
            raise TimeoutError(f"not settled after {timeout:g} s (switching to {moving}, bridge encoder "
                               f"{'on' if state['encoders'].get('h264-bridge') else 'off'})")
        await asyncio.sleep(0.1)


async def _latency(url: str, seconds: float, settle_timeout: float) -> ProbeResult:
    import aiohttp

    from bench.rtc_receivers import jitter_buffer_of

    result = ProbeResult()
    async with aiohttp.ClientSession() as http:
        viewer = _viewer(url)
        try:
            await asyncio.wait_for(viewer.connect(http), 20.0)
            await viewer.wait_frames(1, 10.0)
            # Measured once the server has moved this peer from the start-up bridge to the
            # camera's packets (passthrough; with --transcode it is on the shared encoder at once).
            await _settled(http, url, viewer.answer["id"], settle_timeout)
            await asyncio.sleep(0.5)
            start = len(viewer.decoded)
            await asyncio.sleep(seconds)
            buffer = jitter_buffer_of(viewer.transceiver.receiver)
            result.frames = [(stamp, decoded, buffer.markers.get(pts, math.nan), buffer.keys.get(pts, ""))
                             for stamp, pts, decoded in viewer.decoded[start:]]
            result.keyframes_seen = sum(1 for f in viewer.frames if f.key)
            result.decode_errors = viewer.decode_errors
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(viewer.close(), 5.0)
    return result


async def _first_fresh(viewer: Any, offer: float, timeout: float) -> float:
    """When the first frame captured after `offer` (wall s) was decoded; NaN if none within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        fresh = [wall for stamp, _, wall in viewer.decoded if stamp >= offer * 1e6]
        if fresh:
            return float(fresh[0])
        left = deadline - time.monotonic()
        if left <= 0:
            return math.nan
        with contextlib.suppress(TimeoutError):
            await viewer.wait_frames(len(viewer.frames) + 1, left)


async def _join(http: Any, url: str, timeout: float) -> Join:
    from bench.rtc_receivers import jitter_buffer_of

    viewer = _viewer(url)
    join = Join(offer=math.nan)
    try:
        await asyncio.wait_for(viewer.connect(http), 20.0)
        join.offer = _wall(viewer.offer_sent_at)
        first = (await viewer.wait_frames(1, timeout))[0]
        stamp, _, decoded = viewer.decoded[0]
        join.first_frame = decoded
        join.first_key = first.key
        join.first_age_ms = (decoded - stamp / 1e6) * 1000
        join.size = f"{first.width}x{first.height}"
        join.first_packet = jitter_buffer_of(viewer.transceiver.receiver).first_packet
        join.connected = viewer.connected
        join.first_fresh = await _first_fresh(viewer, join.offer, timeout)
    except Exception as exc:
        if math.isnan(join.offer) and viewer.offer_sent_at:
            join.offer = _wall(viewer.offer_sent_at)
        join.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(viewer.close(), 5.0)
    return join


async def _joins(url: str, count: int, gap: tuple[float, float], seed: int, timeout: float) -> ProbeResult:
    import aiohttp

    result = ProbeResult()
    rng = random.Random(seed)
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            # A random pause as long as a GOP or so: joins land all over the camera's GOP.
            await asyncio.sleep(rng.uniform(*gap))
            result.joins.append(asdict(await _join(http, url, timeout)))
    return result


async def _watch_one(http: Any, url: str, delay: float, stop: Any) -> dict[str, Any]:
    from tests.support.webrtc_viewer import Viewer

    from bench.rtc_receivers import jitter_buffer_of

    await asyncio.sleep(delay)
    viewer = Viewer(url, codecs=("h264",), control=False, read_stamps=False, query="?rendition=high")
    row: dict[str, Any] = {"session": "", "frame_times": [], "lost": 0, "error": ""}
    try:
        await asyncio.wait_for(viewer.connect(http), 20.0)
        row["session"] = str(viewer.answer.get("id", ""))
        while not stop.is_set():
            await asyncio.sleep(0.1)
        buffer = jitter_buffer_of(viewer.transceiver.receiver)
        row["frame_times"], row["lost"] = list(buffer.frame_times), buffer.lost
    except Exception as exc:  # this peer's result, not the worker's
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(viewer.close(), 5.0)
    return row


async def _watch(url: str, peers: int, ramp: float, stop: Any) -> ProbeResult:
    """Peers that only count whole frames (bench.rtc_receivers' counting receiver: no decode), from
    their connect (spread over `ramp` s) until `stop`."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        rows = await asyncio.gather(*(_watch_one(http, url, ramp * i / max(1, peers), stop)
                                      for i in range(peers)))
    return ProbeResult(watchers=list(rows))


def _entry(job: dict[str, Any], inbox: Any, stop: Any, out: Any) -> None:
    try:
        if job["kind"] == "watch":
            from bench.rtc_receivers import install, loopback_only

            loopback_only()
            install("count")
        else:
            _install()
        import tests.support.webrtc_viewer  # noqa: F401 - import (and pay for) aiortc before the start

        out.put({"ready": True})
        url = inbox.get(timeout=READY_TIMEOUT * 4)
        if url is None:
            return  # closed before it began
        if job["kind"] == "latency":
            result = asyncio.run(_latency(url, job["seconds"], job["settle_timeout"]))
        elif job["kind"] == "watch":
            result = asyncio.run(_watch(url, job.get("peers", 1), job.get("ramp", 0.0), stop))
        else:
            result = asyncio.run(_joins(url, job["count"], tuple(job["gap"]), job["seed"], job["timeout"]))
        out.put({"result": asdict(result)})
    except BaseException as exc:  # report, never hang the coordinator
        out.put({"result": asdict(ProbeResult(error=f"{type(exc).__name__}: {exc}"[:300]))})


class Probe:
    """Spawned (and aiortc imported) at once, before the server it will watch is up; `begin(url)`
    starts the job on that server; `result()` waits for what it found (a watch is told to stop)."""

    def __init__(self, job: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        self._inbox = ctx.Queue()
        self._stop = ctx.Event()
        self._queue = ctx.Queue()
        self._proc = ctx.Process(target=_entry, args=(job, self._inbox, self._stop, self._queue),
                                 daemon=True, name=f"passthrough-{job['kind']}")
        self._proc.start()
        self._ready = False
        self._begun = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def wait_ready(self) -> None:
        if self._ready:
            return
        item = self._get(READY_TIMEOUT)
        if "ready" not in item:
            self.close()
            raise RuntimeError(f"the probe did not start: {item['result']['error']}")
        self._ready = True

    def begin(self, url: str) -> None:
        self.wait_ready()
        self._begun = True
        self._inbox.put(url)

    def result(self, timeout: float) -> ProbeResult:
        self._stop.set()
        item = self._get(timeout)
        self.close(wait=1.0)  # what it found is in: its own teardown need not be waited for
        result = item["result"]
        result["frames"] = [tuple(f) for f in result["frames"]]
        return ProbeResult(**result)

    def _get(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return dict(self._queue.get(timeout=0.5))
            except queue.Empty:
                if not self._proc.is_alive() or time.monotonic() > deadline:
                    return {"result": asdict(ProbeResult(error="the probe died or hung"))}

    def close(self, wait: float = 10.0) -> None:
        self._stop.set()
        if not self._begun:
            self._inbox.put(None)  # never started: it leaves at once
        end_process(self._proc, wait)
