"""create_app(config): the aiohttp application, one cleanup_ctx per long-lived component."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from camcast.appkeys import CONFIG, CONTROL, STREAM
from camcast.auth import add_token_guard
from camcast.config import Config, parse_ice_server
from camcast.control import ControlBus
from camcast.cors import add_cors
from camcast.metrics import add_metrics
from camcast.mjpeg import add_mjpeg
from camcast.recorder import RecorderSettings, add_recorder, make_recorder
from camcast.sources import Source, make_source
from camcast.status import healthz_handler, status_handler
from camcast.stream import Stream, StreamSettings
from camcast.webclient import add_client_routes
from camcast.webrtc import WebRtcOptions, setup_webrtc

log = logging.getLogger("camcast")


def build_stream(config: Config, source_factory: Callable[[], Source] | None = None) -> Stream:
    settings = StreamSettings(
        name="default", source=config.source, width=config.width, height=config.height, fps=config.fps,
        jpeg_quality=config.jpeg_quality, keyframe_interval=config.keyframe_interval,
        bitrate=config.bitrate,
    )
    if source_factory is None:
        def source_factory() -> Source:
            return make_source(config.source, config.width, config.height, config.fps, config.stamp)
    return Stream(settings, source_factory)


def webrtc_options(config: Config) -> WebRtcOptions:
    servers = [parse_ice_server(url) for url in config.ice_servers]
    return WebRtcOptions(
        codec=config.codec, max_peers=config.max_peers, peer_timeout=config.peer_timeout,
        ice_servers=tuple((s.url, s.username, s.credential) for s in servers),
        ice_addresses=config.ice_addresses,
    )


def recorder_settings(config: Config) -> RecorderSettings:
    return RecorderSettings(
        folder=config.recordings, preroll=config.preroll, segment=config.segment,
        keep_days=config.keep_days, max_bytes=config.max_recordings_bytes,
        min_free_bytes=int(config.min_free_mb * 1_000_000), min_free_ratio=config.min_free_percent / 100,
    )


async def capture_ctx(app: web.Application) -> AsyncIterator[None]:
    stream = app[STREAM]
    await stream.start_capture()
    yield
    await stream.stop_capture()


async def jpeg_encoder_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[STREAM].jpeg_encoder.close()


async def video_encoders_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    for encoder in app[STREAM].video_encoders.values():
        await encoder.close()


def create_app(
    config: Config, source_factory: Callable[[], Source] | None = None
) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[CONFIG] = config
    app[STREAM] = build_stream(config, source_factory)
    app[CONTROL] = ControlBus()
    # Order matters: CORS answers preflights (which carry no token) before the token check.
    add_cors(app, config.cors_origins)
    add_token_guard(app, config.token)
    app.cleanup_ctx.append(capture_ctx)
    app.cleanup_ctx.append(jpeg_encoder_ctx)
    app.cleanup_ctx.append(video_encoders_ctx)
    setup_webrtc(app, webrtc_options(config))  # after the encoders: peers close before they stop
    # After both: on shutdown the file is finalized first, and peers still hear that it stopped.
    add_recorder(app, make_recorder(app[STREAM], recorder_settings(config), app[CONTROL].broadcast,
                                    config.recorder, config.recorder_fourcc, config.recorder_container))
    add_client_routes(app)
    add_mjpeg(app)
    app.router.add_get("/api/status", status_handler)
    app.router.add_get("/healthz", healthz_handler)
    add_metrics(app)
    return app
