"""Command line: parse the config, check the source and the port, run the app until a signal."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import socket
import sys
from collections.abc import Sequence

from aiohttp import web

from camcast.app import create_app
from camcast.config import Config, ConfigError, load_config
from camcast.sources import SourceError, open_source_spec, resolve_source

log = logging.getLogger("camcast")


class StartupError(Exception):
    """Something the user can fix stops the server from starting; the message says what."""


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _listen(host: str, port: int) -> socket.socket:
    try:
        return socket.create_server((host, port), reuse_port=False, backlog=1024)
    except OSError as exc:
        reason = "address already in use" if exc.errno in (98, 48) else exc.strerror or str(exc)
        raise StartupError(f"cannot listen on {host}:{port}: {reason}") from None


def _check_source(config: Config) -> Config:
    spec = resolve_source(config.source)
    try:
        open_source_spec(spec, config.width, config.height, config.fps, config.stamp)
    except SourceError as exc:
        raise StartupError(f"--source {config.source}: {exc}") from None
    return dataclasses.replace(config, source=spec)


def _url(config: Config, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    host = config.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


async def serve(config: Config, sock: socket.socket) -> None:
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # A short shutdown timeout: endless MJPEG responses are ended on shutdown anyway.
    site = web.SockSite(runner, sock, shutdown_timeout=1.0)
    await site.start()
    print(f"camcast: serving {config.source} {config.size}@{config.fps:g} at {_url(config, sock)}",
          flush=True)
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
        _setup_logging(config.log_level)
        config = _check_source(config)
        sock = _listen(config.host, config.port)
    except (ConfigError, StartupError) as exc:
        print(f"camcast: error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config, sock))
    except KeyboardInterrupt:
        pass
    return 0
