"""aiortc's webcam example design (examples/webcam/webcam.py): one source track, relayed with
aiortc.contrib.media.MediaRelay to every peer, so each peer's RTCRtpSender runs its own encoder.

The source is camcast's test pattern with the frame stamp at the same size and fps, read in a
thread as MediaPlayer reads a camera, and handed over as yuv420p (converted once per frame, so
each peer pays for its encoder only, not for a colour conversion: the kindest form of the design).
Signalling is the example's: POST /offer with {"sdp","type"} gets {"sdp","type"}, the video codec
forced like its --video-codec option. ICE gathers 127.0.0.1 only.

Run: python -m bench.baselines.aiortc_relay --port 0 --size 640x480 --fps 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import logging
import threading

import av
import cv2
from aiohttp import web
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, VideoStreamTrack

from bench.baselines.example_server import loopback_ice, new_peer, serve_until_stopped
from camcast.frames import now_us
from camcast.sources.testpattern import TestPattern
from camcast.stamp import write_stamp

VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)


class PatternTrack(VideoStreamTrack):
    """The camera track: a thread captures (test pattern + stamp) as MediaPlayer reads a camera, and
    recv() returns the newest frame (paced by the capture, not by VideoStreamTrack's clock)."""

    def __init__(self, width: int, height: int, fps: float) -> None:
        super().__init__()
        self._pattern = TestPattern(width, height, fps)
        self._loop = asyncio.get_running_loop()
        self._frame: av.VideoFrame | None = None
        self._new = asyncio.Event()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._capture, name="capture", daemon=True)
        self._thread.start()

    def _capture(self) -> None:
        self._pattern.open()
        while not self._halt.is_set():
            image = self._pattern.read()
            if image is None:
                break
            captured = now_us()
            write_stamp(image, captured)
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
            frame.pts = captured * 9 // 100  # 90 kHz, from the capture time
            frame.time_base = VIDEO_TIME_BASE
            with contextlib.suppress(RuntimeError):  # the loop closed at shutdown
                self._loop.call_soon_threadsafe(self._publish, frame)

    def _publish(self, frame: av.VideoFrame) -> None:
        self._frame = frame
        self._new.set()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._new.wait()
        self._new.clear()
        assert self._frame is not None
        return self._frame

    def stop(self) -> None:
        super().stop()
        self._halt.set()


RELAY = web.AppKey("relay", MediaRelay)
SOURCE = web.AppKey("source", PatternTrack)
CODEC = web.AppKey("codec", str)


def force_codec(pc: RTCPeerConnection, sender: RTCRtpSender, forced_codec: str) -> None:
    """As in the example: only this codec on the sender's transceiver."""
    kind = forced_codec.split("/")[0]
    codecs = RTCRtpSender.getCapabilities(kind).codecs
    transceiver = next(t for t in pc.getTransceivers() if t.sender == sender)
    transceiver.setCodecPreferences([codec for codec in codecs if codec.mimeType == forced_codec])


async def offer(request: web.Request) -> web.Response:
    params = await request.json()
    description = RTCSessionDescription(sdp=params["sdp"], type=params["type"])
    pc = new_peer(request.app)
    video_sender = pc.addTrack(request.app[RELAY].subscribe(request.app[SOURCE]))
    force_codec(pc, video_sender, request.app[CODEC])
    await pc.setRemoteDescription(description)
    await pc.setLocalDescription(await pc.createAnswer())
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})


async def stop_source(app: web.Application) -> None:
    app[SOURCE].stop()


async def serve(args: argparse.Namespace) -> None:
    width, height = (int(v) for v in args.size.lower().split("x"))
    app = web.Application()
    app[RELAY] = MediaRelay()
    app[SOURCE] = PatternTrack(width, height, args.fps)
    app[CODEC] = args.video_codec
    app.router.add_post("/offer", offer)
    app.on_shutdown.append(stop_source)
    banner = f"aiortc-relay: serving {args.size}@{args.fps:g}"
    await serve_until_stopped(app, args.port, banner, args.max_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--video-codec", default="video/H264", help="as the example's --video-codec")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop by itself after this long")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    loopback_ice()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
