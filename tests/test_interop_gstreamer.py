"""WHEP with GStreamer's webrtcbin as the viewer (Debian's GStreamer 1.22): an RSA DTLS peer.

webrtcbin's certificate is RSA and it takes the DTLS server role when camcast answers its actpass
offer; aiortc alone offers ECDHE-ECDSA suites only, and that handshake ends in "no shared cipher".
The viewer (support/gst_whep_viewer.py) runs under Debian's python3 and does WHEP itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCCertificate
from aiortc.rtcdtlstransport import SRTP_AES128_CM_SHA1_80
from OpenSSL import SSL

from camcast.webrtc.compat import rsa_peers_accepted, with_rsa_suites
from support.server import ServerProcess, launch
from support.waiting import eventually

SYSTEM_PYTHON = Path("/usr/bin/python3")  # Debian's: the one python3-gi is built for
VIEWER = Path(__file__).parent / "support" / "gst_whep_viewer.py"
FRAMES = 30
VIEWER_TIMEOUT = 15.0  # s for the viewer to decode FRAMES (about 2 s on an idle machine)
PACKAGES = ("python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-bad-1.0 gstreamer1.0-plugins-base "
            "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice gstreamer1.0-libav")
_PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import Gst, GstSdp, GstWebRTC
Gst.init(None)
wanted = ("webrtcbin", "nicesrc", "nicesink", "dtlssrtpdec", "decodebin", "rtph264depay", "avdec_h264",
          "rtpvp8depay", "vp8dec", "videoconvert", "appsink")
print(" ".join(e for e in wanted if Gst.ElementFactory.find(e) is None))
"""


@functools.cache
def missing_gstreamer() -> str | None:
    """None when Debian's python3 can run the viewer, else what is missing (checked once per run)."""
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run([str(SYSTEM_PYTHON), "-c", _PROBE], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "gi failed to load"
    return f"GStreamer elements missing: {probe.stdout.strip()}" if probe.stdout.strip() else None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = launch(tmp_path_factory.mktemp("gst-whep"), ["--size", "320x240"])
    try:
        yield server
    finally:
        code, _ = server.terminate()
        assert code == 0, server.describe()
        assert "Traceback" not in server.log(), server.describe()


class GstViewer:
    """One gst_whep_viewer.py process with --hold: it stays in the session until `release()`."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.events: list[dict[str, Any]] = []

    def describe(self) -> str:
        lines = "\n".join(json.dumps(e) for e in self.events if e["event"] != "frame")
        frames = sum(e["event"] == "frame" for e in self.events)
        return f"--- viewer events ({frames} frames) ---\n{lines}\n--- viewer stderr ---\n" \
               f"{self.stderr.read_text(errors='replace')[-3000:]}"

    async def read_until(self, event: str) -> dict[str, Any]:
        """Read JSON lines until one is `event` (AssertionError at the end of output)."""
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.events.append(json.loads(line))
            if self.events[-1]["event"] == event:
                return self.events[-1]
        raise AssertionError(f"the viewer ended (status {await self.proc.wait()}) before "
                             f"'{event}'\n{self.describe()}")

    async def release(self) -> int:
        """Let it DELETE its session and exit; its status."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        async for line in self.proc.stdout:
            self.events.append(json.loads(line))
        return await self.proc.wait()

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]


@contextlib.asynccontextmanager
async def gst_viewer(url: str, codec: str, workdir: Path) -> AsyncIterator[GstViewer]:
    problem = missing_gstreamer()
    if problem:
        pytest.fail(f"the GStreamer viewer needs Debian's GStreamer: apt-get install {PACKAGES} "
                    f"(./scripts/test, as root)\n({problem})", pytrace=False)
    stderr = workdir / f"viewer-{codec}.stderr"
    with stderr.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            str(SYSTEM_PYTHON), str(VIEWER), url + "whep", "--codec", codec, "--frames", str(FRAMES),
            "--timeout", str(VIEWER_TIMEOUT), "--ice-address", "127.0.0.1", "--hold",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            env={**os.environ, "GST_DEBUG": "dtlsconnection:1", "GST_DEBUG_NO_COLOR": "1"})  # DTLS errors
    try:
        yield GstViewer(proc, stderr)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def sessions(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, dict[str, Any]]:
    async with http.get(server.url + "api/status") as r:
        status = await r.json()
    return {s["id"]: s for s in status["webrtc"]["sessions"]}


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_gstreamer_whep_viewer_decodes(codec: str, server: ServerProcess, http: aiohttp.ClientSession,
                                             tmp_path: Path) -> None:
    async with gst_viewer(server.url, codec, tmp_path) as viewer:
        done = await asyncio.wait_for(viewer.read_until("done"), VIEWER_TIMEOUT + 5)
        assert done["frames"] == FRAMES
        posted = viewer.of("posted")[0]
        assert posted["status"] == 201, viewer.describe()
        session_id = posted["location"].rsplit("/", 1)[1]

        # The session, seen while the viewer holds it: WHEP, the codec it offered, frames sent.
        live = (await sessions(http, server)).get(session_id)
        assert live is not None, viewer.describe()
        assert (live["via"], live["codec"], live["state"]) == ("whep", codec, "connected")
        assert live["frames_sent"] >= FRAMES
        assert re.search(rf"webrtc viewer connected: {session_id} from 127\.0\.0\.1 \(whep, {codec}\)",
                         server.log()), server.log()

        # The pictures are camcast's: every frame carries its stamp, read back to a sane latency.
        frames = viewer.of("frame")
        assert {(f["width"], f["height"]) for f in frames} == {(320, 240)}
        stamps = [f["stamp_us"] for f in frames]
        assert stamps == sorted(stamps) and len(set(stamps)) > FRAMES // 2, stamps
        assert 0 <= frames[-1]["latency_ms"] < 2000, frames[-1]

        assert await asyncio.wait_for(viewer.release(), 10) == 0, viewer.describe()
    assert viewer.of("deleted")[0]["status"] == 200, viewer.describe()
    await eventually(lambda: sessions(http, server), 5, f"session {session_id} gone",
                     until=lambda live: session_id not in live)
    assert re.search(rf"webrtc viewer disconnected: {session_id} .*\(ended by DELETE\)", server.log()), \
        server.log()


def test_dtls_contexts_offer_rsa_suites_only_inside_the_hook() -> None:
    certificate = RTCCertificate.generateCertificate()

    def suites() -> list[str]:
        context = certificate._create_ssl_context(srtp_profiles=[SRTP_AES128_CM_SHA1_80])
        return SSL.Connection(context).get_cipher_list()

    plain = suites()
    assert not any(name.startswith("ECDHE-RSA-") for name in plain)  # aiortc's own list: the failure
    with rsa_peers_accepted():
        widened, again = suites(), suites()
    assert suites() == plain  # undone on leaving
    assert widened == again
    ecdsa = [name for name in plain if name.startswith("ECDHE-ECDSA-")]
    assert widened[-2 * len(ecdsa):] == ecdsa + [n.replace("ECDSA", "RSA") for n in ecdsa]
    assert with_rsa_suites(["TLS_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA"]) \
        == ["ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA"]
