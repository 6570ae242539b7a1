"""One camera's settings and their checks, and which capture device a source names."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from camcast.configvalues import ConfigError, Names

AUDIO_CHOICES = ("auto", "none", "tone", "stream", "alsa:DEVICE")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "http", "https")


@dataclass(frozen=True)
class CameraConfig:
    name: str  # [a-z0-9_-]{1,32}
    source: str = "auto"
    width: int = 640
    height: int = 480
    fps: float = 30.0
    stamp: bool = False
    jpeg_quality: int = 80
    codec: str = "auto"
    keyframe_interval: float = 2.0
    bitrate: int = 2_000_000
    recordings: Path = Path("recordings")  # this camera's own folder
    recorder: str = "mp4"  # mp4 (remux the shared H.264) or opencv (cv2.VideoWriter on the frames)
    recorder_fourcc: str = "MJPG"
    recorder_container: str = "avi"
    preroll: float = 0.0
    segment: float = 0.0
    keep_days: float = 0.0
    max_recordings_bytes: int = 0
    min_free_mb: float = 200.0
    min_free_percent: float = 1.0
    on_demand: bool = False
    idle_timeout: float = 5.0  # s after the last viewer/recording/publisher leaves before the source closes
    adapt: bool = True  # renditions, and each WebRTC viewer on the best its link carries
    transcode: bool = False  # decode and re-encode a camera that encodes, instead of passing it through
    rtsp_transport: str = "tcp"  # how an rtsp:// camera sends: tcp (interleaved) or udp
    audio: str = "auto"  # auto, none, tone, stream (the source's own) or alsa:DEVICE
    publish: tuple[str, ...] = ()  # WHIP endpoints this camera is published to
    publish_token: str = field(default="", repr=False)  # their Bearer token; never printed
    motion: bool = False  # detect motion: events, thumbnails, notifications
    motion_record: bool = False  # a motion event records (with pre-roll) until its end + post-roll
    motion_fps: float = 5.0  # samples per second the detector looks at
    motion_width: int = 160  # width of the grayscale copy it looks at
    motion_sensitivity: float = 0.8  # 0..1
    motion_min_area: float = 0.5  # percent of the picture that must move
    motion_masks: tuple[tuple[float, float, float, float], ...] = ()  # (x, y, w, h) fractions to ignore
    motion_quiet: float = 5.0  # s without motion before an event ends
    motion_post_roll: float = 5.0  # s a motion recording goes on after the event's end
    webhook: tuple[str, ...] = ()  # URLs that get each motion start and end as a JSON POST

    def __post_init__(self) -> None:
        object.__setattr__(self, "publish", tuple(self.publish))  # a file's list, kept immutable
        object.__setattr__(self, "webhook", tuple(self.webhook))
        object.__setattr__(self, "motion_masks", tuple(tuple(mask) for mask in self.motion_masks))

    @property
    def audio_source(self) -> str:
        """What the camera's sound comes from: `auto` is the tone for the test pattern, the source's
        own sound for a stream or a file (when it has some: see has_sound), else none."""
        if self.audio == "auto":
            if self.source == "testpattern":
                return "tone"
            return "stream" if self.may_have_stream_audio else "none"
        return self.audio

    @property
    def may_have_stream_audio(self) -> bool:
        """A stream or a file read through PyAV (a stamped one goes through OpenCV, without sound)."""
        source = self.source
        if self.stamp or source in ("auto", "testpattern") or source.isdigit() or source.startswith(
                ("/dev/", "mjpeg:")):
            return False
        return "://" not in source or source.split("://", 1)[0].lower() in STREAM_SCHEMES

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    def validate(self, name: Names | None = None) -> CameraConfig:
        """Raise ConfigError for a value out of range; `name` says how the message names a setting."""
        name = name or Names()
        if not (1 <= self.width <= 7680 and 1 <= self.height <= 4320):
            raise ConfigError(f"{name('size')} {self.size}: width and height must be 1..7680x4320")
        if self.width % 2 or self.height % 2:
            raise ConfigError(f"{name('size')} {self.size}: width and height must be even")
        if not (0 < self.fps <= 240):
            raise ConfigError(f"{name('fps')} {self.fps:g}: must be more than 0 and at most 240")
        if not (1 <= self.jpeg_quality <= 100):
            raise ConfigError(f"{name('jpeg_quality')} {self.jpeg_quality}: must be 1..100")
        if self.codec not in ("auto", "h264", "vp8"):
            raise ConfigError(f"{name('codec')} {self.codec}: must be auto, h264 or vp8")
        if not (0.1 <= self.keyframe_interval <= 60):
            raise ConfigError(f"{name('keyframe_interval')} {self.keyframe_interval:g}: must be 0.1..60 "
                              "seconds")
        if not (50_000 <= self.bitrate <= 50_000_000):
            raise ConfigError(f"{name('bitrate')} {self.bitrate}: must be 50000..50000000 bits/s")
        if not (0.5 <= self.idle_timeout <= 3600):
            raise ConfigError(f"{name('idle_timeout')} {self.idle_timeout:g}: must be 0.5..3600 seconds")
        self._validate_audio(name)
        if self.rtsp_transport not in ("tcp", "udp"):
            raise ConfigError(f"{name('rtsp_transport')} {self.rtsp_transport}: must be tcp or udp")
        self._validate_motion(name)
        self._validate_recorder(name)
        for url in self.publish:
            check_publish_url(url, name("publish"))
        if self.publish_token and not re.fullmatch(r"[\x21-\x7e]+", self.publish_token):
            raise ConfigError(f"{name('publish_token')}: use printable ASCII without spaces")
        return self

    def _validate_audio(self, name: Names) -> None:
        if self.audio.startswith("alsa:"):
            if not re.fullmatch(r"alsa:[\w.,:=-]+", self.audio):
                raise ConfigError(f"{name('audio')} {self.audio[:60]}: expected an ALSA device, e.g. "
                                  "alsa:default or alsa:hw:1,0")
        elif self.audio not in AUDIO_CHOICES:
            raise ConfigError(f"{name('audio')} {self.audio[:60]}: must be {' | '.join(AUDIO_CHOICES)}")
        elif self.audio == "stream" and not self.may_have_stream_audio:
            raise ConfigError(f"{name('audio')} stream: the source's own sound needs an RTSP/HTTP stream or "
                              f"a file without {name.key('stamp')} (this source is {self.source[:60]})")

    def _validate_motion(self, name: Names) -> None:
        ranges = (("motion_fps", 0.5, 30.0, "samples per second"), ("motion_width", 32, 640, "pixels"),
                  ("motion_sensitivity", 0.0, 1.0, ""), ("motion_min_area", 0.01, 100.0, "percent"),
                  ("motion_quiet", 0.5, 3600.0, "seconds"), ("motion_post_roll", 0.0, 3600.0, "seconds"))
        for key, low, high, unit in ranges:
            value = getattr(self, key)
            if not (low <= value <= high):
                unit = f" {unit}" if unit else ""
                raise ConfigError(f"{name(key)} {value:g}: must be {low:g}..{high:g}{unit}")
        for x, y, w, h in self.motion_masks:
            if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x + 1e-9 and 0 < h <= 1 - y + 1e-9):
                raise ConfigError(f"{name('motion_masks')} {x:g},{y:g},{w:g},{h:g}: x,y,w,h are fractions of "
                                  "the picture (0..1) and the rectangle must lie inside it")
        for url in self.webhook:
            check_webhook_url(url, name("webhook"))

    def _validate_recorder(self, name: Names) -> None:
        if self.recorder not in ("mp4", "opencv"):
            raise ConfigError(f"{name('recorder')} {self.recorder}: must be mp4 or opencv")
        if len(self.recorder_fourcc) != 4 or not self.recorder_fourcc.isprintable():
            raise ConfigError(f"{name('recorder_fourcc')} {self.recorder_fourcc}: must be 4 characters, "
                              "e.g. MJPG")
        if not re.fullmatch(r"[a-z0-9]{2,5}", self.recorder_container):
            raise ConfigError(f"{name('recorder_container')} {self.recorder_container}: a file extension, "
                              "e.g. avi")
        if not (0 <= self.preroll <= 60):
            raise ConfigError(f"{name('preroll')} {self.preroll:g}: must be 0..60 seconds")
        if self.preroll > 0 and self.recorder != "mp4":
            raise ConfigError(f"{name('preroll')} keeps encoded packets: it needs {name.key('recorder')} mp4")
        if self.segment != 0 and not (1 <= self.segment <= 86400):
            raise ConfigError(f"{name('segment')} {self.segment:g}: must be 0 (off) or 1..86400 seconds")
        if self.keep_days < 0:
            raise ConfigError(f"{name('keep_days')} {self.keep_days:g}: must be 0 (forever) or more")
        if self.max_recordings_bytes < 0:
            raise ConfigError(f"{name('max_recordings_bytes')}: must be 0 (no limit) or more")
        if self.min_free_mb < 0 or not (0 <= self.min_free_percent <= 100):
            raise ConfigError(f"{name('min_free_mb')} must be 0 or more and {name.key('min_free_percent')} "
                              "0..100")


# The settings a camera table may hold: its fields, with width and height given together as `size`.
CAMERA_FIELDS = tuple(f.name for f in fields(CameraConfig) if f.name != "name")
CAMERA_KEYS = frozenset(CAMERA_FIELDS) - {"width", "height"} | {"size"}


def check_http_url(url: str, label: str, expected: str) -> None:
    """An http(s) URL with a host, or ConfigError naming `label` and what was `expected` (shown
    without credentials or query: they may hold a secret)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
            or any(c.isspace() or not c.isprintable() for c in url):
        shown = parts._replace(netloc=parts.hostname or "", query="").geturl() if parts else "that URL"
        raise ConfigError(f"{label} {shown}: expected {expected}")


def check_publish_url(url: str, label: str) -> None:
    """A WHIP endpoint."""
    check_http_url(url, label, "a WHIP endpoint URL, http(s)://HOST[:PORT]/PATH")


def check_webhook_url(url: str, label: str) -> None:
    """A webhook."""
    check_http_url(url, label, "an http(s)://HOST[:PORT]/PATH URL")


def device_of(source: str) -> str | None:
    """The capture device a source opens (`0`, `/dev/video0` and its by-id links are one), or None
    for what many cameras may share: files, URLs, the test pattern."""
    if source == "auto" or source.isdigit():
        # auto opens camera 0 when there is one.
        path = f"/dev/video{int(source) if source.isdigit() else 0}"
    elif "://" in source or source == "testpattern":
        return None
    else:
        path = source
    if os.path.exists(path):
        path = os.path.realpath(path)
    return path if path.startswith("/dev/") else None
