"""bench.baselines.aiortc_relay (aiortc's per-peer-encoder example design) on the emulated network.

The baseline listens and gathers ICE on 127.0.0.1 and captures the test pattern; on the bed it must
listen and gather on the server side's address, and it may play the bench's textured file instead.
Both are swapped in here, in this process only, so the baseline itself stays as the webrtc suite
measures it. Each peer's RTCRtpSender adapts its own encoder's bitrate to the REMB it receives
(aiortc does that), which is the design's answer to a slow link.

    python -m bench.network_relay --address 127.0.0.2 --size 640x480 --fps 30 [--file FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import cv2
import numpy as np
from aiohttp import web

from bench.baselines import aiortc_relay


class FileLoop:
    """A video file played in a loop at `fps`, resized to the capture size: TestPattern's interface."""

    def __init__(self, path: str, width: int, height: int, fps: float) -> None:
        from camcast.sources.pacing import Pacer

        self._path, self._size, self._pacer = path, (width, height), Pacer(fps)
        self._capture: cv2.VideoCapture | None = None

    def open(self) -> None:
        self._capture = cv2.VideoCapture(self._path)

    def read(self) -> np.ndarray | None:
        assert self._capture is not None
        self._pacer.wait()
        ok, image = self._capture.read()
        if not ok:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._capture.read()
        if not ok or image is None:
            return None
        return image if image.shape[1::-1] == self._size else cv2.resize(image, self._size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="listen and gather ICE on this address")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--file", help="play this video file (looped) instead of the test pattern")
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: [args.address] if use_ipv4 else []
    site = web.TCPSite

    def site_on_address(runner: Any, host: str, port: int) -> web.TCPSite:
        return site(runner, args.address, port)

    aiortc_relay.web.TCPSite = site_on_address  # type: ignore[assignment, misc]
    if args.file:
        path = args.file
        aiortc_relay.TestPattern = lambda w, h, fps: FileLoop(path, w, h, fps)  # type: ignore[assignment, misc]
    relay_args = argparse.Namespace(port=0, size=args.size, fps=args.fps, video_codec="video/H264",
                                    max_seconds=args.max_seconds)
    asyncio.run(aiortc_relay.serve(relay_args))


if __name__ == "__main__":
    main()
