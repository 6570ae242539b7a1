"""One frozen configuration: defaults, then the --config file, then CAMCAST_* environment variables,
then the command line; and the cameras it names, each with the global per-camera values under its own."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from camcast.cameraconfig import CAMERA_FIELDS, CAMERA_KEYS, CameraConfig, check_publish_url, device_of
from camcast.configcameras import Shorthand, assemble_cameras
from camcast.configfile import read_config_file
from camcast.configvalues import (
    CAMERA_NAME,
    CAMERA_NAME_RULE,
    ConfigError,
    Names,
    Origins,
    option_key,
    parse_bool,
    parse_bytes,
    parse_rect,
    parse_size,
)

__all__ = [
    "CameraConfig", "Config", "ConfigError", "IceServer", "build_parser", "load_config", "parse_bytes",
    "parse_ice_server", "parse_size",
]


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


def parse_ice_server(text: str, label: str = "--ice-server", shared_secret: bool = False) -> IceServer:
    """Parse a stun:/turn:/turns: URL; user and password (percent-encoded) may sit before the host.
    `label` names the setting in errors. With `shared_secret` (--turn-secret) a TURN URL may come
    without them: its credentials are minted from the secret."""
    m = _ICE_URL.fullmatch(text.strip())
    if m is None:
        raise ConfigError(f"{label} {text}: expected stun:HOST[:PORT] or "
                          "turn:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp]")
    scheme, host, port = m["scheme"], m["host"], m["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise ConfigError(f"{label} {text}: port must be 1..65535")
    if scheme == "stun" and (m["user"] or m["query"]):
        raise ConfigError(f"{label} {text}: a stun: URL takes no credentials or transport")
    if scheme != "stun" and not m["user"] and not shared_secret:
        raise ConfigError(f"{label} {text}: a TURN server needs USER:PASSWORD@ before the host "
                          "(or --turn-secret)")
    url = f"{scheme}:{host}" + (f":{port}" if port else "") + (m["query"] or "")
    if scheme == "stun" or not m["user"]:
        return IceServer(url)
    user, password = unquote(m["user"]), unquote(m["password"])
    if _CONTROL.search(user + password):
        # They go into HTTP headers (WHEP Link): a CR or LF there would break every answer.
        raise ConfigError(f"{label} {scheme}:...@{host}: no control characters (such as %0D or %0A) "
                          "in the user or password")
    return IceServer(url, user, password)


@dataclass(frozen=True)
class Config:
    """Every setting. The per-camera ones (those of CameraConfig) are the defaults of every camera;
    `cameras` holds the cameras themselves (load_config always gives at least one)."""

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
    turn_secret: str = field(default="", repr=False)  # never printed either
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
    on_demand: bool = False
    idle_timeout: float = 5.0
    adapt: bool = True
    transcode: bool = False
    rtsp_transport: str = "tcp"
    audio: str = "auto"
    publish: tuple[str, ...] = ()  # WHIP endpoints of the first camera
    publish_token: str = field(default="", repr=False)  # never printed
    motion: bool = False
    motion_record: bool = False
    motion_fps: float = 5.0
    motion_width: int = 160
    motion_sensitivity: float = 0.8
    motion_min_area: float = 0.5
    motion_masks: tuple[tuple[float, float, float, float], ...] = ()
    motion_quiet: float = 5.0
    motion_post_roll: float = 5.0
    webhook: tuple[str, ...] = ()  # every camera's, unless its table has its own
    cameras: tuple[CameraConfig, ...] = ()  # the first is the one the unprefixed routes mean
    config_file: Path | None = None
    check: bool = False  # validate and exit

    def camera_defaults(self, name: str = "default") -> CameraConfig:
        """A camera with the global per-camera values (what a camera's own table overrides)."""
        # --publish is the first camera's alone (load_config gives it to that one).
        return CameraConfig(name, **{key: getattr(self, key) for key in CAMERA_FIELDS if key != "publish"})

    def validate(self, origins: Origins | None = None) -> Config:
        """Raise ConfigError for the first invalid setting; `origins` (from load_config) lets the
        message name the file, camera and key a value came from."""
        origins = origins or Origins()
        name = origins.options()
        self.camera_defaults().validate(name)
        for url in self.publish:
            check_publish_url(url, name("publish"))
        secret = bool(self.turn_secret)
        servers = [parse_ice_server(url, name("ice_server"), secret) for url in self.ice_servers]
        if self.turn_secret and not any(s.url.startswith("turn") and s.username is None for s in servers):
            raise ConfigError(f"{name('turn_secret')} needs a TURN server to mint credentials for: "
                              f"{name.key('ice_server')} turn:HOST[:PORT] (without user and password)")
        for address in self.ice_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ConfigError(f"{name('ice_address')} {address}: must be an IP address of this "
                                  "machine") from None
        if not (1 <= self.max_peers <= 10_000):
            raise ConfigError(f"{name('max_peers')} {self.max_peers}: must be 1..10000")
        if not (1 <= self.peer_timeout <= 600):
            raise ConfigError(f"{name('peer_timeout')} {self.peer_timeout:g}: must be 1..600 seconds")
        if not (0 <= self.port <= 65535):
            raise ConfigError(f"{name('port')} {self.port}: must be 0..65535")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"{name('log_level')} {self.log_level}: must be debug, info, warning or error")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"{name('log_format')} {self.log_format}: must be text or json")
        if self.token and not _TOKEN_RE.fullmatch(self.token):
            # It travels in an Authorization header and a query string: printable ASCII, no spaces.
            raise ConfigError(f"{name('token')}: use printable ASCII without spaces, e.g. "
                              "`openssl rand -hex 16`")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError(f"{name('tls_cert')} and {name.key('tls_key')} go together: give both or "
                              "neither")
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN_RE.fullmatch(origin):
                raise ConfigError(f"{name('cors_origin')} {origin}: must be * or scheme://host[:port], e.g. "
                                  "https://example.org")
        self._validate_cameras(origins)
        return self

    def _validate_cameras(self, origins: Origins) -> None:
        devices: dict[str, str] = {}  # device → the camera that opens it
        folders: dict[Path, CameraConfig] = {}
        names: set[str] = set()
        for camera in self.cameras:
            if not CAMERA_NAME.fullmatch(camera.name):
                raise ConfigError(f"camera {camera.name!r}: {CAMERA_NAME_RULE}")
            if camera.name in names:
                raise ConfigError(f"camera {camera.name}: given twice")
            names.add(camera.name)
            camera.validate(origins.camera(camera.name))
            # Two captures of one device fail or steal each other's frames.
            device = device_of(camera.source)
            if device is not None and device in devices:
                hint = " (auto opens camera 0 when there is one)" if camera.source == "auto" else ""
                raise ConfigError(f"{origins.source(camera.name, camera.source)}: the same device as "
                                  f"camera {devices[device]}{hint}")
            if device is not None:
                devices[device] = camera.name
            other = folders.setdefault(camera.recordings.resolve(), camera)
            if other is not camera:
                # Blame the camera whose folder was set by hand: the other has the one it gets by default.
                own, shared = ((camera, other) if camera.recordings != self.recordings / camera.name
                               else (other, camera))
                raise ConfigError(f"{origins.camera(own.name)('recordings')} {own.recordings}: the folder of "
                                  f"camera {shared.name} too (each camera needs its own)")

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


_TOKEN_RE = re.compile(r"[\x21-\x7e]+")
_ORIGIN_RE = re.compile(r"https?://[^/\s?#]+")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line that says what is wrong; no usage dump, no traceback.
        self.exit(2, f"camcast: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    d = Config()
    p = _Parser(
        prog="camcast",
        description="Capture cameras once and serve them to browsers over WebRTC (and WHEP) and "
        "MJPEG, with recording. Every option can also be set as an environment variable "
        "CAMCAST_<OPTION> (e.g. CAMCAST_PORT=9000) or in a --config file; the command line wins.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--source", default=d.source,
                   help="auto (camera 0 if it opens, else the test pattern), testpattern, a camera "
                   "index, a device path (/dev/video0), a video file (looped) or a URL (rtsp://, http://); "
                   "with other cameras it is the camera named default")
    p.add_argument("--camera", dest="cameras", action="append", default=None, metavar="NAME=SOURCE",
                   help="a named camera (repeatable): NAME is 1-32 of a-z 0-9 _ -, SOURCE as for --source; "
                   "the name of a camera of the --config file gives that camera this source")
    p.add_argument("--config", dest="config_file", type=Path, default=None, metavar="FILE",
                   help="TOML file: options at the top (key = the option without --, - written _), "
                   "one [cameras.NAME] table per camera with its source and its own per-camera options")
    p.add_argument("--check", action="store_true",
                   help="check the configuration as startup does (options, file, cameras and their sources, "
                   "folders) without listening, and exit")
    p.add_argument("--host", default=d.host,
                   help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=d.port, help="TCP port (0 picks a free one)")
    p.add_argument("--size", type=parse_size, default=(d.width, d.height), metavar="WxH",
                   help="capture size (test pattern; requested from cameras)")
    p.add_argument("--fps", type=float, default=d.fps, help="capture frame rate")
    p.add_argument("--stamp", type=parse_bool, nargs="?", const=True, default=d.stamp,
                   help="draw the 64-cell capture-time stamp on every frame (the test pattern always has it)")
    p.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality,
                   help="MJPEG/snapshot JPEG quality 1..100")
    p.add_argument("--codec", default=d.codec, choices=["auto", "h264", "vp8"],
                   help="WebRTC video codec: auto (H.264 when the peer offers it, else VP8), h264 or vp8")
    p.add_argument("--keyframe-interval", type=float, default=d.keyframe_interval, metavar="SECONDS",
                   help="seconds between keyframes of the shared video encoder")
    p.add_argument("--bitrate", type=int, default=d.bitrate, metavar="BITS",
                   help="target bitrate of the shared video encoder, bits per second")
    p.add_argument("--on-demand", type=parse_bool, nargs="?", const=True, default=d.on_demand,
                   help="open the source only while a viewer, recording or publisher needs it")
    p.add_argument("--idle-timeout", type=float, default=d.idle_timeout, metavar="SECONDS",
                   help="with --on-demand: close the source this long after the last one leaves")
    p.add_argument("--adapt", type=parse_bool, nargs="?", const=True, default=d.adapt,
                   help="encode a ladder of renditions (full, half, quarter size) and move each WebRTC "
                   "viewer to the best its link carries (--adapt off: one encode at --bitrate for all)")
    p.add_argument("--transcode", type=parse_bool, nargs="?", const=True, default=d.transcode,
                   help="decode a camera that encodes (RTSP, HTTP, a file) and encode it again, instead of "
                   "passing its own H.264 and JPEGs through")
    p.add_argument("--audio", default=d.audio, metavar="auto|none|tone|stream|alsa:DEVICE",
                   help="the camera's sound: tone (a 1 kHz beep at every whole second, with a flash in the "
                   "picture, for measuring A/V sync), stream (the camera's or file's own audio track), "
                   "alsa:DEVICE (e.g. alsa:default, alsa:hw:1,0), none, or auto (the stream's own sound "
                   "when it has some, the tone for the test pattern, else none)")
    p.add_argument("--rtsp-transport", default=d.rtsp_transport, choices=["tcp", "udp"],
                   help="how rtsp:// cameras send their packets: tcp (through firewalls, no loss) or udp")
    p.add_argument("--recordings", type=Path, default=d.recordings,
                   help="folder for recordings (created if missing; must be writable); with several "
                   "cameras each records into its own subfolder, named after the camera")
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
    p.add_argument("--turn-secret", default=d.turn_secret, metavar="SECRET",
                   help="shared secret of the TURN server (coturn's use-auth-secret / static-auth-secret): "
                   "each --ice-server turn:HOST[:PORT] given without user and password gets credentials "
                   "minted from it, valid for an hour (prefer CAMCAST_TURN_SECRET: the command line is "
                   "visible to other users of the machine)")
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
    p.add_argument("--publish", dest="publish", action="append", default=None, metavar="URL",
                   help="WHIP endpoint (an SFU) to publish the first camera to (repeatable; per camera: "
                   "publish in its [cameras.NAME] table)")
    p.add_argument("--publish-token", default=d.publish_token, metavar="TOKEN",
                   help="Bearer token for the WHIP endpoints (prefer CAMCAST_PUBLISH_TOKEN: the command "
                   "line is visible to other users of the machine)")
    p.add_argument("--motion", type=parse_bool, nargs="?", const=True, default=d.motion,
                   help="detect motion: events (GET /api/events) with thumbnails, on the data channel and to "
                   "--webhook; the detector keeps an --on-demand camera's source open")
    p.add_argument("--motion-record", type=parse_bool, nargs="?", const=True, default=d.motion_record,
                   help="with --motion: record each event, from its pre-roll (--preroll, 3 s when that is 0) "
                   "to --motion-post-roll after its end; a manual recording absorbs events")
    p.add_argument("--motion-fps", type=float, default=d.motion_fps, metavar="N",
                   help="pictures per second the motion detector looks at")
    p.add_argument("--motion-width", type=int, default=d.motion_width, metavar="PIXELS",
                   help="width of the grayscale copy the motion detector looks at")
    p.add_argument("--motion-sensitivity", type=float, default=d.motion_sensitivity, metavar="0..1",
                   help="how faint a difference counts as motion (higher: fainter)")
    p.add_argument("--motion-min-area", type=float, default=d.motion_min_area, metavar="PERCENT",
                   help="percent of the picture that must move for an event")
    p.add_argument("--motion-masks", "--motion-mask", dest="motion_masks", type=parse_rect, action="append",
                   default=None, metavar="X,Y,W,H",
                   help="a rectangle to ignore, in fractions of the picture (repeatable; in a file: "
                   "motion_masks = [[x, y, w, h], ...]; in CAMCAST_MOTION_MASKS separate them with ;)")
    p.add_argument("--motion-quiet", type=float, default=d.motion_quiet, metavar="SECONDS",
                   help="an event ends after this long without motion")
    p.add_argument("--motion-post-roll", type=float, default=d.motion_post_roll, metavar="SECONDS",
                   help="with --motion-record: keep recording this long after an event's end")
    p.add_argument("--webhook", dest="webhook", action="append", default=None, metavar="URL",
                   help="POST each motion start and end as JSON to this URL (repeatable; per camera: webhook "
                   "in its [cameras.NAME] table); retried with backoff, never blocking capture")
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
        name = "CAMCAST_" + option_key(action).upper()
        if name not in env:
            continue
        raw = env[name]
        try:
            if action.nargs == 0:  # store_true style flags
                value: Any = parse_bool(raw)
            elif isinstance(action, argparse._AppendAction):
                convert = action.type or str
                separator = ";" if action.type is parse_rect else ","  # a rectangle has commas
                value = [convert(item) for item in raw.split(separator) if item.strip()]
            else:
                value = (action.type or str)(raw)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise ConfigError(f"{name}={raw!r}: {exc}") from None
        if action.choices and value not in action.choices:
            raise ConfigError(f"{name}={raw!r}: must be one of {', '.join(map(str, action.choices))}")
        defaults[action.dest] = value
    return defaults


# Settings of the command line only: a file neither names itself nor its cameras as --camera.
_NOT_IN_FILE = frozenset({"help", "config_file", "cameras", "check"})


def _file_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest not in _NOT_IN_FILE]


def _command_line(argv: Sequence[str] | None) -> dict[str, Any]:
    """Only what the command line gives: options it leaves out are missing, not defaulted."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Defaults ← the --config file ← environment ← command line, validated; each camera has the global
    per-camera values under its own table's. Raises ConfigError (or exits 2 on bad syntax)."""
    parser = build_parser()
    defaults = vars(parser.parse_args([]))
    parser.parse_args(argv)  # --help, and mistakes in the syntax, exit here
    given = _command_line(argv)
    from_env = _env_defaults(parser, os.environ if env is None else env)
    path = given.get("config_file", from_env.get("config_file"))
    file = read_config_file(path, _file_actions(parser), CAMERA_KEYS) if path is not None else None
    from_file = file.values if file else {}
    # A repeatable option replaces the list of the layer below, never extends it.
    values = {**defaults, **from_file, **from_env, **given}
    width, height = values.pop("size")
    values["width"], values["height"] = width, height
    for name in ("ice_servers", "ice_addresses", "publish", "webhook", "motion_masks"):
        values[name] = tuple(values[name] or ())
    values["cors_origins"] = tuple(values["cors_origins"] or Config.cors_origins)
    flags = values.pop("cameras") or []
    config = Config(**values)

    keys = {action.dest: option_key(action) for action in _file_actions(parser)}
    file_keys = frozenset(keys[dest] for dest in from_file if dest not in from_env and dest not in given)
    shorthand = None
    if "source" in given or "source" in from_env or "source" in from_file:
        where = Names(file.path if file else "", None, file_keys)("source")
        shorthand = Shorthand(config.source, f"{where} {config.source}", "source" in file_keys)
    cameras = assemble_cameras(config.camera_defaults(), file, flags, shorthand)
    first = cameras.cameras[0]
    if config.publish and not first.publish:  # a camera's own table is more specific
        cameras = dataclasses.replace(cameras, cameras=(dataclasses.replace(first, publish=config.publish),
                                                        *cameras.cameras[1:]))
    origins = Origins(file.path if file else "", file_keys, cameras.tables, cameras.sources)
    return dataclasses.replace(config, cameras=cameras.cameras).validate(origins)
