"""Command line: parse the config, check the source and the port, run the app until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import version

from aiohttp import web

from camcast.app import camera_configs, create_app
from camcast.auth import exposure_warning
from camcast.config import CameraConfig, Config, ConfigError, load_config
from camcast.logsetup import setup_logging
from camcast.recorder import FolderError, check_opencv_writer, prepare_folder
from camcast.sources import SourceError, open_source_spec, resolve_source
from camcast.sources.audio_alsa import check_alsa
from camcast.sources.audio_stream import stream_has_audio
from camcast.webrtc.compat import missing_internals

log = logging.getLogger("camcast")


class StartupError(Exception):
    """Something the user can fix stops the server from starting; the message says what."""


def _listen(host: str, port: int) -> socket.socket:
    # An IPv6 address needs an IPv6 socket; "::" also takes IPv4 where the system allows it.
    ipv6 = ":" in host
    try:
        return socket.create_server(
            (host, port), family=socket.AF_INET6 if ipv6 else socket.AF_INET, reuse_port=False,
            backlog=1024, dualstack_ipv6=host == "::" and socket.has_dualstack_ipv6())
    except OSError as exc:
        reason = "address already in use" if exc.errno in (98, 48) else exc.strerror or str(exc)
        raise StartupError(f"cannot listen on {host}:{port}: {reason}") from None


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """OpenCV and FFmpeg print their own lines on fd 2 while a source is probed; the startup error
    is one line that says what is wrong (the capture thread opens the source again, with its log)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _where(config: Config, camera: CameraConfig) -> str:
    """How an error names a camera: `--source` for the one unnamed camera, else its name."""
    if len(config.cameras) <= 1 and camera.name == "default":
        return ""
    return f"camera {camera.name}: "


def _check_sources(config: Config) -> Config:
    """Every camera's source opens (resolved: `auto` becomes camera 0 or the test pattern)."""
    checked = []
    for camera in camera_configs(config):
        spec = resolve_source(camera.source)
        try:
            with _native_stderr_silenced():
                open_source_spec(spec, camera.width, camera.height, camera.fps, camera.stamp)
        except SourceError as exc:
            raise StartupError(f"{_where(config, camera)}--source {camera.source}: {exc}") from None
        if camera.audio.startswith("alsa:"):
            with _native_stderr_silenced():  # ALSA's library prints its own lines there
                problem = check_alsa(camera.audio)
            if problem:
                raise StartupError(f"{_where(config, camera)}--audio {camera.audio}: {problem}")
        checked.append(dataclasses.replace(camera, source=spec, audio=_resolved_audio(camera, spec)))
    first = checked[0]
    return dataclasses.replace(config, cameras=tuple(checked),
                               source=first.source if first.name == "default" else config.source)


def _resolved_audio(camera: CameraConfig, spec: str) -> str:
    """`auto` on a stream or a file without an audio track is no sound (recordings get none)."""
    resolved = dataclasses.replace(camera, source=spec)
    if camera.audio == "auto" and resolved.audio_source == "stream":
        with _native_stderr_silenced():
            if stream_has_audio(spec, camera.rtsp_transport) is False:
                return "none"
    return camera.audio


def _check_recordings(config: Config) -> None:
    """Each camera's recordings folder exists (created if missing) and is writable; the writer opens."""
    for camera in camera_configs(config):
        try:
            prepare_folder(camera.recordings)
        except FolderError as exc:
            raise StartupError(f"{_where(config, camera)}--recordings {camera.recordings}: {exc}") from None
        if camera.recorder == "opencv":
            with _native_stderr_silenced():
                problem = check_opencv_writer(camera.recordings, camera.recorder_fourcc,
                                              camera.recorder_container, camera.width, camera.height,
                                              camera.fps)
            if problem:
                raise StartupError(f"{_where(config, camera)}--recorder opencv: {problem}")


def _refuse_password() -> bytes:
    raise StartupError("--tls-key is encrypted: give an unencrypted key (file mode 600)")


def _tls_context(config: Config) -> ssl.SSLContext | None:
    """The HTTPS context for --tls-cert/--tls-key (None without them); unusable files stop startup."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    for flag, path in (("--tls-cert", config.tls_cert), ("--tls-key", config.tls_key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise StartupError(f"{flag} {path}: {exc.strerror or exc}") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key, password=_refuse_password)
    except ssl.SSLError as exc:
        raise StartupError(f"--tls-cert {config.tls_cert} / --tls-key {config.tls_key}: not a PEM "
                           f"certificate chain and its matching key ({exc.reason or exc})") from None
    return context


def _url(config: Config, sock: socket.socket, tls: bool = False) -> str:
    port = sock.getsockname()[1]
    host = config.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}/"


def _what(config: Config) -> str:
    cameras = camera_configs(config)
    if len(cameras) == 1:
        camera = cameras[0]
        return f"{camera.source} {camera.size}@{camera.fps:g}"
    return f"{len(cameras)} cameras ({', '.join(c.name for c in cameras)})"


async def serve(config: Config, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
    app = create_app(config)
    # A short shutdown timeout: endless MJPEG responses are ended on shutdown anyway.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.SockSite(runner, sock, ssl_context=tls)
    await site.start()
    url = _url(config, sock, tls is not None)
    print(f"camcast: serving {_what(config)} at {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()


def _check_webrtc_stack() -> None:
    missing = missing_internals()
    if missing:
        raise StartupError(f"aiortc {version('aiortc')} / aioice {version('aioice')} lack what camcast uses "
                           f"({', '.join(missing)}): install the tested versions, pip install -e . (see "
                           "pyproject.toml)")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        _check_webrtc_stack()
        config = load_config(argv)
        setup_logging(config.log_level, config.log_format)
        tls = _tls_context(config)
        config = _check_sources(config)
        _check_recordings(config)
        if config.check:
            print(f"camcast: configuration OK: {_what(config)}", flush=True)
            return 0
        sock = _listen(config.host, config.port)
    except (ConfigError, StartupError) as exc:
        print(f"camcast: error: {exc}", file=sys.stderr)
        return 2
    try:
        warning = exposure_warning(sock.getsockname()[0], config.token)
        if warning:
            log.warning(warning)
        asyncio.run(serve(config, sock, tls))
    except KeyboardInterrupt:
        pass
    return 0
