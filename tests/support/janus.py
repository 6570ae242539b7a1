"""A real SFU for the WHIP tests: Janus (Debian's `janus`, 1.1.2) and Debian's simple-whip-server,
inside a private network namespace whose veth carries 127.0.0.2 (Janus never gathers candidates on a
loopback interface, and aioice skips 127.0.0.1). See /work/shared/recipes/janus-whip.md.

    with janus_bed(workdir) as bed:
        bed.create_endpoint("cam", token="secret")     # POST /whip/create (server specific)
        proc = bed.side.popen([...])                   # camcast inside the namespace
        bed.side.call(fn)                              # fn in a thread inside the namespace
        bed.restart_janus()
        frames = bed.side.call(watch_room, 30)         # an aiortc subscriber through Janus's HTTP API

Leaving the context ends every process inside the namespace and deletes it, also on failure.
Needs root, `ip` (iproute2), /usr/bin/janus (Debian: janus), node, and simple-whip-server extracted
with its Node dependencies into WHIP_SERVER_DIR (scripts/test installs both).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.netlab import Side, delete_namespace, namespaces, run

ADDRESS = "127.0.0.2"  # the veth's address: every ICE candidate in the bed
ROOM = 4242
JANUS_HTTP = "http://127.0.0.1:8088/janus"
WHIP_BASE = "http://127.0.0.1:7080/whip"
WHIP_SERVER_DIR = Path(os.environ.get("CAMCAST_TEST_WHIP_SERVER", "/opt/simple-whip-server"))
MISSING = ("the WHIP tests need Debian's janus and simple-whip-server: run scripts/test as root "
           "(apt-get install janus; the .deb of simple-whip-server extracted into "
           f"{WHIP_SERVER_DIR} with its Node dependencies)")
PREFIX = "cc-janus"
START_TIMEOUT = 15.0
_counter = itertools.count()


def missing() -> str | None:
    """Why the bed cannot run here, or None."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        return "the WHIP tests need root and iproute2 (network namespaces)"
    if not shutil.which("janus") or not shutil.which("node"):
        return MISSING
    if not (WHIP_SERVER_DIR / "node_modules" / "express").is_dir() or not _whip_src().is_dir():
        return MISSING
    return None


def _whip_src() -> Path:
    return WHIP_SERVER_DIR / "usr/share/simple-whip-server/src"


# -- Janus's configuration (only what it needs: the HTTP and WebSocket APIs, the videoroom) --------
_LIBS = "/usr/lib/x86_64-linux-gnu/janus"


def _janus_configs(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    libs = Path(_LIBS) if Path(_LIBS).is_dir() else next(Path("/usr/lib").glob("*/janus"), Path(_LIBS))
    plugins = ",".join(p.name for p in (libs / "plugins").glob("*.so") if p.name != "libjanus_videoroom.so")
    (folder / "janus.jcfg").write_text(f"""general: {{
  configs_folder = "{folder}"
  plugins_folder = "{libs}/plugins"
  transports_folder = "{libs}/transports"
  events_folder = "{libs}/events"
  loggers_folder = "{libs}/loggers"
  debug_level = 4
  admin_secret = "unused-admin-secret"
}}
certificates: {{}}
media: {{
  rtp_port_range = "20000-20999"
}}
nat: {{
  nice_debug = false
  full_trickle = false
  ice_enforce_list = "{ADDRESS}"
  ignore_mdns = true
}}
plugins: {{
  disable = "{plugins}"
}}
transports: {{
  disable = "libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so"
}}
loggers: {{
  disable = "libjanus_jsonlog.so"
}}
events: {{}}
""")
    (folder / "janus.transport.http.jcfg").write_text("""general: {
  json = "indented"
  base_path = "/janus"
  http = true
  port = 8088
  ip = "127.0.0.1"
  https = false
}
admin: {
  admin_http = false
}
cors: {}
certificates: {}
""")
    (folder / "janus.transport.websockets.jcfg").write_text("""general: {
  json = "indented"
  ws = true
  ws_port = 8188
  ws_ip = "127.0.0.1"
  wss = false
}
admin: {
  admin_ws = false
  admin_wss = false
}
certificates: {}
""")
    (folder / "janus.plugin.videoroom.jcfg").write_text(f"""general: {{}}
room-{ROOM}: {{
  description = "camcast"
  publishers = 2
  bitrate = 2000000
  fir_freq = 10
  videocodec = "h264,vp8"
  h264_profile = "42e01f"
  audiocodec = "opus"
}}
""")


def _whip_config(path: Path) -> None:
    path.write_text("""module.exports = {
  janus: { address: 'ws://127.0.0.1:8188' },
  port: 7080,
  rest: '/whip',
  allowTrickle: true,
  strictETags: false,
  iceServers: []
};
""")


# -- the bed --------------------------------------------------------------------------------------
def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """A blocking request (from a thread inside the namespace); (status, headers, body) for any status."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


@dataclass
class JanusBed:
    side: Side
    workdir: Path
    janus: subprocess.Popen[bytes] | None = None
    whip: subprocess.Popen[bytes] | None = None
    janus_starts: int = 0
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def janus_log(self) -> Path:
        return self.workdir / f"janus-{self.janus_starts}.log"

    @property
    def whip_log_path(self) -> Path:
        return self.workdir / "whip-server.log"

    def whip_log(self) -> str:
        return self.whip_log_path.read_text(errors="replace") if self.whip_log_path.exists() else ""

    def describe(self) -> str:
        logs = [f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}"
                for p in sorted(self.workdir.glob("janus-*.log"))]
        return "\n".join([*logs, f"--- whip-server.log ---\n{self.whip_log()[-4000:]}"])

    # -- Janus -----------------------------------------------------------------------------------
    def start_janus(self) -> None:
        self.janus_starts += 1
        configs = self.workdir / "janus-conf"
        _janus_configs(configs)
        with open(self.janus_log, "wb") as log:
            self.janus = self.side.popen(["janus", "-F", str(configs), "-o"], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        self.side.call(self._wait_janus)

    def _wait_janus(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.janus is not None
            if self.janus.poll() is not None:
                raise AssertionError(f"janus exited with {self.janus.returncode}\n{self.describe()}")
            with contextlib.suppress(OSError):
                code, _, _ = http("GET", JANUS_HTTP + "/info", timeout=1.0)
                if code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"janus did not answer within {START_TIMEOUT:g} s\n{self.describe()}")
            time.sleep(0.05)

    def stop_janus(self) -> None:
        if self.janus is not None and self.janus.poll() is None:
            self.janus.terminate()
            try:
                self.janus.wait(5)
            except subprocess.TimeoutExpired:
                self.janus.kill()
                self.janus.wait()

    def restart_janus(self) -> None:
        self.stop_janus()
        self.start_janus()

    # -- the WHIP server -------------------------------------------------------------------------
    def start_whip(self) -> None:
        src = self.workdir / "whip-src"
        shutil.copytree(_whip_src(), src, symlinks=False, ignore=shutil.ignore_patterns("config.js"))
        _whip_config(src / "config.js")
        env = {**os.environ, "NODE_PATH": str(WHIP_SERVER_DIR / "node_modules"), "DEBUG": "whip:*",
               "DEBUG_COLORS": "false"}
        with open(self.whip_log_path, "wb") as log:
            self.whip = self.side.popen(["node", "server.js"], cwd=src, env=env, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT)
        self.side.call(self._wait_whip)

    def _wait_whip(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.whip is not None
            if self.whip.poll() is not None:
                raise AssertionError(f"the WHIP server exited with {self.whip.returncode}\n{self.describe()}")
            with contextlib.suppress(OSError):
                code, _, _ = http("GET", WHIP_BASE + "/healthcheck", timeout=1.0)
                if code == 200 and "Connected to Janus" in self.whip_log():
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"the WHIP server was not ready within {START_TIMEOUT:g} s\n"
                                     f"{self.describe()}")
            time.sleep(0.05)

    def create_endpoint(self, endpoint: str, token: str | None = None) -> str:
        """A WHIP endpoint publishing into the room; its URL."""
        body: dict[str, Any] = {"id": endpoint, "room": ROOM}
        if token:
            body["token"] = token
        code, _, text = self.side.call(http, "POST", WHIP_BASE + "/create", body)
        assert code == 200, f"/whip/create answered {code}: {text!r}"
        return f"{WHIP_BASE}/endpoint/{endpoint}"

    def endpoint_state(self, endpoint: str) -> dict[str, Any]:
        code, _, text = self.side.call(http, "GET", WHIP_BASE + "/endpoints")
        assert code == 200, text
        return next(e for e in json.loads(text) if e["id"] == endpoint)

    def deletes_seen(self, endpoint: str) -> int:
        """DELETEs of the endpoint's resource the WHIP server handled (its debug log says so)."""
        return self.whip_log().count(f"/resource/: {endpoint}")


@contextlib.contextmanager
def janus_bed(workdir: Path) -> Iterator[JanusBed]:
    name = f"{PREFIX}-{os.getpid()}-{next(_counter)}"
    for stale in sorted(namespaces()):
        if stale.startswith(PREFIX + "-") and not Path(f"/proc/{stale.split('-')[2]}").exists():
            delete_namespace(stale)
    run("ip", "netns", "add", name)
    side = Side(name, "v0", ADDRESS, ADDRESS)
    try:
        side.run("ip", "link", "set", "lo", "up")
        side.run("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        side.run("ip", "link", "set", "v0", "up")
        side.run("ip", "link", "set", "v1", "up")
        side.run("ip", "addr", "add", f"{ADDRESS}/32", "dev", "v0")
        workdir.mkdir(parents=True, exist_ok=True)
        bed = JanusBed(side, workdir)
        bed.start_janus()
        bed.start_whip()
        yield bed
    finally:
        for proc in side.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in side.processes:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        delete_namespace(name)


# -- a subscriber through Janus's HTTP API (non-trickle) --------------------------------------------
@dataclass
class Watched:
    frames: int = 0
    stamps: list[int] = field(default_factory=list)  # capture times read from the pictures, µs
    first_frame_after: float | None = None  # s from the join request to the first decoded frame
    size: tuple[int, int] | None = None
    audio_frames: int = 0  # decoded from the publisher's Opus m-line, while the frames were read


class JanusError(AssertionError):
    pass


async def _janus(session: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    body = {**body, "transaction": os.urandom(6).hex()}
    async with session.post(url, json=body) as response:
        answer: dict[str, Any] = await response.json(content_type=None)
    if answer.get("janus") == "error":
        raise JanusError(f"Janus refused {body}: {answer}")
    return answer


async def _offer_of(session: Any, session_url: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with session.get(f"{session_url}?maxev=10") as response:
            events = await response.json(content_type=None)
        for event in events if isinstance(events, list) else [events]:
            if event.get("jsep", {}).get("type") == "offer":
                return event["jsep"]
            if event.get("plugindata", {}).get("data", {}).get("error"):
                raise JanusError(f"the join failed: {event}")
    raise JanusError(f"no offer from Janus within {timeout:g} s")


async def watch_room(frames: int, timeout: float = 20.0) -> Watched:
    """Subscribe to the room's one publisher and decode `frames` frames (their stamps read)."""
    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from camcast.stamp import read_stamp

    watched = Watched()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        created = await _janus(session, JANUS_HTTP, {"janus": "create"})
        session_url = f"{JANUS_HTTP}/{created['data']['id']}"
        attached = await _janus(session, session_url, {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        handle_url = f"{session_url}/{attached['data']['id']}"
        listed = await _janus(session, handle_url, {"janus": "message",
                                                    "body": {"request": "listparticipants", "room": ROOM}})
        publishers = [p for p in listed["plugindata"]["data"].get("participants", []) if p.get("publisher")]
        if not publishers:
            raise JanusError(f"no publisher in room {ROOM}: {listed}")
        started = time.monotonic()
        feed = publishers[0]["id"]
        join = {"request": "join", "ptype": "subscriber", "room": ROOM, "streams": [{"feed": feed}]}
        await _janus(session, handle_url, {"janus": "message", "body": join})
        offer = await _offer_of(session, session_url, 10.0)
        pc = RTCPeerConnection()
        got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        listening: list[asyncio.Task[None]] = []

        async def listen(track: Any) -> None:
            with contextlib.suppress(Exception):
                while True:
                    await track.recv()
                    watched.audio_frames += 1

        def on_track(track: Any) -> None:
            if track.kind == "audio":
                listening.append(asyncio.ensure_future(listen(track)))
            elif not got.done():
                got.set_result(track)

        pc.on("track", on_track)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            await _janus(session, handle_url, {"janus": "message", "body": {"request": "start"},
                                               "jsep": {"type": "answer", "sdp": pc.localDescription.sdp}})
            track = await asyncio.wait_for(got, 5.0)
            deadline = time.monotonic() + timeout
            while watched.frames < frames:
                frame = await asyncio.wait_for(track.recv(), max(0.1, deadline - time.monotonic()))
                if watched.first_frame_after is None:
                    watched.first_frame_after = time.monotonic() - started
                image = frame.to_ndarray(format="bgr24")
                watched.size = (image.shape[1], image.shape[0])
                watched.stamps.append(read_stamp(image))
                watched.frames += 1
        finally:
            for task in listening:
                task.cancel()
            await pc.close()
            with contextlib.suppress(Exception):
                await _janus(session, session_url, {"janus": "destroy"})
    return watched


def watch_room_blocking(frames: int, timeout: float = 20.0) -> Watched:
    """`watch_room` on an event loop of its own (call it through `side.call`: it must run inside the
    namespace), with aioice gathering the bed's address only."""
    from support.netlab import ice_host_address

    with ice_host_address(ADDRESS):
        return asyncio.run(watch_room(frames, timeout))
