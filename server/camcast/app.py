"""create_app(config): the aiohttp application: the cameras, the outputs' routes, and their lifetimes."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from camcast.appkeys import CAMERAS, CONFIG
from camcast.auth import add_token_guard
from camcast.camera import Camera, CameraSettings
from camcast.cameras import CameraRegistry
from camcast.config import CameraConfig, Config, parse_ice_server
from camcast.cors import add_cors
from camcast.metrics import add_metrics
from camcast.mjpeg import add_mjpeg
from camcast.motion import MotionSettings, with_default_preroll
from camcast.motion.routes import add_motion_routes
from camcast.motion.webhooks import Webhooks, add_webhooks
from camcast.recorder import Recorder, RecorderSettings, add_recorder_routes, make_recorder
from camcast.sources import Source, make_source
from camcast.sources.factory import may_pass_through
from camcast.status import add_status_routes
from camcast.webclient import add_client_routes
from camcast.webrtc import WebRtcOptions, setup_webrtc
from camcast.webrtc.iceconfig import current_ice_servers
from camcast.webrtc.iceservers import add_ice_servers_route
from camcast.webrtc.options import IceServerValues
from camcast.webrtc.whip import make_publishers

log = logging.getLogger("camcast")


def camera_configs(config: Config) -> tuple[CameraConfig, ...]:
    """The configured cameras; a Config built by hand without any has one, `default`, from its
    global options (what load_config does when no camera is named)."""
    return config.cameras or (config.camera_defaults(),)


def recorder_settings(camera: CameraConfig) -> RecorderSettings:
    return RecorderSettings(
        folder=camera.recordings,
        preroll=with_default_preroll(camera.preroll, camera.motion and camera.motion_record, camera.recorder),
        segment=camera.segment,
        keep_days=camera.keep_days, max_bytes=camera.max_recordings_bytes,
        min_free_bytes=int(camera.min_free_mb * 1_000_000), min_free_ratio=camera.min_free_percent / 100,
    )


def motion_settings(camera: CameraConfig) -> MotionSettings | None:
    if not camera.motion:
        return None
    return MotionSettings(fps=camera.motion_fps, width=camera.motion_width,
                          sensitivity=camera.motion_sensitivity, min_area=camera.motion_min_area,
                          masks=camera.motion_masks, quiet=camera.motion_quiet,
                          post_roll=camera.motion_post_roll)


def build_camera(camera: CameraConfig, source_factory: Callable[[], Source] | None = None,
                 ice_servers: Callable[[], list[IceServerValues]] = list) -> Camera:
    settings = CameraSettings(
        name=camera.name, source=camera.source, width=camera.width, height=camera.height, fps=camera.fps,
        jpeg_quality=camera.jpeg_quality, keyframe_interval=camera.keyframe_interval,
        bitrate=camera.bitrate, codec=camera.codec, on_demand=camera.on_demand,
        idle_timeout=camera.idle_timeout, adapt=camera.adapt,
        audio=camera.audio_source,
        motion=motion_settings(camera), motion_record=camera.motion_record,
        passthrough=(source_factory is None
                     and may_pass_through(camera.source, camera.stamp, camera.transcode)),
    )
    built: list[Camera] = []  # the camera the source belongs to (made below)
    if source_factory is None:
        def source_factory() -> Source:
            label = camera.name if camera.name != "default" else ""
            return make_source(camera.source, camera.width, camera.height, camera.fps, camera.stamp, label,
                               transcode=camera.transcode,
                               pictures_wanted=lambda: built[0].capture.pictures_wanted(),
                               rtsp_transport=camera.rtsp_transport, flash=camera.audio_source == "tone",
                               audio=built[0].stream_audio)

    def recorder_for(built: Camera) -> Recorder:
        return make_recorder(built, recorder_settings(camera), built.control.broadcast, camera.recorder,
                             camera.recorder_fourcc, camera.recorder_container)

    built.append(Camera(settings, source_factory, recorder_for))
    built[0].publishers = make_publishers(built[0], camera.publish, camera.publish_token, ice_servers)
    return built[0]


def webrtc_options(config: Config) -> WebRtcOptions:
    servers = [parse_ice_server(url, shared_secret=bool(config.turn_secret)) for url in config.ice_servers]
    return WebRtcOptions(
        max_peers=config.max_peers, peer_timeout=config.peer_timeout,
        ice_servers=tuple((s.url, s.username, s.credential) for s in servers),
        ice_addresses=config.ice_addresses, turn_secret=config.turn_secret,
    )


def create_app(
    config: Config, source_factory: Callable[[], Source] | None = None
) -> web.Application:
    """`source_factory` replaces every camera's source (tests drive the pipeline with their own)."""
    app = web.Application(client_max_size=64 * 1024)
    app[CONFIG] = config
    options = webrtc_options(config)
    # Publishers use the same STUN/TURN servers as local peers when the SFU names none.
    ice_servers = functools.partial(current_ice_servers, options)
    cameras = CameraRegistry([build_camera(c, source_factory, ice_servers) for c in camera_configs(config)])
    app[CAMERAS] = cameras
    webhooks = Webhooks()
    for built, settings in zip(cameras, camera_configs(config), strict=True):
        built.motion.webhooks = [target.post for target in webhooks.poster(settings.webhook)]
    add_webhooks(app, webhooks)  # before the cameras' context: its session outlives their last events
    # Order matters: CORS answers preflights (which carry no token) before the token check.
    add_cors(app, config.cors_origins)
    add_token_guard(app, config.token)
    # WebRTC's context wraps the cameras': ICE addresses hold while any session lives.
    setup_webrtc(app, options)
    add_ice_servers_route(app)  # the bundled pages' STUN/TURN servers

    async def cameras_ctx(app: web.Application) -> AsyncIterator[None]:
        async with cameras.running():  # each camera stops in its own explicit order
            yield

    app.cleanup_ctx.append(cameras_ctx)
    add_client_routes(app)
    add_mjpeg(app)
    add_recorder_routes(app)
    add_motion_routes(app)
    add_status_routes(app)
    add_metrics(app)
    return app
