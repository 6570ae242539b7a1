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
import contextlib
import logging
import signal
import time

import av
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

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


PCS = web.AppKey("pcs", set[RTCPeerConnection])
RELAY = web.AppKey("relay", MediaRelay)
SOURCE = web.AppKey("source", ToneTrack)
AUDIO = web.AppKey("audio", str)


async def offer(request: web.Request) -> web.Response:
    params = await request.json()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pcs = request.app[PCS]
    pcs.add(pc)

    @pc.on("connectionstatechange")
    async def on_connectionstatechange() -> None:
        if pc.connectionState in ("failed", "closed"):
            await pc.close()
            pcs.discard(pc)

    await pc.setRemoteDescription(RTCSessionDescription(sdp=params["sdp"], type=params["type"]))
    if request.app[AUDIO] == "tone":
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                # As the example: the relayed track, each peer's sender encoding it again.
                transceiver.sender.replaceTrack(request.app[RELAY].subscribe(request.app[SOURCE]))
                transceiver.direction = "sendonly"
    await pc.setLocalDescription(await pc.createAnswer())
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})


async def on_shutdown(app: web.Application) -> None:
    pcs = app[PCS]
    await asyncio.gather(*[pc.close() for pc in pcs], return_exceptions=True)
    pcs.clear()
    app[SOURCE].stop()


async def serve(args: argparse.Namespace) -> None:
    app = web.Application()
    app[PCS] = set()
    app[RELAY] = MediaRelay()
    app[SOURCE] = ToneTrack()
    app[AUDIO] = args.audio
    app.router.add_post("/offer", offer)
    app.on_shutdown.append(on_shutdown)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    port = runner.addresses[0][1]
    print(f"audio-relay: serving audio {args.audio} at http://127.0.0.1:{port}/", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), args.max_seconds)  # stops by itself after that long
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--audio", default="tone", choices=["tone", "none"])
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop by itself after this long")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import aioice.ice

    # The example offers every interface; the bench keeps WebRTC on loopback.
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"] if use_ipv4 else []
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
