"""A viewer of the RTSP camera itself, beside camcast: when its keyframes come, and its own latency.

It reads the camera's URL with PyAV as camcast's source does (RTSP over TCP, no probing, no
buffering) in its own process, and notes the wall-clock arrival of every access unit (with a key
to its bytes, to find the same frame through camcast) and of those that hold an IDR (the camera's
keyframe times, which a plain relay would make a new viewer wait for). With
`decode`, it also decodes every picture in a thread of its own (slice threads, as camcast's
source) and reads its stamp, so `(stamp, arrived, decoded)` per frame says how late the camera's
own pictures are at a receiver of the camera: the reference the same frames through camcast are
compared with.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.workerpool import end_process

READY_TIMEOUT = 30.0
IDR = 5  # H.264 NAL unit type of an IDR slice


def slice_key(data: bytes) -> str:
    """A short hash of an Annex B access unit's last NAL unit (its picture's slice): the same bytes
    reach a viewer of the camera and, passed through, a WebRTC peer of camcast (RTP fragments and
    reassembles NAL units without changing them), so the key finds one frame at both."""
    at = data.rfind(b"\x00\x00\x01")
    return hashlib.blake2b(data[at + 3:] if at >= 0 else data, digest_size=8).hexdigest()


def has_idr(data: bytes) -> bool:
    """Whether an Annex B access unit holds an IDR slice (what the RTSP demuxer hands over)."""
    at = data.find(b"\x00\x00\x01")
    while at >= 0 and at + 3 < len(data):
        if data[at + 3] & 0x1F == IDR:
            return True
        at = data.find(b"\x00\x00\x01", at + 3)
    return False


@dataclass
class DirectResult:
    keyframes: list[float] = field(default_factory=list)  # wall clock of every IDR's arrival
    units: list[tuple[str, float]] = field(default_factory=list)  # every access unit: (slice_key, arrival)
    # Per decoded picture: (stamp µs, its access unit's arrival, decoded and in hand as gray pixels), wall s.
    frames: list[tuple[int, float, float]] = field(default_factory=list)
    packets: int = 0
    decode_errors: int = 0
    error: str = ""


def _read(url: str, decode: bool, go: Any, stop: Any, out: Any) -> DirectResult:
    import av

    result = DirectResult()
    out.put({"imported": True})
    if not go.wait(READY_TIMEOUT * 4):
        raise TimeoutError("no start signal")
    if stop.is_set():
        return result  # closed before it began
    options = {"rtsp_transport": "tcp", "analyzeduration": "0", "fpsprobesize": "0", "probesize": "32",
               "fflags": "nobuffer", "timeout": "5000000"}
    container = av.open(url, options=options, timeout=(10.0, 5.0))
    # Decoding has its own thread: a slow decode must not delay the reading (and the arrival
    # times noted) of what follows.
    units: queue.Queue[tuple[Any, float] | None] = queue.Queue()
    decoder = threading.Thread(target=_decode, args=(container.streams.video[0], units, result),
                               name="decode", daemon=True) if decode else None
    try:
        if decoder is not None:
            decoder.start()
        out.put({"ready": True})
        synced = False
        for packet in container.demux(container.streams.video[0]):
            arrived = time.time()
            if stop.is_set():
                break
            if packet.size == 0:
                continue
            result.packets += 1
            data = bytes(packet)
            result.units.append((slice_key(data), arrived))
            key = has_idr(data) or bool(packet.is_keyframe)
            if key:
                result.keyframes.append(arrived)
            synced = synced or key
            if decoder is not None and synced:  # nothing decodes before the first keyframe
                units.put((packet, arrived))
    finally:
        units.put(None)
        if decoder is not None:
            decoder.join(10)
        container.close()
    return result


def _decode(stream: Any, units: queue.Queue[tuple[Any, float] | None], result: DirectResult) -> None:
    import av

    from camcast.stamp import read_stamp

    decoder = av.CodecContext.create(stream.codec_context.name, "r")
    decoder.thread_type = "SLICE"  # no frame threading: that would hold pictures back
    decoder.thread_count = 2
    if stream.codec_context.extradata:
        decoder.extradata = stream.codec_context.extradata
    while (item := units.get()) is not None:
        packet, arrived = item
        try:
            for frame in decoder.decode(packet):
                gray = frame.to_ndarray(format="gray")
                decoded = time.time()
                result.frames.append((read_stamp(gray), arrived, decoded))
        except av.FFmpegError:
            result.decode_errors += 1


def _entry(url: str, decode: bool, go: Any, stop: Any, out: Any) -> None:
    try:
        out.put({"result": asdict(_read(url, decode, go, stop, out))})
    except BaseException as exc:  # report, never hang the coordinator
        out.put({"result": asdict(DirectResult(error=f"{type(exc).__name__}: {exc}"[:300]))})


class DirectViewer:
    """The reader in its own process, spawned (PyAV imported) at once; `begin()` returns once it
    reads the camera; `stop()` returns what it saw."""

    def __init__(self, url: str, decode: bool) -> None:
        ctx = mp.get_context("spawn")
        self._go = ctx.Event()
        self._stop = ctx.Event()
        self._queue = ctx.Queue()
        self._proc = ctx.Process(target=_entry, args=(url, decode, self._go, self._stop, self._queue),
                                 daemon=True, name="passthrough-direct")
        self._proc.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def begin(self) -> DirectViewer:
        for expected in ("imported", "ready"):
            item = self._get(READY_TIMEOUT)
            if expected not in item:
                self.close()
                raise RuntimeError(f"the direct viewer did not start: {item['result']['error']}")
            if expected == "imported":
                self._go.set()
        return self

    def _get(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return dict(self._queue.get(timeout=0.5))
            except queue.Empty:
                if not self._proc.is_alive() or time.monotonic() > deadline:
                    return {"result": asdict(DirectResult(error="the direct viewer died or hung"))}

    def stop(self) -> DirectResult:
        self._stop.set()  # seen at the next packet (the camera sends 30 a second)
        item = self._get(15.0)
        self.close(wait=1.0)  # what it saw is in: its own teardown need not be waited for
        return DirectResult(**item["result"])

    def close(self, wait: float = 10.0) -> None:
        self._stop.set()
        self._go.set()
        end_process(self._proc, wait)
