"""Chromium against camcast through code written elsewhere.

1. Through an SFU: camcast publishes over WHIP to Janus 1.1.2 (support.janus, a network namespace
   whose veth carries 127.0.0.2); Chromium runs inside that namespace (Playwright launches it through
   `ip netns exec`), subscribes to the videoroom feed with Janus's HTTP API from the page's own JS and
   decodes camcast's pictures.
2. A third-party WHEP player: the npm package whip-whep's WHEPClient, in a page on an origin of its
   own, plays camcast's /whep over loopback and DELETEs the session when it stops.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page

from support import janus
from support.browser import CHROMIUM, CHROMIUM_ARGS, open_page
from support.janus import JanusBed, janus_bed
from support.server import ServerProcess, camcast_command, clean_env, launch
from support.waiting import eventually

FRAMES = 30
PLAYER_DIR = Path(__file__).parent / "support" / "whep_player"
# Where scripts/test installs the player package from npm (node_modules is never committed).
WHEP_PLAYER_PACKAGE = Path(os.environ.get("CAMCAST_TEST_WHEP_PLAYER", "/opt/whep-player"),
                           "node_modules", "whip-whep")
WHEP_PLAYER_VERSION = "1.2.0"


# -- 1. Chromium subscribing through Janus --------------------------------------------------------

# The recipe's subscriber flow (non-trickle), from a page served by Janus's HTTP transport itself so
# that /janus is same-origin. Resolves once the answer is sent; the frames are counted by getStats.
SUBSCRIBE_JS = """async (room) => {
  const api = "/janus";
  const post = async (url, body) => {
    const transaction = Math.random().toString(36).slice(2);
    const sent = await fetch(url, {method: "POST", body: JSON.stringify({...body, transaction})});
    const answer = await sent.json();
    if (answer.janus === "error") {
      throw new Error(`Janus refused ${JSON.stringify(body)}: ${JSON.stringify(answer)}`);
    }
    return answer;
  };
  const session = `${api}/${(await post(api, {janus: "create"})).data.id}`;
  window.janusSession = session;
  const attached = await post(session, {janus: "attach", plugin: "janus.plugin.videoroom"});
  const handle = `${session}/${attached.data.id}`;
  const listed = await post(handle, {janus: "message", body: {request: "listparticipants", room}});
  const publishers = (listed.plugindata.data.participants || []).filter((p) => p.publisher);
  if (!publishers.length) throw new Error(`no publisher in room ${room}: ${JSON.stringify(listed)}`);
  const join = {request: "join", ptype: "subscriber", room, streams: [{feed: publishers[0].id}]};
  await post(handle, {janus: "message", body: join});
  let offer = null;
  for (const deadline = Date.now() + 10000; !offer && Date.now() < deadline;) {
    const events = await (await fetch(`${session}?maxev=10`)).json();
    for (const event of [].concat(events)) {
      if (event.jsep && event.jsep.type === "offer") offer = event.jsep;
      const data = event.plugindata && event.plugindata.data;
      if (data && data.error) throw new Error(`the join failed: ${JSON.stringify(event)}`);
    }
  }
  if (!offer) throw new Error("no offer from Janus within 10 s");
  const pc = window.pc = new RTCPeerConnection();
  const video = document.createElement("video");
  Object.assign(video, {muted: true, autoplay: true, playsInline: true});
  document.body.appendChild(video);
  pc.ontrack = (e) => { video.srcObject = e.streams[0] || new MediaStream([e.track]); };
  await pc.setRemoteDescription(offer);
  await pc.setLocalDescription(await pc.createAnswer());
  await new Promise((done) => {  // non-trickle: the answer carries every candidate
    if (pc.iceGatheringState === "complete") return done();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && done());
    setTimeout(done, 5000);
  });
  await post(handle, {janus: "message", body: {request: "start"},
                      jsep: {type: "answer", sdp: pc.localDescription.sdp}});
  return {feed: publishers[0].id, candidates: (pc.localDescription.sdp.match(/a=candidate:.*/g) || [])};
}"""

STATS_JS = """async () => {
  const pc = window.pc;
  const out = {connection: pc.connectionState, framesDecoded: 0, codec: null, remote: null};
  const stats = await pc.getStats();
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      Object.assign(out, {framesDecoded: s.framesDecoded || 0, width: s.frameWidth, height: s.frameHeight});
      if (s.codecId && stats.get(s.codecId)) out.codec = stats.get(s.codecId).mimeType;
    }
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
      const remote = stats.get(s.remoteCandidateId);
      out.remote = remote && remote.address;
    }
  });
  return out;
}"""


def launch_in(bed: JanusBed, workdir: Path, *args: str) -> ServerProcess:
    """camcast inside the bed's namespace: HTTP on 127.0.0.1 there, ICE on the veth's address."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = camcast_command("--source", "testpattern", "--port", "0", "--ice-address", janus.ADDRESS,
                           "--recordings", str(workdir / "recordings"), *args)
    out, err = workdir / "server.stdout", workdir / "server.stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = bed.side.popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=workdir,
                              env=clean_env())
    server = ServerProcess(proc, argv, workdir, out, err, workdir / "recordings")
    server.wait_for_url()
    return server


def chromium_in(bed: JanusBed, folder: Path) -> Path:
    """An executable that starts Debian's Chromium inside the bed's namespace. `ip netns exec` execs
    Chromium in place, so Playwright's pipes (fds 3 and 4) and the process id stay the browser's."""
    wrapper = folder / "chromium-in-namespace"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {bed.side.namespace} {CHROMIUM} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


async def test_chromium_watches_the_camera_through_janus(chromium: Browser, tmp_path: Path) -> None:
    problem = janus.missing()
    if problem:
        pytest.fail(problem)
    with janus_bed(tmp_path / "janus") as bed:
        url = bed.create_endpoint("chromium")
        server = launch_in(bed, tmp_path / "server", "--publish", url)
        try:
            await eventually(lambda: bed.side.acall(server.status), 15, "camcast publishing to Janus",
                             until=lambda s: s["publish"] and s["publish"][0]["state"] == "publishing")
            # Chromium hides host addresses behind mDNS names unless told not to; Janus ignores those.
            browser = await chromium.browser_type.launch(
                executable_path=str(chromium_in(bed, tmp_path)),
                args=[*CHROMIUM_ARGS, "--disable-features=WebRtcHideLocalIpsWithMdns"])
            try:
                # Without camera permission Chromium gathers on the default route's interface only, and
                # the namespace has no default route: open_page grants it for Janus's origin.
                async with open_page(browser, janus.JANUS_HTTP.rsplit("/", 1)[0]) as page:
                    await page.goto(janus.JANUS_HTTP + "/info")  # any page of Janus's origin
                    await check_janus_subscriber(page)
            finally:
                await browser.close()
            assert bed.side.call(server.status)["publish"][0]["state"] == "publishing"
            assert server.terminate()[0] == 0
            assert "Traceback" not in server.log(), server.describe()
        finally:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()


async def check_janus_subscriber(page: Page) -> None:
    """Subscribe from the page (served by Janus) and decode the feed; then leave Janus."""
    joined = await page.evaluate(SUBSCRIBE_JS, janus.ROOM)
    assert any(janus.ADDRESS in c for c in joined["candidates"]), joined
    stats = await eventually(lambda: page.evaluate(STATS_JS), 20,
                             f"{FRAMES} frames decoded through Janus",
                             until=lambda s: s["framesDecoded"] >= FRAMES)
    assert stats["connection"] == "connected" and stats["remote"] == janus.ADDRESS, stats
    assert (stats["width"], stats["height"]) == (640, 480), stats
    assert stats["codec"] == "video/H264", stats  # camcast's top rendition, as published
    print(f"Chromium decoded {stats['framesDecoded']} frames through Janus")
    await page.evaluate("() => fetch(window.janusSession, {method: 'POST', "
                        "body: JSON.stringify({janus: 'destroy', transaction: 'bye'})})")


# -- 2. A third-party WHEP player ------------------------------------------------------------------

async def serve_player(folder: Path) -> tuple[web.AppRunner, str]:
    """The player's page on an origin of its own (another port): its WHEP requests are cross-origin."""
    app = web.Application()
    app.router.add_static("/", folder)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


def player_site(folder: Path) -> Path:
    """The page and its script, with the package's whep.js copied from node_modules beside them."""
    package = json.loads((WHEP_PLAYER_PACKAGE / "package.json").read_text()) \
        if (WHEP_PLAYER_PACKAGE / "package.json").exists() else {}
    if package.get("version") != WHEP_PLAYER_VERSION:
        pytest.fail(f"the WHEP player test needs whip-whep {WHEP_PLAYER_VERSION} from npm in "
                    f"{WHEP_PLAYER_PACKAGE.parent.parent} (run scripts/test, or npm install --prefix "
                    f"{WHEP_PLAYER_PACKAGE.parent.parent} whip-whep@{WHEP_PLAYER_VERSION}); found "
                    f"{package.get('version')}", pytrace=False)
    shutil.copytree(PLAYER_DIR, folder)
    shutil.copy(WHEP_PLAYER_PACKAGE / "whep.js", folder / "whep.js")
    return folder


async def sessions(server: ServerProcess) -> list[dict[str, Any]]:
    status = await asyncio.to_thread(server.status)
    return list(status["webrtc"]["sessions"])


async def player_state(page: Page) -> dict[str, Any]:
    return dict(await page.evaluate("() => window.player ? {state: player.state, error: player.error, "
                                    "resource: player.resource} : {state: 'loading'}"))


@pytest.fixture
async def whep_server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    server = await asyncio.to_thread(launch, tmp_path / "server", ["--size", "320x240"])
    try:
        yield server
    finally:
        code, _ = server.terminate()
        assert code == 0, server.describe()
        assert "Traceback" not in server.log(), server.describe()


async def test_a_third_party_whep_player_plays_and_deletes_its_session(
        chromium: Browser, whep_server: ServerProcess, tmp_path: Path) -> None:
    site = player_site(tmp_path / "player")
    runner, origin = await serve_player(site)
    try:
        async with open_page(chromium, origin) as page:
            answered: list[tuple[str, str, int]] = []  # what camcast answered the player's requests
            page.on("response", lambda r: answered.append((r.request.method, r.url, r.status)))
            await page.goto(f"{origin}/index.html?whep={whep_server.url}whep")
            state = await eventually(lambda: player_state(page), 10, "the player viewing",
                                     until=lambda s: s["state"] in ("viewing", "failed"))
            assert state["state"] == "viewing", state
            stats = await eventually(lambda: page.evaluate("() => player.stats()"), 15,
                                     f"{FRAMES} frames decoded by the player",
                                     until=lambda s: s["framesDecoded"] >= FRAMES)
            assert (stats["frameWidth"], stats["frameHeight"]) == (320, 240), stats
            assert stats["videoFrames"] > 0 and stats["videoWidth"] == 320, stats  # shown in its <video>

            # camcast sees the player's session, under the id of the Location the player kept.
            session_id = state["resource"].rsplit("/", 1)[-1]
            assert state["resource"] == f"{whep_server.url}whep/{session_id}", state
            listed = await sessions(whep_server)
            assert [(s["id"], s["via"]) for s in listed] == [(session_id, "whep")], listed

            await page.evaluate("() => player.stop()")
            await eventually(lambda: sessions(whep_server), 10, "the session gone after the player's DELETE",
                             until=lambda s: s == [])
            # The player closes its peer connection, then DELETEs: camcast ends the session on whichever
            # comes first (the DTLS close_notify or the DELETE) and answers the DELETE 200 while the
            # session is still listed, 404 once it is gone.
            deletes = [(url, code) for method, url, code in answered if method == "DELETE"]
            assert [url for url, _ in deletes] == [state["resource"]], answered
            assert deletes[0][1] in (200, 404), answered
            print(f"camcast answered the player's DELETE {deletes[0][1]}; the session ended by "
                  f"{'the DELETE' if 'ended by DELETE' in whep_server.log() else 'the DTLS close'}")
            assert (await player_state(page))["state"] == "stopped"
            assert not [e for e in page.errors if e.startswith("pageerror")], page.errors  # type: ignore[attr-defined]
        status = await asyncio.to_thread(whep_server.status)
        assert status["webrtc"]["peers"] == 0 and status["viewers"]["webrtc"] == 0, status
    finally:
        await runner.cleanup()
