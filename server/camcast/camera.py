"""One camera: everything that belongs to it, started and stopped as one async context.

A camera owns its source and capture, its hubs and encoders, the MJPEG fan-out, the recorder, the
WebRTC sessions that carry it, the latency its players report, and the scope of its control
messages: a record press on one camera never reaches another, and each peer hears only its own
camera's state. The app holds a registry of cameras and nothing camera-specific besides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from camcast.audio import SharedAudio
from camcast.capture import Capture
from camcast.control import ControlBus
from camcast.encoding.jpeg import SharedJpegEncoder
from camcast.encoding.renditions import Rendition, default_ladder
from camcast.encoding.video import SharedVideoEncoder
from camcast.fpsmeter import FpsMeter
from camcast.frames import EncodedPacket, Frame, JpegPart, now_us
from camcast.hub import Hub, HubClosed
from camcast.latency import DisplayLatency
from camcast.mjpeg import MjpegFanout
from camcast.mjpegvariants import MjpegVariants
from camcast.motion import MotionService, MotionSettings
from camcast.passthrough import Passthrough
from camcast.sources.audio_stream import StreamAudio
from camcast.sources.base import Source, VideoPacket
from camcast.sources.supervisor import CaptureSupervisor
from camcast.viewers import Viewers
from camcast.webrtc.ping import ping

if TYPE_CHECKING:
    from camcast.recorder import Recorder
    from camcast.webrtc.whip import WhipPublisher

log = logging.getLogger("camcast.camera")

FIRST_FRAME_TIMEOUT = 5.0  # s a snapshot of an idle camera waits for its source to deliver


@dataclass(frozen=True)
class CameraSettings:
    name: str
    source: str  # the resolved source spec (the running source adds its own description)
    width: int
    height: int
    fps: float
    jpeg_quality: int
    keyframe_interval: float = 2.0
    bitrate: int = 2_000_000
    codec: str = "auto"  # what WebRTC peers get: auto (H.264 when offered, else VP8), h264 or vp8
    on_demand: bool = False
    idle_timeout: float = 5.0
    adapt: bool = True  # a ladder of renditions, each viewer on the best its link carries
    passthrough: bool = False  # the source may send its own H.264 or JPEGs, passed on as they are
    audio: str = "none"  # the sound: none, tone, stream (the source's own) or alsa:DEVICE
    motion: MotionSettings | None = None  # motion detection, when enabled
    motion_record: bool = False  # a motion event starts (and its end stops) a recording


@dataclass(frozen=True)
class RenditionOutput:
    """One rendition of one codec: its shared encoder and the hub of its packets."""

    rendition: Rendition
    packets: Hub[EncodedPacket]
    encoder: SharedVideoEncoder


class Session(Protocol):
    """A WebRTC session that carries this camera (it may carry others too: the wall's)."""

    async def close(self, reason: str) -> None: ...

    def rebridge(self, camera: Camera) -> None:
        """This camera's own packets stopped: its viewers take its pictures from the bridge."""


class Camera:
    def __init__(self, settings: CameraSettings, make_source: Callable[[], Source],
                 make_recorder: Callable[[Camera], Recorder]) -> None:
        self.settings = settings
        self.name = settings.name
        self.frames: Hub[Frame] = Hub("frames")
        self.jpeg: Hub[JpegPart] = Hub("jpeg")
        self.viewers = Viewers(settings.name)
        self.fps_meter = FpsMeter()
        self.frames_captured = 0  # over every opening of the source (on-demand cameras reopen it)
        self.started_monotonic = time.monotonic()
        self.jpeg_encoder = SharedJpegEncoder(self.frames, self.jpeg, settings.jpeg_quality)
        # Per codec, one packet hub and one lazily started shared encoder per rendition, top first.
        self.ladder = default_ladder(settings.width, settings.height, settings.fps, settings.bitrate,
                                     settings.adapt)
        epoch_us = now_us()  # every rendition's timestamps count from here
        self.renditions: dict[str, list[RenditionOutput]] = {
            codec: [self._rendition(codec, rendition, index, epoch_us)
                    for index, rendition in enumerate(self.ladder)]
            for codec in ("h264", "vp8")
        }
        # The top rendition: what the recorder remuxes and what viewers start on.
        self.packets = {codec: outputs[0].packets for codec, outputs in self.renditions.items()}
        self.video_encoders = {codec: outputs[0].encoder for codec, outputs in self.renditions.items()}
        # A camera that encodes feeds the top H.264 rendition and the JPEG hub itself; a new viewer
        # starts on a keyframe of the bridge (the current picture, encoded at once) and moves to the
        # camera's packets at the camera's next keyframe.
        self.passthrough = Passthrough(settings.name, self.packets["h264"], self.jpeg, epoch_us,
                                       settings.passthrough)
        self.passthrough.on_change = self._passthrough_changed
        self.frames.on_subscribers_changed(self._pictures_demand_changed)
        self.video_encoders["h264"].worker.allowed = self.passthrough.h264_encoder_allowed
        self.jpeg_encoder.worker.allowed = self.passthrough.jpeg_encoder_allowed
        self.bridge = (self._rendition("h264", Rendition("bridge", 1.0, settings.bitrate, settings.fps), -1,
                                       epoch_us) if settings.passthrough else None)
        # One Opus encode for every listener, running while someone listens.
        self.audio = (SharedAudio(settings.name, settings.audio, epoch_us)
                      if settings.audio != "none" else None)
        # Listeners of a stream's own sound need its source open, as viewers do.
        sound_demand = [self.audio.packets] if self.audio and self.stream_audio is not None else []
        self.capture = Capture(settings.name, make_source, self.frames, settings.width, settings.height,
                               settings.fps, settings.on_demand, settings.idle_timeout, self._counted,
                               self._compressed,
                               demand=([self.packets["h264"], self.jpeg] if settings.passthrough else [])
                               + sound_demand)
        self.mjpeg = MjpegFanout(self.jpeg, self.viewers, settings.fps)
        # ?width= and ?quality=: other sizes and qualities, each with its own encoder and fan-out.
        self.mjpeg_variants = MjpegVariants(self.frames,
                                            lambda jpeg: MjpegFanout(jpeg, self.viewers, settings.fps))
        self.latency = DisplayLatency()
        self.sessions: set[Session] = set()
        self.publishers: list[WhipPublisher] = []  # WHIP targets (set by the app); run with the camera
        self._bridged_for_outage = False
        self.switches: Counter[str] = Counter()  # viewers moved between renditions: "down", "up"
        # The control scope: messages from this camera's peers, broadcasts to them only.
        self.control = ControlBus()
        self.recorder = make_recorder(self)
        self.control.register("record", self.recorder.handle_control)
        self.control.add_greeter(self.recorder.greeting)
        self.control.register("ping", ping)
        self.control.register("latency", self.latency.handle)
        self.motion = MotionService(settings.name, settings.motion, settings.motion_record,
                                    self.recorder.settings.folder, self.frames, self.recorder, self.control)

    def _rendition(self, codec: str, rendition: Rendition, index: int, epoch_us: int) -> RenditionOutput:
        name = codec if index == 0 else f"{codec}-{rendition.name}"
        packets: Hub[EncodedPacket] = Hub(f"{name}-packets")
        settings = self.settings
        encoder = SharedVideoEncoder(
            codec, self.frames, packets, rendition.fps, settings.keyframe_interval, rendition.bitrate,
            scale=rendition.scale, epoch_us=epoch_us, name=name,
            max_fps=rendition.fps if rendition.fps < settings.fps else None,
            buffer_seconds=rendition.buffer_seconds)
        return RenditionOutput(rendition, packets, encoder)

    @property
    def stream_audio(self) -> StreamAudio | None:
        """Where the source hands its audio packets, when the camera's sound is the stream's own."""
        return self.audio.stream_input if self.audio is not None else None

    @property
    def all_video_encoders(self) -> list[SharedVideoEncoder]:
        bridge = [self.bridge.encoder] if self.bridge is not None else []
        return [output.encoder for outputs in self.renditions.values() for output in outputs] + bridge

    def _pictures_demand_changed(self, count: int) -> None:
        if count == 0 and self.passthrough.h264:
            # The camera's packets still flow, but nothing decodes them now: the last picture
            # goes stale, and the next viewer's bridge must not start from it.
            self.frames.forget_latest()

    def _passthrough_changed(self) -> None:
        self.video_encoders["h264"].worker.refresh()
        self.jpeg_encoder.worker.refresh()

    def note_switch(self, before: str, after: str, why: str) -> None:
        """A viewer of this camera moved between renditions (for /metrics)."""
        order = [r.name for r in self.ladder]
        self.switches["down" if order.index(after) > order.index(before) else "up"] += 1

    def _counted(self, frame: Frame) -> None:
        if not frame.live and self.passthrough.h264 and not self._bridged_for_outage:
            # The source is lost: viewers of its own packets would keep its last picture; the
            # bridge shows them the "no signal" card until the camera's next keyframe.
            self._bridged_for_outage = True
            for session in list(self.sessions):
                session.rebridge(self)
            for publisher in self.publishers:
                publisher.rebridge()
        if frame.live:  # the measured rate is the source's, not the "no signal" ticker's
            if self.settings.passthrough:
                self.passthrough.frame_arrived(frame)
                if self.passthrough.kind is not None:
                    return  # counted with the unit it was decoded from
            self.fps_meter.tick()
            self.frames_captured += 1

    def _compressed(self, item: JpegPart | VideoPacket) -> None:
        self._bridged_for_outage = False
        self.passthrough.relay(item)
        self.fps_meter.tick()
        self.frames_captured += 1

    # -- lifetime: one context, in an explicit order --------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Camera]:
        await self.capture.start()
        if self.audio is not None:
            self.audio.start()
        await self.recorder.open()  # after the capture: pre-roll wakes it at once
        await self.motion.start()  # after the recorder: an event may record with its pre-roll
        for publisher in self.publishers:
            publisher.start()
        try:
            yield self
        finally:
            await self.mjpeg.close()  # endless responses end; their handlers return
            await self.mjpeg_variants.close()
            await self.motion.stop()  # an open event ends (and is saved) before its recording does
            # The file is finalized while peers are still connected to hear that it stopped.
            await self.recorder.close()
            # Each SFU hears a DELETE for its session before the local peers go.
            await asyncio.gather(*(p.stop() for p in self.publishers), return_exceptions=True)
            await self.close_sessions("server shutting down")
            await self.jpeg_encoder.close()
            for encoder in self.all_video_encoders:
                await encoder.close()
            await self.capture.stop()
            if self.audio is not None:
                await self.audio.close()
            self.frames.close()

    async def close_sessions(self, reason: str) -> None:
        sessions = list(self.sessions)
        if sessions:
            log.info("closing %d WebRTC peer(s) of camera %s", len(sessions), self.name)
        await asyncio.gather(*(s.close(reason) for s in sessions), return_exceptions=True)

    # -- pictures ------------------------------------------------------------------------------
    async def snapshot(self, encoder: SharedJpegEncoder | None = None) -> JpegPart | None:
        """The newest picture as JPEG (by `encoder`: an MJPEG variant's; by default the camera's
        own); an idle camera is woken and its first frame awaited. A camera that sends JPEGs
        gives its own."""
        if encoder is None and self.passthrough.kind == "jpeg":
            if self.jpeg.latest is None and not self.jpeg.closed:
                with self.jpeg.subscribe(maxsize=1) as first, contextlib.suppress(TimeoutError, HubClosed):
                    await asyncio.wait_for(first.get(), FIRST_FRAME_TIMEOUT)
            return self.jpeg.latest
        with contextlib.ExitStack() as held:
            if self.frames.latest is None and not self.frames.closed:
                # A subscriber is demand: an idle source opens (and a camera passed through
                # decodes); it is held until the picture is encoded.
                first = held.enter_context(self.frames.subscribe(maxsize=1))
                with contextlib.suppress(TimeoutError, HubClosed):
                    await asyncio.wait_for(first.get(), FIRST_FRAME_TIMEOUT)
            return await (encoder or self.jpeg_encoder).snapshot()

    # -- state ---------------------------------------------------------------------------------
    @property
    def supervisor(self) -> CaptureSupervisor | None:
        return self.capture.supervisor

    @property
    def source_up(self) -> bool:
        supervisor = self.supervisor
        return supervisor is not None and supervisor.up

    @property
    def healthy(self) -> bool:
        """The source is up (it delivered a frame since it opened) and its frames still flow
        (within the watchdog's limit, which scales with slow frame rates)."""
        supervisor = self.supervisor
        if supervisor is None or not supervisor.up:
            return False
        latest = self.frames.latest
        if latest is not None and not latest.live:
            return False  # "no signal"
        if latest is None and self.passthrough.kind is None:
            return False  # its first frame has not reached the hub yet
        return time.monotonic() - supervisor.last_frame_monotonic < supervisor.watchdog_seconds

    @property
    def state(self) -> str:
        """`up`, `idle` (on demand, nobody watching: the source is closed) or `down`."""
        if self.capture.idle:
            return "idle"
        return "up" if self.healthy else "down"

    @property
    def description(self) -> str:
        supervisor = self.supervisor
        return supervisor.description if supervisor and supervisor.description else self.settings.source

    @property
    def current_size(self) -> tuple[int, int]:
        frame = self.frames.latest
        if frame is not None:
            return frame.width, frame.height
        if self.passthrough.size is not None:
            return self.passthrough.size
        return self.settings.width, self.settings.height

    @property
    def recording(self) -> bool:
        return self.recorder.recording

    def uptime(self) -> float:
        return time.monotonic() - self.started_monotonic
