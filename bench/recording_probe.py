"""Recording probe: what recording costs while WebRTC peers watch, and how soon it starts.

    python -m bench.recording_probe [--peers 10] [--window 8] [--rounds 3] [--presses 10]

1. CPU: the server's CPU over equal windows with `--peers` aiortc peers watching, recording off and
   on, alternated (off, on, off, on, ...) so a busy shared machine weighs on both alike. Recording
   remuxes the packets the peers already get, so the difference is the remux and the file writes.
   Each recording is read back: frames in the file against the frames the server says it wrote,
   and against the captures between its first and last frame stamp (nothing lost on the way).
2. Press to first recorded frame: a `record` start sent on the data channel at wall time P; the
   figure is (capture stamp of the file's first frame) - P, i.e. how far from the press the file
   starts. Also: P to the `recording` message coming back (the file is open and its keyframe
   is being written by then).

The peers receive and drop the video without decoding it (the server's work per peer is the same;
decoding 10 streams would only starve the server of CPU on a small machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import av

from bench.serverproc import ServerProcess, ServerSpec

FPS = 30


def _patch_peers() -> None:
    """Loopback candidates only, and receivers that drain their decode queue without decoding."""
    import aioice.ice
    import aiortc.rtcrtpreceiver as receiver

    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]

    def drain(loop: Any, input_q: Any, output_q: Any, *args: Any) -> None:
        while input_q.get() is not None:
            pass
        asyncio.run_coroutine_threadsafe(output_q.put(None), loop)

    receiver.decoder_worker = drain


class Peer:
    def __init__(self, url: str) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection

        self.url = url
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.messages: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self.channel: Any = None

    async def connect(self, http: aiohttp.ClientSession) -> None:
        from aiortc import RTCSessionDescription

        self.pc.addTransceiver("video", direction="recvonly")
        self.channel = self.pc.createDataChannel("control")
        self.channel.on("message", lambda data: self.messages.put_nowait((time.time(), json.loads(data))))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with http.post(self.url + "offer", json=offer) as r:
            r.raise_for_status()
            answer = await r.json()
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        for _ in range(500):
            if self.channel.readyState == "open":
                return
            await asyncio.sleep(0.02)
        raise TimeoutError("control channel did not open")

    async def record(self, action: str, timeout: float = 10.0) -> tuple[float, dict[str, Any]]:
        """Send start/stop; returns (arrival time, message) of the matching state broadcast."""
        while not self.messages.empty():
            self.messages.get_nowait()
        want = "recording" if action == "start" else "stopped"
        self.channel.send(json.dumps({"type": "record", "action": action}))
        deadline = time.monotonic() + timeout
        while True:
            arrived, message = await asyncio.wait_for(self.messages.get(), deadline - time.monotonic())
            if message.get("type") == "record" and message.get("state") == want:
                return arrived, message
            if message.get("type") == "error":
                raise RuntimeError(message["message"])

    async def close(self) -> None:
        await self.pc.close()


def read_file(path: Path) -> tuple[int, list[int]]:
    from camcast.stamp import read_stamp

    stamps = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            stamps.append(read_stamp(frame.to_ndarray(format="gray")))
    return len(stamps), stamps


async def probe(args: argparse.Namespace) -> dict[str, Any]:
    _patch_peers()
    folder = Path(tempfile.mkdtemp(prefix="camcast-recording-probe-"))
    spec = ServerSpec("camcast", (sys.executable, "-m", "camcast", "--source", "testpattern", "--host",
                                  "127.0.0.1", "--port", "0", "--ice-address", "127.0.0.1", "--recordings",
                                  str(folder), "--log-level", "warning"),
                      r"serving .* at http://127\.0\.0\.1:(\d+)/")
    result: dict[str, Any] = {"peers": args.peers, "window_s": args.window}
    with ServerProcess(spec, folder / "server.log") as server:
        url = server.url("/")
        async with aiohttp.ClientSession() as http:
            peers = [Peer(url) for _ in range(args.peers)]
            for peer in peers:
                await peer.connect(http)
            await asyncio.sleep(3.0)  # every peer past its first keyframe; the machine settles

            off, on, files = [], [], []
            for _ in range(args.rounds):
                for recording in (False, True):
                    if recording:
                        await peers[0].record("start")
                    before, t0 = server.usage().cpu_seconds, time.monotonic()
                    await asyncio.sleep(args.window)
                    cores = (server.usage().cpu_seconds - before) / (time.monotonic() - t0)
                    (on if recording else off).append(cores)
                    if recording:
                        _, stopped = await peers[0].record("stop")
                        files.append((folder / stopped["name"], stopped["frames"]))
            checks = []
            for path, written in files:
                count, stamps = read_file(path)
                span_frames = round((stamps[-1] - stamps[0]) / 1e6 * FPS) + 1
                checks.append({"file_frames": count, "server_wrote": written,
                               "captures_in_span": span_frames})
            result["cpu_cores_off"] = [round(c, 3) for c in off]
            result["cpu_cores_on"] = [round(c, 3) for c in on]
            result["cpu_added_pct_of_server"] = round(
                100 * (statistics.median(on) - statistics.median(off)) / statistics.median(off), 1)
            result["files"] = checks

            from camcast.frames import now_us

            starts, replies = [], []
            for _ in range(args.presses):
                await asyncio.sleep(1.0)  # past the encoder's keyframe rate limit (0.5 s)
                pressed = now_us()
                arrived, state = await peers[0].record("start")
                await asyncio.sleep(0.3)
                await peers[0].record("stop")
                _, stamps = read_file(folder / state["name"])
                starts.append((stamps[0] - pressed) / 1000)
                replies.append(arrived * 1000 - pressed / 1000)
            result["press_to_first_frame_ms"] = {
                "median": round(statistics.median(starts), 1), "min": round(min(starts), 1),
                "max": round(max(starts), 1), "all": [round(s, 1) for s in starts]}
            result["press_to_recording_message_ms"] = {
                "median": round(statistics.median(replies), 1), "max": round(max(replies), 1)}
            status = await (await http.get(url + "api/status")).json()
            result["recorder_dropped"] = status["recording"]["dropped"]
            result["webrtc_peers_at_end"] = (status.get("webrtc") or {}).get("peers")
            for peer in peers:
                await peer.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=10)
    parser.add_argument("--window", type=float, default=8.0, help="seconds per CPU window")
    parser.add_argument("--rounds", type=int, default=3, help="off/on window pairs")
    parser.add_argument("--presses", type=int, default=10)
    print(json.dumps(asyncio.run(probe(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
