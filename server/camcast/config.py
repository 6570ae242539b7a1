"""One frozen configuration: defaults, then CAMCAST_* environment variables, then the command line."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote


class ConfigError(ValueError):
    """A setting is invalid; the message says which and why."""


@dataclass(frozen=True)
class IceServer:
    """One --ice-server: the URL without credentials, plus the TURN username and password."""

    url: str
    username: str | None = None
    credential: str | None = None


# stun:HOST[:PORT], turn[s]:[USER:PASS@]HOST[:PORT][?transport=udp|tcp] (RFC 7064/7065, plus credentials).
_ICE_URL = re.compile(
    r"(?P<scheme>stun|turns?):(?:(?P<user>[^:@]+):(?P<password>[^@]*)@)?"
    r"(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>\d{1,5}))?(?P<query>\?transport=(?:udp|tcp))?"
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def parse_ice_server(text: str) -> IceServer:
    """Parse a stun:/turn:/turns: URL; user and password (percent-encoded) may sit before the host."""
    m = _ICE_URL.fullmatch(text.strip())
    if m is None:
        raise ConfigError(f"--ice-server {text}: expected stun:HOST[:PORT] or "
                          "turn:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp]")
    scheme, host, port = m["scheme"], m["host"], m["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise ConfigError(f"--ice-server {text}: port must be 1..65535")
    if scheme == "stun" and (m["user"] or m["query"]):
        raise ConfigError(f"--ice-server {text}: a stun: URL takes no credentials or transport")
    if scheme != "stun" and not m["user"]:
        raise ConfigError(f"--ice-server {text}: a TURN server needs USER:PASSWORD@ before the host")
    url = f"{scheme}:{host}" + (f":{port}" if port else "") + (m["query"] or "")
    if scheme == "stun":
        return IceServer(url)
    user, password = unquote(m["user"]), unquote(m["password"])
    if _CONTROL.search(user + password):
        # They go into HTTP headers (WHEP Link): a CR or LF there would break every answer.
        raise ConfigError(f"--ice-server {scheme}:...@{host}: no control characters (such as %0D or %0A) "
                          "in the user or password")
    return IceServer(url, user, password)


@dataclass(frozen=True)
class Config:
    source: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8080
    width: int = 640
    height: int = 480
    fps: float = 30.0
    stamp: bool = False
    jpeg_quality: int = 80
    recordings: Path = Path("recordings")
    codec: str = "auto"
    keyframe_interval: float = 2.0
    bitrate: int = 2_000_000
    ice_servers: tuple[str, ...] = ()
    ice_addresses: tuple[str, ...] = ()
    max_peers: int = 64
    peer_timeout: float = 10.0
    log_level: str = "info"
    log_format: str = "text"
    token: str = field(default="", repr=False)  # never printed with the config
    tls_cert: Path | None = None
    tls_key: Path | None = None
    cors_origins: tuple[str, ...] = ("*",)
    recorder: str = "mp4"  # mp4 (remux the shared H.264) or opencv (cv2.VideoWriter on the frames)
    recorder_fourcc: str = "MJPG"
    recorder_container: str = "avi"
    preroll: float = 0.0
    segment: float = 0.0
    keep_days: float = 0.0
    max_recordings_bytes: int = 0
    min_free_mb: float = 200.0
    min_free_percent: float = 1.0

    def validate(self) -> Config:
        if not (1 <= self.width <= 7680 and 1 <= self.height <= 4320):
            raise ConfigError(f"--size {self.width}x{self.height}: width and height must be 1..7680x4320")
        if self.width % 2 or self.height % 2:
            raise ConfigError(f"--size {self.width}x{self.height}: width and height must be even")
        if not (0 < self.fps <= 240):
            raise ConfigError(f"--fps {self.fps:g}: must be more than 0 and at most 240")
        if not (1 <= self.jpeg_quality <= 100):
            raise ConfigError(f"--jpeg-quality {self.jpeg_quality}: must be 1..100")
        if self.codec not in ("auto", "h264", "vp8"):
            raise ConfigError(f"--codec {self.codec}: must be auto, h264 or vp8")
        if not (0.1 <= self.keyframe_interval <= 60):
            raise ConfigError(f"--keyframe-interval {self.keyframe_interval:g}: must be 0.1..60 seconds")
        if not (50_000 <= self.bitrate <= 50_000_000):
            raise ConfigError(f"--bitrate {self.bitrate}: must be 50000..50000000 bits/s")
        for url in self.ice_servers:
            parse_ice_server(url)
        for address in self.ice_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ConfigError(f"--ice-address {address}: must be an IP address of this machine") from None
        if not (1 <= self.max_peers <= 10_000):
            raise ConfigError(f"--max-peers {self.max_peers}: must be 1..10000")
        if not (1 <= self.peer_timeout <= 600):
            raise ConfigError(f"--peer-timeout {self.peer_timeout:g}: must be 1..600 seconds")
        if not (0 <= self.port <= 65535):
            raise ConfigError(f"--port {self.port}: must be 0..65535")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"--log-level {self.log_level}: must be debug, info, warning or error")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"--log-format {self.log_format}: must be text or json")
        if self.token and not _TOKEN_RE.fullmatch(self.token):
            # It travels in an Authorization header and a query string: printable ASCII, no spaces.
            raise ConfigError("--token: use printable ASCII without spaces, e.g. `openssl rand -hex 16`")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN_RE.fullmatch(origin):
                raise ConfigError(f"--cors-origin {origin}: must be * or scheme://host[:port], e.g. "
                                  "https://example.org")
        self._validate_recorder()
        return self

    def _validate_recorder(self) -> None:
        if self.recorder not in ("mp4", "opencv"):
            raise ConfigError(f"--recorder {self.recorder}: must be mp4 or opencv")
        if len(self.recorder_fourcc) != 4 or not self.recorder_fourcc.isprintable():
            raise ConfigError(f"--recorder-fourcc {self.recorder_fourcc}: must be 4 characters, e.g. MJPG")
        if not re.fullmatch(r"[a-z0-9]{2,5}", self.recorder_container):
            raise ConfigError(f"--recorder-container {self.recorder_container}: a file extension, e.g. avi")
        if not (0 <= self.preroll <= 60):
            raise ConfigError(f"--preroll {self.preroll:g}: must be 0..60 seconds")
        if self.preroll > 0 and self.recorder != "mp4":
            raise ConfigError("--preroll keeps encoded packets: it needs --recorder mp4")
        if self.segment != 0 and not (1 <= self.segment <= 86400):
            raise ConfigError(f"--segment {self.segment:g}: must be 0 (off) or 1..86400 seconds")
        if self.keep_days < 0:
            raise ConfigError(f"--keep-days {self.keep_days:g}: must be 0 (forever) or more")
        if self.max_recordings_bytes < 0:
            raise ConfigError("--max-recordings-bytes: must be 0 (no limit) or more")
        if self.min_free_mb < 0 or not (0 <= self.min_free_percent <= 100):
            raise ConfigError("--min-free-mb must be 0 or more and --min-free-percent 0..100")

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


_TOKEN_RE = re.compile(r"[\x21-\x7e]+")
_ORIGIN_RE = re.compile(r"https?://[^/\s?#]+")


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 640x480") from None


def parse_bytes(text: str) -> int:
    """A byte count with an optional K/M/G/T suffix (powers of 1024): 500M, 2G, 1073741824."""
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size, e.g. 500M or 2G")
    return int(float(m.group(1)) * units[m.group(2)])


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line that says what is wrong; no usage dump, no traceback.
        self.exit(2, f"camcast: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    d = Config()
    p = _Parser(
        prog="camcast",
        description="Capture a camera once and serve it to browsers over WebRTC (and WHEP) and "
        "MJPEG, with recording. Every option can also be set as an environment variable "
        "CAMCAST_<OPTION> (e.g. CAMCAST_PORT=9000); the command line wins.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--source", default=d.source,
                   help="auto (camera 0 if it opens, else the test pattern), testpattern, a camera "
                   "index, a device path (/dev/video0), a video file (looped) or a URL (rtsp://, http://)")
    p.add_argument("--host", default=d.host,
                   help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=d.port, help="TCP port (0 picks a free one)")
    p.add_argument("--size", type=parse_size, default=(d.width, d.height), metavar="WxH",
                   help="capture size (test pattern; requested from cameras)")
    p.add_argument("--fps", type=float, default=d.fps, help="capture frame rate")
    p.add_argument("--stamp", type=_bool, nargs="?", const=True, default=d.stamp,
                   help="draw the 64-cell capture-time stamp on every frame (the test pattern always has it)")
    p.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality,
                   help="MJPEG/snapshot JPEG quality 1..100")
    p.add_argument("--codec", default=d.codec, choices=["auto", "h264", "vp8"],
                   help="WebRTC video codec: auto (H.264 when the peer offers it, else VP8), h264 or vp8")
    p.add_argument("--keyframe-interval", type=float, default=d.keyframe_interval, metavar="SECONDS",
                   help="seconds between keyframes of the shared video encoder")
    p.add_argument("--bitrate", type=int, default=d.bitrate, metavar="BITS",
                   help="target bitrate of the shared video encoder, bits per second")
    p.add_argument("--recordings", type=Path, default=d.recordings,
                   help="folder for recordings (created if missing; must be writable)")
    p.add_argument("--recorder", default=d.recorder, choices=["mp4", "opencv"],
                   help="mp4: remux the shared H.264 into fragmented MP4 (no second encode); "
                   "opencv: cv2.VideoWriter on the frames (see --recorder-fourcc, --recorder-container)")
    p.add_argument("--recorder-fourcc", default=d.recorder_fourcc, metavar="FOURCC",
                   help="codec of the opencv recorder, e.g. MJPG, XVID, mp4v")
    p.add_argument("--recorder-container", default=d.recorder_container, metavar="EXT",
                   help="file type of the opencv recorder, e.g. avi, mkv, mp4")
    p.add_argument("--preroll", type=float, default=d.preroll, metavar="SECONDS",
                   help="start recordings up to this long before the press (keeps the H.264 encoder "
                   "running and the last seconds in memory)")
    p.add_argument("--segment", type=float, default=d.segment, metavar="SECONDS",
                   help="start a new file (on a keyframe) every this many seconds while recording (0: off)")
    p.add_argument("--keep-days", type=float, default=d.keep_days, metavar="DAYS",
                   help="delete finished recordings older than this (0: keep them)")
    p.add_argument("--max-recordings-bytes", type=parse_bytes, default=d.max_recordings_bytes,
                   metavar="SIZE", help="delete the oldest finished recordings beyond this total, "
                   "e.g. 20G (0: no limit)")
    p.add_argument("--min-free-mb", type=float, default=d.min_free_mb, metavar="MB",
                   help="stop recording (cleanly) when the disk has less free space than this")
    p.add_argument("--min-free-percent", type=float, default=d.min_free_percent, metavar="PCT",
                   help="stop recording (cleanly) when the disk has less than this percentage free")
    p.add_argument("--ice-server", dest="ice_servers", action="append", default=None, metavar="URL",
                   help="STUN/TURN server URL (repeatable; none by default): stun:HOST[:PORT] or "
                   "turn:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp] (percent-encode special characters)")
    p.add_argument("--ice-address", dest="ice_addresses", action="append", default=None, metavar="ADDR",
                   help="address offered as ICE host candidate (repeatable; default: every non-loopback "
                   "interface; 127.0.0.1 keeps WebRTC on loopback; a public/NAT address for NAT or "
                   "containers)")
    p.add_argument("--max-peers", type=int, default=d.max_peers, metavar="N",
                   help="most WebRTC sessions at once (/offer and WHEP); more get 503")
    p.add_argument("--peer-timeout", type=float, default=d.peer_timeout, metavar="SECONDS",
                   help="drop a WebRTC peer whose receiver reports stop for this long")
    p.add_argument("--log-level", default=d.log_level, choices=["debug", "info", "warning", "error"],
                   help="how much the log (on stderr) says")
    p.add_argument("--log-format", default=d.log_format, choices=["text", "json"],
                   help="text lines, or one JSON object per line for log collectors")
    p.add_argument("--token", default=d.token,
                   help="access token: every route but /healthz and the player page needs it, as "
                   "'Authorization: Bearer TOKEN' or ?token=TOKEN (prefer CAMCAST_TOKEN: the command "
                   "line is visible to other users of the machine)")
    p.add_argument("--tls-cert", type=Path, default=d.tls_cert, metavar="PEM",
                   help="serve HTTPS with this certificate chain (needs --tls-key)")
    p.add_argument("--tls-key", type=Path, default=d.tls_key, metavar="PEM",
                   help="private key of --tls-cert")
    p.add_argument("--cors-origin", dest="cors_origins", action="append", default=None,
                   metavar="ORIGIN",
                   help="origin allowed to call the WHEP and /api/ routes from another site "
                   "(repeatable; default: * , any origin, without cookies or credentials)")
    return p


def _env_defaults(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> dict[str, Any]:
    """Parse CAMCAST_* variables with the same types and checks as the command line."""
    defaults: dict[str, Any] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        name = "CAMCAST_" + action.option_strings[0].lstrip("-").replace("-", "_").upper()
        if name not in env:
            continue
        raw = env[name]
        try:
            if action.nargs == 0:  # store_true style flags
                value: Any = _bool(raw)
            elif isinstance(action, argparse._AppendAction):
                convert = action.type or str
                value = [convert(item) for item in raw.split(",") if item.strip()]
            else:
                value = (action.type or str)(raw)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise ConfigError(f"{name}={raw!r}: {exc}") from None
        if action.choices and value not in action.choices:
            raise ConfigError(f"{name}={raw!r}: must be one of {', '.join(map(str, action.choices))}")
        defaults[action.dest] = value
    return defaults


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Defaults ← environment ← command line, validated. Raises ConfigError (or exits 2 on bad syntax)."""
    parser = build_parser()
    from_env = _env_defaults(parser, os.environ if env is None else env)
    # A repeatable option given on the command line replaces the environment's list, never extends it.
    repeatable = {a.dest for a in parser._actions if isinstance(a, argparse._AppendAction)}
    parser.set_defaults(**{k: v for k, v in from_env.items() if k not in repeatable})
    ns = parser.parse_args(argv)
    values = vars(ns)
    for name in repeatable:
        if values[name] is None:
            values[name] = from_env.get(name)
    width, height = values.pop("size")
    values["width"], values["height"] = width, height
    for name in ("ice_servers", "ice_addresses"):
        values[name] = tuple(values[name] or ())
    values["cors_origins"] = tuple(values["cors_origins"] or Config.cors_origins)
    known = {f.name for f in fields(Config)}
    return Config(**{k: v for k, v in values.items() if k in known}).validate()
