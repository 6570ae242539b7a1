"""aiortc's per-peer Opus design (its webcam example's audio): one source AudioStreamTrack relayed with
aiortc.contrib.media.MediaRelay to every peer, so each peer's RTCRtpSender runs its own Opus encoder.

The source is camcast's test tone (camcast.audio.tone: 1 kHz for 100 ms from every whole second), as
48 kHz mono s16 AudioFrames of 20 ms paced on the wall clock, as aiortc's AudioStreamTrack paces its
silence. There is no video: an offer's video m-line is answered inactive, so what this server costs
beyond `--audio none` (peers connected, nothing sent) is the audio alone.
Signalling is the example's: POST /offer with {"sdp","type"} gets {"sdp","type"}. ICE gathers 127.0.0.1 only.

Run: python -m bench.audio_relay --port 0 [--audio none]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

import av
from aiohttp import web
from aiortc import RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

from bench.baselines.example_server import loopback_ice, new_peer, serve_until_stopped
from camcast.audio import AUDIO_TIME_BASE, FRAME_SAMPLES, FRAME_US, SAMPLE_RATE, tone


class ToneTrack(AudioStreamTrack):
    """The test tone on the wall clock, one 20 ms frame per recv()."""

    def __init__(self) -> None:
        super().__init__()
        self._next_us = 0
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.time_ns() // 1000
        if not self._next_us or now - self._next_us > 200_000:
            self._next_us = (now // FRAME_US) * FRAME_US  # on the 20 ms grid, as camcast's encoder
        wait = (self._next_us - now) / 1e6
        if wait > 0:
            await asyncio.sleep(wait)
        pcm = tone(self._next_us)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = AUDIO_TIME_BASE
        self._pts += FRAME_SAMPLES
        self._next_us += FRAME_US
        return frame


RELAY = web.AppKey("relay", MediaRelay)
SOURCE = web.AppKey("source", ToneTrack)
AUDIO = web.AppKey("audio", str)


async def offer(request: web.Request) -> web.Response:
    params = await request.json()
    pc = new_peer(request.app)

    await pc.setRemoteDescription(RTCSessionDescription(sdp=params["sdp"], type=params["type"]))
    if request.app[AUDIO] == "tone":
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                # As the example: the relayed track, each peer's sender encoding it again.
                transceiver.sender.replaceTrack(request.app[RELAY].subscribe(request.app[SOURCE]))
                transceiver.direction = "sendonly"
    await pc.setLocalDescription(await pc.createAnswer())
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})


async def stop_source(app: web.Application) -> None:
    app[SOURCE].stop()


async def serve(args: argparse.Namespace) -> None:
    app = web.Application()
    app[RELAY] = MediaRelay()
    app[SOURCE] = ToneTrack()
    app[AUDIO] = args.audio
    app.router.add_post("/offer", offer)
    app.on_shutdown.append(stop_source)
    await serve_until_stopped(app, args.port, f"audio-relay: serving audio {args.audio}", args.max_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--audio", default="tone", choices=["tone", "none"])
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop by itself after this long")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    loopback_ice()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
