"""Publishing a camera to an SFU over WHIP (RFC 9725): one publisher per target URL.

A publisher is a WebRTC peer that sends: one sendonly video m-line with the camera's top H.264
rendition, the same shared encode (or the camera's own H.264) that local viewers get, so no
extra encode, and when the camera has sound one sendonly Opus m-line with its one shared encode.
It offers, POSTs the offer as application/sdp (following 307/308), takes the 201's answer and
Location, and publishes until the session fails or the SFU goes silent; then it publishes again
with backoff (1 s doubling to 30 s). On stop it DELETEs the resource.

A publisher runs in its own task and never touches the camera's viewers: a failing target costs
the camera nothing but the attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    clock,
)

from camcast.webrtc.audiotrack import AudioPacketTrack
from camcast.webrtc.compat import h264_profile_codec, report_capture_times, route_keyframe_requests
from camcast.webrtc.offer import camera_profile, codec_preferences, opus_preferences
from camcast.webrtc.options import IceServerValues
from camcast.webrtc.peer import camera_levels
from camcast.webrtc.track import PacketTrack
from camcast.webrtc.whiplink import parse_ice_links, redirect_target, same_origin, shown_url, token_may_follow

if TYPE_CHECKING:
    from camcast.camera import Camera

log = logging.getLogger("camcast.whip")

STATES = ("connecting", "publishing", "retrying", "stopped")
BACKOFF_FIRST = 1.0  # s before the first retry, doubling while attempts keep failing
BACKOFF_MAX = 30.0
HTTP_TIMEOUT = 10.0  # s for one WHIP request
DELETE_TIMEOUT = 2.0  # s: the DELETE at shutdown must not hold the server up when the SFU is gone
CONNECT_TIMEOUT = 15.0  # s from the answer to a connected transport
# s without RTCP receiver reports from the SFU before the session counts as gone: an SFU that
# restarted forgets the session without a word, and ICE consent would notice only after ~30 s.
SILENCE_TIMEOUT = 5.0
WATCH_INTERVAL = 0.5
MAX_REDIRECTS = 5
MAX_ANSWER_BYTES = 64 * 1024


class PublishError(Exception):
    """One attempt failed; the message says why (it becomes `last_error`)."""


class WhipPublisher:
    """Publishes `camera` to the WHIP endpoint `url`, again and again until stopped."""

    def __init__(self, camera: Camera, url: str, token: str = "",
                 ice_servers: Callable[[], list[IceServerValues]] = list) -> None:
        self.camera = camera
        self.url = url
        self.shown = shown_url(url)
        self._token = token  # never logged nor shown
        # Ours (--ice-server), used when the SFU names none; asked per attempt: TURN REST
        # credentials expire.
        self._ice_servers = ice_servers
        self.state = "stopped"
        self.retries = 0  # attempts after the first
        self.sessions = 0  # attempts that reached publishing
        self.last_error: str | None = None
        self.resource: str | None = None
        self.publishing_since: float | None = None
        self.keyframe_requests = 0  # PLI/FIR from the SFU
        self._bytes_before = 0  # sent by earlier sessions
        self._frames_before = 0
        self._track: PacketTrack | None = None
        self._task: asyncio.Task[None] | None = None

    # -- figures -----------------------------------------------------------------------------------
    @property
    def bytes_sent(self) -> int:
        return self._bytes_before + (self._track.bytes_sent if self._track else 0)

    @property
    def frames_sent(self) -> int:
        return self._frames_before + (self._track.frames_sent if self._track else 0)

    def status(self) -> dict[str, object]:
        since = self.publishing_since
        return {
            "url": self.shown,
            "state": self.state,
            "retries": self.retries,
            "sessions": self.sessions,
            "bytes_sent": self.bytes_sent,
            "frames_sent": self.frames_sent,
            "keyframe_requests": self.keyframe_requests,
            "publishing_for": round(time.monotonic() - since, 1) if since is not None else None,
            "last_error": self.last_error,
        }

    # -- lifetime ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self.state = "connecting"
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"whip-{self.camera.name}")

    async def stop(self) -> None:
        """End publishing: the session closes and its resource is deleted (within DELETE_TIMEOUT)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.state = "stopped"

    def rebridge(self) -> None:
        """The camera's own packets stopped: carry its pictures (the no-signal card) from the bridge."""
        if self._track is not None:
            self._track.rebridge()

    async def _run(self) -> None:
        delay = BACKOFF_FIRST
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT)) as http:
            while True:
                self.state = "connecting"
                sessions = self.sessions
                try:
                    await self._attempt(http)
                except PublishError as exc:
                    self.last_error = str(exc)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                except Exception as exc:  # whatever goes wrong stays with this target
                    log.exception("publishing camera %s to %s failed", self.camera.name, self.shown)
                    self.last_error = f"{type(exc).__name__}: {exc}"
                if self.sessions != sessions:
                    delay = BACKOFF_FIRST  # it published: this failure is a new one
                self.state = "retrying"
                log.warning("camera %s publishing to %s: %s; again in %g s", self.camera.name, self.shown,
                            self.last_error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                self.retries += 1

    # -- one session -------------------------------------------------------------------------------
    async def _attempt(self, http: aiohttp.ClientSession) -> None:
        """Publish once, until it ends (PublishError says why); cleans up whatever happens."""
        pc: RTCPeerConnection | None = None
        track: PacketTrack | None = None
        audio: AudioPacketTrack | None = None
        try:
            servers = await self._ice_servers_of(http) or self._ice_servers()
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[
                RTCIceServer(urls=url, username=user, credential=secret) for url, user, secret in servers]))
            track = self._new_track()
            transceiver = pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(self._preferences())
            sender: RTCRtpSender = transceiver.sender
            route_keyframe_requests(sender, functools.partial(self._on_keyframe_request, track))
            report_capture_times(sender, track.handouts.captured_before)
            audio = self._add_sound(pc)
            ended = asyncio.Event()

            @pc.on("connectionstatechange")
            def on_state() -> None:
                if pc is not None and pc.connectionState in ("failed", "closed"):
                    ended.set()

            await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate first
            answer, self.resource = await self._post(http, pc.localDescription.sdp)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            except Exception as exc:
                raise PublishError(f"the answer was refused: {exc or type(exc).__name__}") from None
            await self._until_connected(pc, ended)
            self.sessions += 1
            self.state = "publishing"
            self.publishing_since = time.monotonic()
            self.last_error = None
            log.info("camera %s publishing to %s", self.camera.name, self.shown)
            await self._until_gone(pc, sender, track, ended)
        finally:
            self.publishing_since = None
            if audio is not None:
                audio.stop()
            if track is not None:
                track.stop()
                self._bytes_before += track.bytes_sent
                self._frames_before += track.frames_sent
                if self._track is track:
                    self._track = None
            # The SFU hears the end first (shielded: on stop() this runs while the task is cancelled).
            await asyncio.shield(self._delete(http))
            if pc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pc.close(), DELETE_TIMEOUT)

    def _new_track(self) -> PacketTrack:
        camera = self.camera
        levels, start, warmup = camera_levels(camera, "h264", camera.ladder[0].name)
        track = PacketTrack(levels, start=start, warmup=warmup)
        self._track = track
        return track

    def _add_sound(self, pc: RTCPeerConnection) -> AudioPacketTrack | None:
        """A sendonly Opus m-line with the camera's one shared encode, when it has sound."""
        sound = self.camera.audio
        if sound is None or not sound.available:
            return None
        track = AudioPacketTrack(sound.packets)
        transceiver = pc.addTransceiver(track, direction="sendonly")
        transceiver.setCodecPreferences(opus_preferences())
        report_capture_times(transceiver.sender, track.handouts.captured_before)
        return track

    def _preferences(self) -> list[Any]:
        camera = self.camera
        preferences = codec_preferences("h264")
        profile = camera_profile(camera.passthrough.profile) if camera.passthrough.h264 else None
        if profile is not None:  # a camera's own High or Main profile, offered first
            preferences = [h264_profile_codec(profile), *preferences]
        return preferences

    def _on_keyframe_request(self, track: PacketTrack) -> None:
        # The encoder rate-limits these, as it does for every viewer's.
        self.keyframe_requests += 1
        track.request_keyframe()

    def _headers(self, url: str, content_type: str | None = None) -> dict[str, str]:
        headers = {"Content-Type": content_type} if content_type else {}
        if self._token and token_may_follow(self.url, url):
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def _ice_servers_of(self, http: aiohttp.ClientSession) -> list[IceServerValues]:
        """The SFU's STUN/TURN servers, from the Link headers of an OPTIONS request: aiortc cannot
        change a peer connection's ICE servers once it exists, so they are asked for first."""
        try:
            async with http.options(self.url, headers=self._headers(self.url)) as response:
                return parse_ice_links(response.headers.getall("Link", []))
        except (aiohttp.ClientError, OSError, TimeoutError):
            return []  # the POST will say what is wrong

    async def _post(self, http: aiohttp.ClientSession, offer: str) -> tuple[str, str]:
        """POST the offer; (answer SDP, resource URL)."""
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            async with http.post(url, data=offer.encode(), allow_redirects=False,
                                 headers=self._headers(url, "application/sdp")) as response:
                if response.status in (307, 308) and "Location" in response.headers:
                    url = redirect_target(url, response.headers["Location"])
                    continue
                body = await response.content.read(MAX_ANSWER_BYTES)
                text = body.decode("utf-8", "replace")
                if response.status != 201:
                    raise PublishError(f"POST answered {response.status} {_first_line(text)}".rstrip())
                location = response.headers.get("Location")
                if not location:
                    raise PublishError("POST answered 201 without a Location")
                if "v=0" not in text:
                    raise PublishError("POST answered 201 without an SDP answer")
                resource = redirect_target(url, location)
                if not same_origin(resource, url) and not token_may_follow(self.url, resource):
                    raise PublishError("the resource is on plain HTTP")
                return text, resource
        raise PublishError(f"more than {MAX_REDIRECTS} redirects")

    async def _delete(self, http: aiohttp.ClientSession) -> None:
        resource, self.resource = self.resource, None
        if resource is None or http.closed:
            return
        try:
            async with http.delete(resource, headers=self._headers(resource),
                                   timeout=aiohttp.ClientTimeout(total=DELETE_TIMEOUT)) as response:
                log.info("camera %s: DELETE of its WHIP session at %s answered %d", self.camera.name,
                         self.shown, response.status)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("camera %s: DELETE of its WHIP session at %s failed: %s", self.camera.name, self.shown,
                     type(exc).__name__)

    async def _until_connected(self, pc: RTCPeerConnection, ended: asyncio.Event) -> None:
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while pc.connectionState != "connected":
            if ended.is_set():
                raise PublishError(f"connection {pc.connectionState} before it was up")
            if time.monotonic() > deadline:
                raise PublishError(f"not connected within {CONNECT_TIMEOUT:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), WATCH_INTERVAL)

    async def _until_gone(self, pc: RTCPeerConnection, sender: RTCRtpSender, track: PacketTrack,
                          ended: asyncio.Event) -> None:
        """Wait while the session lives; raise PublishError with why it ended."""
        connected = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), WATCH_INTERVAL)
            if ended.is_set():
                raise PublishError(f"connection {pc.connectionState}")
            if track.readyState != "live":
                raise PublishError("the camera's packets ended")
            stats = await sender.getStats()
            reports = [s.timestamp for s in stats.values() if s.type == "remote-inbound-rtp"]
            if reports:
                silent = (clock.current_datetime() - max(reports)).total_seconds()
            else:  # every receiver sends reports (RFC 3550): count from the connection
                silent = time.monotonic() - connected
            if silent > SILENCE_TIMEOUT:
                raise PublishError(f"no receiver reports from the SFU for {silent:.0f} s")


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:120]


def make_publishers(camera: Camera, urls: tuple[str, ...], token: str = "",
                    ice_servers: Callable[[], list[IceServerValues]] = list) -> list[WhipPublisher]:
    return [WhipPublisher(camera, url, token, ice_servers) for url in urls]
