"""An aiortc peer that only listens: one recvonly audio m-line (and optionally the `control`
data channel), over POST /offer or WHEP. It decodes what arrives and keeps the samples, so a test
can count packets and find the sound's dominant frequency. Needs the `loopback_ice` fixture."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from support.webrtc_viewer import OfferRejected

RATE = 48_000


class AudioTap:
    """Reads an audio track (a Listener's, or a video viewer's second one) and keeps its sound."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.chunks: list[np.ndarray] = []  # mono int16 at 48 kHz, one per decoded packet
        self._task = asyncio.get_running_loop().create_task(self._read(track))

    @classmethod
    def of(cls, pc: RTCPeerConnection) -> AudioTap:
        (track,) = [r.track for r in pc.getReceivers() if r.track is not None and r.track.kind == "audio"]
        return cls(track)

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                samples = frame.to_ndarray().reshape(-1)
                self.chunks.append(samples[::len(frame.layout.channels)].astype(np.int16))

    def sound(self, last_chunks: int) -> np.ndarray:
        return np.concatenate(self.chunks[-last_chunks:]) if self.chunks else np.zeros(0, np.int16)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def audio_packets(pc: RTCPeerConnection) -> int:
    """Opus RTP packets `pc` received so far (from its receivers' stats)."""
    stats = await pc.getStats()
    return sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp" and s.kind == "audio")


@dataclass
class Listener:
    base_url: str
    control: bool = False

    def __post_init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.answer_sdp = ""
        self.tap: AudioTap | None = None
        self._track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    async def connect(self, http: aiohttp.ClientSession, via: str = "offer") -> None:
        """Offer sound only; raises OfferRejected on a non-2xx answer."""
        self.pc.addTransceiver("audio", direction="recvonly")
        if self.control:
            self.pc.createDataChannel("control")

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if not self._track.done():
                self._track.set_result(track)

        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        if via == "offer":
            async with http.post(urljoin(self.base_url, "offer"), json={"sdp": sdp, "type": "offer"}) as r:
                if r.status != 200:
                    raise OfferRejected(r.status, await r.text())
                self.answer_sdp = (await r.json())["sdp"]
        else:
            async with http.post(urljoin(self.base_url, "whep"), data=sdp,
                                 headers={"Content-Type": "application/sdp"}) as r:
                if r.status != 201:
                    raise OfferRejected(r.status, await r.text())
                self.answer_sdp = await r.text()
        await self.pc.setRemoteDescription(RTCSessionDescription(self.answer_sdp, "answer"))
        self.tap = AudioTap(await asyncio.wait_for(self._track, 10))

    async def packets(self) -> int:
        return await audio_packets(self.pc)

    async def close(self) -> None:
        if self.tap is not None:
            await self.tap.close()
        await self.pc.close()


def dominant_hz(samples: np.ndarray, rate: int = RATE) -> float:
    """The strongest frequency of `samples` (windowed FFT)."""
    signal = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(signal))
    spectrum[0] = 0
    return float(np.argmax(spectrum) * rate / len(samples))


def level(samples: np.ndarray) -> float:
    """RMS of int16 samples, 0..32767."""
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


def audio_sections(sdp: str) -> list[str]:
    return ["m=audio" + part.split("m=", 1)[0] for part in sdp.split("m=audio")[1:]]


__all__ = ["AudioTap", "Listener", "OfferRejected", "audio_packets", "audio_sections", "dominant_hz", "level"]
