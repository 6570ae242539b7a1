"""An aiortc receive-only viewer of a camcast server, for tests and bench.

It signals over POST /offer (with the `control` data channel, like the player) or WHEP, decodes
every frame, and records when each arrived, whether it was a keyframe and (from the frame stamp)
its capture-to-decode latency. The process must gather loopback candidates only: use the
`loopback_ice` fixture, or `support.loopback.loopback_only()` outside tests.

Run as a script (`python tests/support/webrtc_viewer.py URL`) it connects, prints `playing <id>`
once the first frame decoded, and keeps watching until killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from camcast.frames import now_us
from camcast.stamp import read_stamp

_MIME = {"h264": "video/H264", "vp8": "video/VP8"}
_WEBRTC_STRING = 51  # SCTP payload protocol id of a data-channel text message


class OfferRejected(AssertionError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"offer rejected with {status}: {text.strip()}")
        self.status = status
        self.text = text


@dataclass
class FrameInfo:
    arrived: float  # time.monotonic()
    key: bool
    width: int
    height: int
    latency_ms: float | None  # capture (stamp) to decoded, same clock; None without read_stamps


@dataclass
class Viewer:
    base_url: str  # http://127.0.0.1:PORT/
    codecs: Sequence[str] = ()  # offer only these ("h264", "vp8"); empty: aiortc's defaults
    control: bool = True  # open the `control` data channel
    audio: bool = False  # add a recvonly audio m-line, as many WHEP players do
    read_stamps: bool = True
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Authorization
    query: str = ""  # appended to the offer's URL, e.g. "?rendition=medium"

    def __post_init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.frames: list[FrameInfo] = []
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.channel: RTCDataChannel | None = None
        self.transceiver: RTCRtpTransceiver | None = None
        self.answer: dict[str, Any] = {}
        self.session_url: str | None = None  # WHEP resource
        self.response_headers: dict[str, str] = {}  # of the answer
        self.offer_sent_at = 0.0
        self.decode_errors = 0
        self._track: MediaStreamTrack | None = None
        self._track_ready: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        self._reader: asyncio.Task[None] | None = None
        self._new_frame = asyncio.Event()

    # -- signalling -----------------------------------------------------------------------------
    async def connect(self, http: aiohttp.ClientSession, via: str = "offer") -> None:
        """Offer, apply the answer and start reading frames; raises OfferRejected on a non-2xx."""
        pc = self.pc
        self.transceiver = pc.addTransceiver("video", direction="recvonly")
        if self.codecs:
            wanted = {_MIME[c].lower() for c in self.codecs}
            caps = RTCRtpReceiver.getCapabilities("video").codecs
            self.transceiver.setCodecPreferences(
                [c for c in caps if c.mimeType.lower() in wanted] + [c for c in caps if c.name == "rtx"])
        if self.audio:
            pc.addTransceiver("audio", direction="recvonly")
        if self.control:
            self.channel = pc.createDataChannel("control")
            self.channel.on("message", self._on_message)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and not self._track_ready.done():
                self._track_ready.set_result(track)

        await pc.setLocalDescription(await pc.createOffer())
        self.offer_sent_at = time.monotonic()
        if via == "offer":
            payload = {"sdp": pc.localDescription.sdp, "type": "offer"}
            url = urljoin(self.base_url, "offer") + self.query
            async with http.post(url, json=payload, headers=self.headers) as r:
                if r.status != 200:
                    raise OfferRejected(r.status, await r.text())
                self.response_headers = dict(r.headers)
                self.answer = await r.json()
        else:
            headers = {"Content-Type": "application/sdp", **self.headers}
            async with http.post(urljoin(self.base_url, "whep") + self.query, data=pc.localDescription.sdp,
                                 headers=headers) as r:
                if r.status != 201:
                    raise OfferRejected(r.status, await r.text())
                self.response_headers = dict(r.headers)
                self.session_url = urljoin(self.base_url, r.headers["Location"])
                self.answer = {"sdp": await r.text(), "type": "answer"}
        await pc.setRemoteDescription(RTCSessionDescription(self.answer["sdp"], "answer"))
        self._track = await asyncio.wait_for(self._track_ready, 10)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def delete(self, http: aiohttp.ClientSession) -> int:
        """WHEP: DELETE the session resource; returns the status."""
        assert self.session_url is not None
        async with http.delete(self.session_url, headers=self.headers) as r:
            return r.status

    # -- frames ---------------------------------------------------------------------------------
    async def _read(self) -> None:
        assert self._track is not None
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await self._track.recv()
                latency = None
                if self.read_stamps:
                    latency = (now_us() - read_stamp(frame.to_ndarray(format="gray"))) / 1000
                self.frames.append(FrameInfo(time.monotonic(), bool(frame.key_frame), frame.width,
                                             frame.height, latency))
                self._new_frame.set()

    async def wait_frames(self, count: int, timeout: float = 10.0) -> list[FrameInfo]:
        """Wait until `count` frames have decoded in total; returns them all."""
        deadline = time.monotonic() + timeout
        while len(self.frames) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(self.frames)} of {count} frames within {timeout:g} s")
            self._new_frame.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_frame.wait(), left)
        return self.frames

    async def wait_keyframe(self, after: int, timeout: float = 5.0) -> FrameInfo:
        """The first keyframe among the frames after index `after`."""
        deadline = time.monotonic() + timeout
        while True:
            for info in self.frames[after:]:
                if info.key:
                    return info
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no keyframe within {timeout:g} s")
            await self.wait_frames(len(self.frames) + 1, left)

    def fps_between(self, start: float, end: float) -> float:
        return sum(1 for f in self.frames if start <= f.arrived < end) / (end - start)

    async def send_pli(self) -> None:
        """Send an RTCP Picture Loss Indication for the video we receive."""
        assert self.transceiver is not None
        receiver = self.transceiver.receiver
        sources = receiver.getSynchronizationSources()
        assert sources, "no RTP received yet"
        await receiver._send_rtcp_pli(sources[0].source)

    # -- control channel ------------------------------------------------------------------------
    def _on_message(self, data: str | bytes) -> None:
        self.messages.put_nowait(json.loads(data) if isinstance(data, str) else data)

    async def wait_open(self, timeout: float = 10.0) -> None:
        assert self.channel is not None
        deadline = time.monotonic() + timeout
        while self.channel.readyState != "open":
            if time.monotonic() > deadline:
                raise TimeoutError("control channel did not open")
            await asyncio.sleep(0.02)

    async def next_message(self, timeout: float = 5.0, skip: Sequence[str] = ("record",)) -> Any:
        """The next message from the server, passing over broadcasts of the `skip` types."""
        while True:
            message = await asyncio.wait_for(self.messages.get(), timeout)
            if not (isinstance(message, dict) and message.get("type") in skip):
                return message

    def send(self, data: str | bytes) -> None:
        assert self.channel is not None
        self.channel.send(data)

    async def send_invalid_utf8(self) -> None:
        """A text message whose bytes are not UTF-8 (a browser never sends one; a client could)."""
        assert self.channel is not None and self.pc.sctp is not None
        await self.pc.sctp._send(self.channel.id, _WEBRTC_STRING, b'{"type":"ping","t":\xff}')

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.pc.close()


async def _watch_forever(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        viewer = Viewer(url, read_stamps=False)
        await viewer.connect(http)
        await viewer.wait_frames(1)
        print(f"playing {viewer.answer.get('id')}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from support.loopback import loopback_only

    with loopback_only():
        asyncio.run(_watch_forever(sys.argv[1]))
