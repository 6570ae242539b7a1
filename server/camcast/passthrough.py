"""What a camera compressed itself, passed on as it is: its H.264 and its JPEGs.

A camera that encodes (RTSP, HTTP, a file) hands its access units to the top H.264 rendition's hub
and its JPEGs to the JPEG hub, where viewers and the recorder take them without a decode or an
encode; the camera's own encoders for those outputs stay stopped. What it hands over is learnt
from the source as it runs: a stream found unsuitable (B-frames, a codec browsers do not play)
arrives as decoded frames instead, and the encoders take over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import av

from camcast.encoding.video import VIDEO_TIME_BASE
from camcast.frames import EncodedPacket, Frame, JpegPart
from camcast.hub import Hub
from camcast.sources.annexb import profile_level_id, split_annexb
from camcast.sources.base import VideoPacket

log = logging.getLogger("camcast.camera")

MAX_GOP_PACKETS = 600  # what is kept since the last keyframe, at most (a recording starts there)


class Passthrough:
    def __init__(self, camera: str, packets: Hub[EncodedPacket], jpeg: Hub[JpegPart], epoch_us: int,
                 possible: bool) -> None:
        self.camera = camera
        self.packets = packets  # the top H.264 rendition's hub
        self.jpeg = jpeg
        self._epoch_us = epoch_us
        # The source is one that may compress (a stream or file, not asked to transcode). Until it
        # says what it sends, the encoders of the outputs it may feed wait.
        self.possible = possible
        self.kind: str | None = None  # "h264", "jpeg", or None: decoded frames (the encoders run)
        self.known = not possible
        self.on_change: Callable[[], None] = lambda: None
        self.profile: str | None = None  # H.264 profile-level-id of what is passed through
        self.size: tuple[int, int] | None = None  # of what is passed through
        self.packets_relayed = 0
        self.keyframes = 0
        self.jpegs_relayed = 0
        self.gop: list[EncodedPacket] = []  # since the last keyframe: where a recording starts
        self._chain: tuple[int, int, bytes] | None = None
        self._generation = 0
        self._last_pts = -1
        self._seq = 0
        self._picture_follows = False
        self._keyframe_due = True

    # -- what the encoders may do ----------------------------------------------------------------
    def h264_encoder_allowed(self) -> bool:
        return self.known and self.kind != "h264"

    def jpeg_encoder_allowed(self) -> bool:
        return self.known and self.kind != "jpeg"

    @property
    def h264(self) -> bool:
        return self.kind == "h264"

    # -- input -----------------------------------------------------------------------------------
    def relay(self, item: JpegPart | VideoPacket) -> None:
        """On the loop: one unit the camera compressed itself."""
        self._picture_follows = True  # its decoded picture, if any, comes next as a frame
        if isinstance(item, JpegPart):
            self._become("jpeg")
            self.jpegs_relayed += 1
            self.jpeg.publish(item)
            return
        self._become("h264")
        chain = (item.opened_us, item.width * 65536 + item.height, item.parameters)
        if chain != self._chain:
            # A reconnection or new parameters (a camera's reboot, a new size): what follows starts
            # a new chain, so viewers resync on its keyframe and the recorder opens a new file.
            if self._chain is not None and chain[1:] != self._chain[1:]:
                log.info("camera %s: the stream's parameters changed (%dx%d)", self.camera, item.width,
                         item.height, extra={"event": "stream_parameters", "camera": self.camera})
            self._chain = chain
            self._generation += 1
            self._keyframe_due = True
            self.profile = profile_level_id(split_annexb(item.parameters))
            self.size = (item.width, item.height)
        if self._keyframe_due and not item.keyframe:
            return  # a (re)connection joins mid-GOP: nothing decodes before its first keyframe
        self._keyframe_due = False
        pts = (item.captured_us - self._epoch_us) * 9 // 100  # 90 kHz from the camera's epoch
        pts = max(pts, self._last_pts + 1)  # a re-anchored stream clock must not go backwards
        self._last_pts = pts
        packet = av.Packet(item.data)
        packet.pts = packet.dts = pts
        packet.time_base = VIDEO_TIME_BASE
        packet.is_keyframe = item.keyframe
        self._seq += 1
        encoded = EncodedPacket(packet, "h264", item.keyframe, self._seq, item.captured_us, item.width,
                                item.height, self._generation)
        self.packets_relayed += 1
        if item.keyframe:
            self.keyframes += 1
            self.gop = []
        if len(self.gop) < MAX_GOP_PACKETS:
            self.gop.append(encoded)
        self.packets.publish(encoded)

    def frame_arrived(self, frame: Frame) -> None:
        """A live frame: the picture of the unit just relayed, or the source decodes now."""
        if self._picture_follows:
            self._picture_follows = False
            return
        if self.possible and (self.kind is not None or not self.known):
            self._become(None)

    def _become(self, kind: str | None) -> None:
        if self.known and kind == self.kind:
            return
        before = self.kind
        self.kind, self.known = kind, True
        if kind != "h264":
            self.gop = []
        if kind is not None:
            log.info("camera %s: passing the camera's own %s through", self.camera,
                     "H.264" if kind == "h264" else "JPEGs",
                     extra={"event": "passthrough", "camera": self.camera, "kind": kind})
        elif before is not None:
            log.info("camera %s: the source now sends pictures: encoding them", self.camera)
        self.on_change()

    @property
    def mode(self) -> str:
        if self.kind == "h264":
            return "passthrough"
        if self.kind == "jpeg":
            return "jpeg passthrough"
        return "encode" if self.known else "starting"

    def status(self) -> dict[str, object]:
        return {
            "possible": self.possible,
            "mode": self.mode,
            "profile_level_id": self.profile,
            "packets_relayed": self.packets_relayed,
            "keyframes": self.keyframes,
            "jpegs_relayed": self.jpegs_relayed,
        }
