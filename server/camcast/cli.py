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

from aiohttp import web

from camcast.app import create_app
from camcast.auth import exposure_warning
from camcast.config import Config, ConfigError, load_config
from camcast.logsetup import setup_logging
from camcast.recorder import FolderError, check_opencv_writer, prepare_folder
from camcast.sources import SourceError, open_source_spec, resolve_source

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


def _check_source(config: Config) -> Config:
    spec = resolve_source(config.source)
    try:
        with _native_stderr_silenced():
            open_source_spec(spec, config.width, config.height, config.fps, config.stamp)
    except SourceError as exc:
        raise StartupError(f"--source {config.source}: {exc}") from None
    return dataclasses.replace(config, source=spec)


def _check_recordings(config: Config) -> None:
    """The recordings folder exists (created if missing) and is writable; the writer opens."""
    try:
        prepare_folder(config.recordings)
    except FolderError as exc:
        raise StartupError(f"--recordings {config.recordings}: {exc}") from None
    if config.recorder == "opencv":
        with _native_stderr_silenced():
            problem = check_opencv_writer(config.recordings, config.recorder_fourcc,
                                          config.recorder_container, config.width, config.height,
                                          config.fps)
        if problem:
            raise StartupError(f"--recorder opencv: {problem}")


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


async def serve(config: Config, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
    app = create_app(config)
    # A short shutdown timeout: endless MJPEG responses are ended on shutdown anyway.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.SockSite(runner, sock, ssl_context=tls)
    await site.start()
    url = _url(config, sock, tls is not None)
    print(f"camcast: serving {config.source} {config.size}@{config.fps:g} at {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(argv)
        setup_logging(config.log_level, config.log_format)
        tls = _tls_context(config)
        config = _check_source(config)
        _check_recordings(config)
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
