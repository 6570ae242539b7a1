"""Cameras that encode: RTSP, HTTP streams and files read through PyAV's demuxer.

An H.264 stream without B-frames is passed through: every access unit goes to the viewers and the
recorder as the camera sent it, and is decoded only while something needs pictures (MJPEG,
snapshots, a rendition of another size). When decoding starts mid-GOP, the packets since the last
keyframe (kept for this) are decoded at once, so the first picture is the current one. Anything
else (B-frames, a codec no browser plays, or `transcode`) is decoded and handed on as frames, to be
encoded like any camera's.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np

from camcast.frames import now_us
from camcast.sources.annexb import AccessUnits, profile_level_id
from camcast.sources.audio_stream import StreamAudio
from camcast.sources.base import SourceError, VideoPacket

log = logging.getLogger("camcast.source")

OPEN_TIMEOUT = 10.0  # s to connect and read the stream's header
READ_TIMEOUT = 5.0  # s without data before a read fails (the supervisor reconnects)
# The stream's clock may drift from ours or jump (a camera's reboot): beyond these, it is re-anchored.
AHEAD_LIMIT_US = 100_000
BEHIND_LIMIT_US = 1_000_000
PASSTHROUGH_CODECS = ("h264",)
MAX_GOP_PACKETS = 600  # a camera with a huge GOP still cannot grow the catch-up list without bound


STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "http", "https")


def is_stream_url(spec: str) -> bool:
    return spec.split("://", 1)[0].lower() in STREAM_SCHEMES


class StreamSource:
    stamps = False

    def __init__(self, spec: str, fps: float, passthrough: bool, pictures_wanted: Callable[[], bool],
                 rtsp_transport: str = "tcp", audio: StreamAudio | None = None) -> None:
        self.spec = spec
        self.description = spec
        self.fps = fps
        self.want_passthrough = passthrough
        self._pictures_wanted = pictures_wanted
        self._transport = rtsp_transport
        self.is_file = "://" not in spec
        self.mode = "passthrough" if passthrough else "decode"  # said in /api/status
        self.codec = ""
        self.profile: str | None = None  # profile-level-id of the passed-through stream
        self.why_decoded = "" if passthrough else "transcode asked for"
        self._container: Any = None
        self._stream: Any = None
        self._audio = audio  # the camera's sound, when it is to be the stream's own
        self._audio_stream: Any = None
        self._start_s = 0.0  # the video's start: both tracks' times count from it, so they stay in step
        self._packets: Any = None  # the demux iterator
        self._units: AccessUnits | None = None
        self._decoder: Any = None
        self._decoder_synced = False
        self._gop: list[Any] = []  # packets since the last keyframe: a decoder joining mid-GOP needs them
        self._base_us: int | None = None  # capture time = base + stream time
        self._file_offset = 0.0  # s added to a looped file's timestamps, so they keep going forward
        self._file_end = 0.0
        self._started = 0.0  # monotonic time a file began playing (it plays at its own rate)
        self._opened_us = 0

    # -- opening -------------------------------------------------------------------------------
    def open(self) -> None:
        if self.is_file and not os.path.isfile(self.spec):
            raise SourceError(f"no such file: {self.spec}")
        options: dict[str, str] = {}
        if self.spec.lower().startswith(("rtsp://", "rtsps://")):
            # The SDP says what the stream is: probing it would hold a second of packets back.
            options = {"rtsp_transport": self._transport, "timeout": str(int(READ_TIMEOUT * 1e6)),
                       "analyzeduration": "0", "fpsprobesize": "0", "probesize": "32"}
        if not self.is_file:
            options["fflags"] = "nobuffer"
        try:
            container = av.open(self.spec, options=options, timeout=(OPEN_TIMEOUT, READ_TIMEOUT))
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open {self.spec}: {exc}") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self.spec} has no video stream")
        stream = container.streams.video[0]
        self._container, self._stream = container, stream
        ctx = stream.codec_context
        self.codec = ctx.name
        if self.want_passthrough and self.codec not in PASSTHROUGH_CODECS:
            self._decode_instead(f"{self.codec} does not play in browsers")
        elif self.want_passthrough and (ctx.has_b_frames or getattr(ctx, "max_b_frames", 0)):
            self._decode_instead("the stream has B-frames")
        elif self.want_passthrough:
            self.mode = "passthrough"
            self._units = AccessUnits(bytes(ctx.extradata) if ctx.extradata else None)
            self.profile = profile_level_id(self._units.parameter_sets)
        self._audio_stream = None
        if self._audio is not None:
            self._audio_stream = container.streams.audio[0] if container.streams.audio else None
            self._audio.opened(self._audio_stream)
        self._start_s = float((stream.start_time or 0) * stream.time_base) if stream.time_base else 0.0
        self._packets = self._demux()
        self._started = time.monotonic()
        self._opened_us = now_us()
        self._file_offset = 0.0
        self._decoder = None
        self._decoder_synced = False
        self._gop = []
        self._base_us = None
        self.description = f"{self.spec} ({self.codec} {ctx.width}x{ctx.height}, {self.mode})"

    def _demux(self) -> Any:
        streams = [self._stream] + ([self._audio_stream] if self._audio_stream is not None else [])
        return self._container.demux(*streams)

    def _decode_instead(self, why: str) -> None:
        if self.mode != "decode" or self.why_decoded != why:
            log.warning("%s: %s, decoding and encoding it again", self.spec, why,
                        extra={"event": "source_transcoded", "source": self.spec, "reason": why})
        self.mode, self.why_decoded = "decode", why
        self._units = None

    # -- reading -------------------------------------------------------------------------------
    def read(self) -> np.ndarray | VideoPacket | None:
        while True:
            packet = self._next_packet()
            if packet is None:
                return None
            if self._audio_stream is not None and packet.stream_index == self._audio_stream.index:
                if self._audio is not None and self._audio.listening:
                    self._audio.take(packet, self._captured_us(packet))
                continue
            if self.mode == "decode":
                picture = self._decode(packet, keep_last_only=False)
                if picture is not None:
                    return picture
                continue
            if packet.pts is not None and packet.dts is not None and packet.pts != packet.dts:
                # Reordered frames: a browser's decoder would show them out of order.
                self._decode_instead("the stream has B-frames")
                continue
            item = self._pass(packet)
            if item is not None:
                return item

    def _next_packet(self) -> Any:
        for _ in range(2):  # a file at its end loops once per call
            try:
                for packet in self._packets:
                    if packet.size == 0:
                        continue  # a demuxer's flush packet
                    if self.is_file:
                        self._pace(packet)
                    return packet
            except (av.FFmpegError, OSError) as exc:
                log.warning("%s: %s", self.spec, exc)
                return None
            if not self.is_file or not os.path.isfile(self.spec):
                return None  # the stream ended, or the file went away: a lost source
            self._loop_file()
        return None

    def _pace(self, packet: Any) -> None:
        """A file plays at its own rate (its packets' timestamps), looped."""
        seconds = self._seconds(packet)
        if seconds is None:
            return
        self._file_end = max(self._file_end, seconds + 1.0 / self.fps)
        delay = self._started + seconds - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, 1.0))

    def _loop_file(self) -> None:
        self._file_offset = self._file_end
        self._container.seek(0)
        self._packets = self._demux()

    def _seconds(self, packet: Any) -> float | None:
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is None or packet.time_base is None:
            return None
        return float(pts * packet.time_base) - self._start_s + self._file_offset

    def _captured_us(self, packet: Any) -> int:
        """The stream's clock mapped to the capture clock (re-anchored when they part)."""
        arrived = now_us()
        seconds = self._seconds(packet)
        if seconds is None:
            return arrived
        stream_us = int(seconds * 1e6)
        if self._base_us is None:
            self._base_us = arrived - stream_us
        mapped = self._base_us + stream_us
        if mapped > arrived + AHEAD_LIMIT_US or mapped < arrived - BEHIND_LIMIT_US:
            self._base_us = arrived - stream_us
            mapped = arrived
        return mapped

    def _pass(self, packet: Any) -> VideoPacket | None:
        assert self._units is not None
        try:
            data, keyframe = self._units.convert(bytes(packet))
        except ValueError as exc:
            log.debug("%s: skipping a malformed packet: %s", self.spec, exc)
            return None
        keyframe = keyframe or bool(packet.is_keyframe)
        if keyframe:
            self._gop = []
        if len(self._gop) < MAX_GOP_PACKETS:
            self._gop.append(packet)
        picture = None
        if self._pictures_wanted():
            picture = self._decode(packet, keep_last_only=True)
        elif self._decoder is not None:
            self._decoder, self._decoder_synced = None, False  # nobody looks: stop decoding
        ctx = self._stream.codec_context
        self.profile = profile_level_id(self._units.parameter_sets) or self.profile
        return VideoPacket(data, "h264", keyframe, self._captured_us(packet), ctx.width, ctx.height,
                           self._units.parameters, self._opened_us, picture)

    # -- decoding ------------------------------------------------------------------------------
    def _decode(self, packet: Any, keep_last_only: bool) -> np.ndarray | None:
        if self._decoder is None:
            self._decoder = av.CodecContext.create(self._stream.codec_context.name, "r")
            # Slices in parallel: a catch-up from the last keyframe goes faster, and no frame waits.
            self._decoder.thread_type = "SLICE"
            self._decoder.thread_count = 2
            extradata = self._stream.codec_context.extradata
            if extradata:
                self._decoder.extradata = extradata
            self._decoder_synced = False
        backlog = [packet]
        if keep_last_only and not self._decoder_synced:
            backlog = list(self._gop)  # joining mid-GOP: catch up from the keyframe at once
            if not backlog or backlog[-1] is not packet:
                backlog.append(packet)
        self._decoder_synced = True
        frame = None
        for item in backlog:
            try:
                for decoded in self._decoder.decode(item):
                    frame = decoded
            except av.FFmpegError as exc:
                log.debug("%s: decode error: %s", self.spec, exc)
        return None if frame is None else frame.to_ndarray(format="bgr24")

    def close(self) -> None:
        container, self._container = self._container, None
        self._packets = None
        self._decoder = None
        self._gop = []
        if container is not None:
            try:
                container.close()
            except Exception:  # closing a broken stream must not fail the capture thread
                log.debug("%s: close failed", self.spec, exc_info=True)
