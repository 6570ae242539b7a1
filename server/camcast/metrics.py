"""GET /metrics in Prometheus text format, read from the live pipeline at scrape time.

Each app has its own CollectorRegistry with one custom collector: the pipeline keeps plain
counters (and bucket histograms) and never knows about Prometheus. Every per-camera series has a
`camera` label.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from camcast import __version__
from camcast.appkeys import CAMERAS, METRICS, PEERS, TOKEN_GUARD
from camcast.camera import Camera
from camcast.histogram import HistogramSnapshot
from camcast.webrtc.whip import STATES as WHIP_STATES


def _histogram(family: HistogramMetricFamily, labels: list[str], snap: HistogramSnapshot) -> None:
    buckets = [("+Inf" if math.isinf(bound) else repr(bound), count) for bound, count in snap.buckets]
    family.add_metric(labels, buckets, snap.sum)


Family = GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily


def _per_camera(cameras: Iterable[Camera], family: Family,
                samples: Callable[[Camera], Iterable[tuple[list[str], Any]]]) -> Family:
    """Fill one family from every camera: `samples(camera)` yields (extra labels, value)."""
    for camera in cameras:
        for labels, value in samples(camera):
            if isinstance(family, HistogramMetricFamily):
                _histogram(family, [camera.name, *labels], value)
            else:
                family.add_metric([camera.name, *labels], value)
    return family


class PipelineCollector(Collector):
    """Reads the cameras, encoders, hubs and viewers of one app whenever Prometheus scrapes."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def describe(self) -> list[Metric]:
        return []  # no up-front collect: the app may not be running when the registry is built

    def collect(self) -> Iterator[Metric]:
        app = self._app
        cameras = list(app[CAMERAS])
        info = InfoMetricFamily("camcast_build", "camcast version")
        info.add_metric([], {"version": __version__})
        yield info
        yield from self._camera_metrics(cameras)
        yield from self._encoder_metrics(cameras)
        yield from self._viewer_metrics(cameras)
        yield from self._recording_metrics(cameras)
        yield from self._motion_metrics(cameras)
        yield from self._publish_metrics(cameras)
        peers = GaugeMetricFamily("camcast_control_peers", "Peers attached to a camera's control channel",
                                  labels=["camera"])
        yield _per_camera(cameras, peers, lambda c: [([], c.control.peer_count)])
        guard = app.get(TOKEN_GUARD)
        if guard is not None:
            yield CounterMetricFamily("camcast_auth_rejected", "Requests rejected for a missing or "
                                      "wrong token", value=guard.rejected)
            yield CounterMetricFamily("camcast_auth_throttled", "Requests refused with 429: their "
                                      "address kept presenting wrong tokens", value=guard.throttled)
        yield from self._runtime_metrics()

    def _runtime_metrics(self) -> Iterator[Metric]:
        """Threads and asyncio tasks: with process_open_fds and process_resident_memory_bytes, what
        shows a leak (each should return to its baseline once viewers have gone)."""
        yield GaugeMetricFamily("camcast_threads", "Threads in the process", value=threading.active_count())
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped outside the event loop: there is no task to count
            return
        yield GaugeMetricFamily("camcast_asyncio_tasks", "Unfinished asyncio tasks on the event loop",
                                value=tasks)

    def _camera_metrics(self, cameras: list[Camera]) -> Iterator[Metric]:
        c = ["camera"]
        yield _per_camera(cameras, GaugeMetricFamily(
            "camcast_uptime_seconds", "Seconds since the camera started", labels=c),
            lambda cam: [([], cam.uptime())])
        yield _per_camera(cameras, GaugeMetricFamily(
            "camcast_source_up", "1 while the source delivers frames", labels=c),
            lambda cam: [([], 1 if cam.source_up else 0)])
        yield _per_camera(cameras, GaugeMetricFamily(
            "camcast_source_idle", "1 while an on-demand camera's source is closed (nobody watching)",
            labels=c), lambda cam: [([], 1 if cam.capture.idle else 0)])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_source_opens", "Times the source was opened (on-demand cameras reopen it)",
            labels=c), lambda cam: [([], cam.capture.opens)])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_source_reconnects", "Times the source was lost", labels=c),
            lambda cam: [([], cam.capture.reconnects)])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_frames_captured", "Frames read from the source", labels=c),
            lambda cam: [([], cam.frames_captured)])
        yield _per_camera(cameras, GaugeMetricFamily(
            "camcast_capture_fps", "Measured capture frame rate", labels=c),
            lambda cam: [([], cam.fps_meter.fps if cam.supervisor else 0.0)])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_mjpeg_frames_skipped", "Frames MJPEG clients skipped because their socket was "
            "still busy", labels=c), lambda cam: [([], cam.mjpeg.dropped)])
        yield _per_camera(cameras, HistogramMetricFamily(
            "camcast_display_latency_seconds", "Capture-to-display latency reported by players",
            labels=c), lambda cam: [([], cam.latency.histogram.snapshot())])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_latency_reports_rejected", "Latency reports that were not a sane number",
            labels=c), lambda cam: [([], cam.latency.rejected)])
        modes = ("passthrough", "jpeg passthrough", "encode", "starting")
        yield _per_camera(cameras, GaugeMetricFamily(
            "camcast_source_mode", "1 for what the camera's video path does now: its own H.264 or JPEGs "
            "passed through, or decoded pictures encoded", labels=[*c, "mode"]),
            lambda cam: [([m], int(cam.passthrough.mode == m)) for m in modes])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_passthrough_units", "H.264 access units and JPEGs passed on as the camera sent them",
            labels=[*c, "kind"]),
            lambda cam: [(["h264"], cam.passthrough.packets_relayed),
                         (["jpeg"], cam.passthrough.jpegs_relayed)])

    def _encoder_metrics(self, cameras: list[Camera]) -> Iterator[Metric]:
        ce = ["camera", "encoder"]

        def encoders(cam: Camera) -> list[tuple[str, Any]]:
            return [("jpeg", cam.jpeg_encoder), *cam.mjpeg_variants.encoders(),
                    *((e.name, e) for e in cam.all_video_encoders)]

        yield _per_camera(cameras, GaugeMetricFamily(
            "camcast_encoder_running", "1 while the shared encoder runs", labels=ce),
            lambda cam: [([k], 1 if e.running else 0) for k, e in encoders(cam)])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_frames_encoded", "Frames encoded", labels=ce),
            lambda cam: [([k], e.frames_encoded) for k, e in encoders(cam)])
        yield _per_camera(cameras, HistogramMetricFamily(
            "camcast_encode_seconds", "Time to encode one frame", labels=ce),
            lambda cam: [([k], e.encode_time.snapshot()) for k, e in encoders(cam)])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_keyframes", "Keyframes produced", labels=ce),
            lambda cam: [([e.name], e.keyframes) for e in cam.all_video_encoders])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_encoder_errors", "Encoder errors (each restarts it)", labels=ce),
            lambda cam: [([e.name], e.errors) for e in cam.all_video_encoders])

        def hubs(cam: Camera) -> list[Any]:
            return [cam.frames, cam.jpeg, *cam.mjpeg_variants.hubs(),
                    *(o.packets for outs in cam.renditions.values() for o in outs)]

        ch = ["camera", "hub"]
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_hub_dropped", "Items dropped for slow subscribers, per hub", labels=ch),
            lambda cam: [([h.name], h.dropped) for h in hubs(cam)])
        yield _per_camera(cameras, GaugeMetricFamily(
            "camcast_hub_subscribers", "Subscribers per hub", labels=ch),
            lambda cam: [([h.name], h.subscriber_count) for h in hubs(cam)])

    def _viewer_metrics(self, cameras: list[Camera]) -> Iterator[Metric]:
        def on_rendition(cam: Camera) -> list[tuple[list[str], int]]:
            counts = Counter({r.name: 0 for r in cam.ladder})
            for peer in self._app[PEERS].peers_of(cam):
                counts.update(peer.renditions_of(cam))
            return [([name], n) for name, n in counts.items()]

        yield _per_camera(cameras, GaugeMetricFamily(
            "camcast_rendition_viewers", "WebRTC viewers on each rendition", labels=["camera", "rendition"]),
            on_rendition)
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_rendition_switches", "Viewers moved between renditions to match their link",
            labels=["camera", "direction"]),
            lambda cam: [([d], cam.switches[d]) for d in ("down", "up")])
        ck = ["camera", "kind"]
        yield _per_camera(cameras, GaugeMetricFamily(
            "camcast_viewers", "Viewers watching now, by kind", labels=ck),
            lambda cam: [([k], n) for k, n in cam.viewers.by_kind().items()])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_viewers_joined", "Viewers that connected, by kind", labels=ck),
            lambda cam: [([k], n) for k, n in cam.viewers.total.items()])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_bytes_sent", "Bytes sent to viewers, by kind", labels=ck),
            lambda cam: [([k], n) for k, n in cam.viewers.bytes_sent.items()])

    def _recording_metrics(self, cameras: list[Camera]) -> Iterator[Metric]:
        c = ["camera"]
        yield _per_camera(cameras, GaugeMetricFamily(
            "camcast_recording", "1 while recording", labels=c),
            lambda cam: [([], 1 if cam.recorder.recording else 0)])
        # The writer thread updates the open file's size as it writes: live, read without blocking.
        yield _per_camera(cameras, GaugeMetricFamily(
            "camcast_recording_bytes", "Bytes written to the file being recorded (0 when stopped)",
            labels=c), lambda cam: [([], sum(size for _, _, size in cam.recorder.active_files().values()))])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_recording_files", "Recording files opened (segments included)", labels=c),
            lambda cam: [([], cam.recorder.files_written)])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_recorder_dropped", "Packets the recorder lost (each waits for a keyframe)",
            labels=c), lambda cam: [([], cam.recorder.dropped)])


    def _motion_metrics(self, cameras: list[Camera]) -> Iterator[Metric]:
        c = ["camera"]
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_motion_events", "Motion events that started", labels=c),
            lambda cam: [([], cam.motion.events_total)])
        yield _per_camera(cameras, GaugeMetricFamily(
            "camcast_motion_active", "1 during a motion event", labels=c),
            lambda cam: [([], int(cam.motion.active))])
        yield _per_camera(cameras, GaugeMetricFamily(
            "camcast_motion_score", "Percent of the picture moving in the latest motion sample", labels=c),
            lambda cam: [([], cam.motion.score)])

    def _publish_metrics(self, cameras: list[Camera]) -> Iterator[Metric]:
        """Per WHIP target (its URL without credentials or query)."""
        ct = ["camera", "target"]
        yield _per_camera(cameras, GaugeMetricFamily(
            "camcast_publish_state", "1 for the state each WHIP target is in", labels=[*ct, "state"]),
            lambda cam: [([p.shown, s], int(p.state == s)) for p in cam.publishers for s in WHIP_STATES])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_publish_retries", "Times publishing to a WHIP target started again", labels=ct),
            lambda cam: [([p.shown], p.retries) for p in cam.publishers])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_publish_sessions", "WHIP sessions that reached publishing", labels=ct),
            lambda cam: [([p.shown], p.sessions) for p in cam.publishers])
        yield _per_camera(cameras, CounterMetricFamily(
            "camcast_publish_bytes_sent", "Video bytes sent to a WHIP target", labels=ct),
            lambda cam: [([p.shown], p.bytes_sent) for p in cam.publishers])


class AppMetrics:
    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PipelineCollector(app))
        ProcessCollector(registry=self.registry)  # process_open_fds, process_resident_memory_bytes, ...


async def metrics_handler(request: web.Request) -> web.Response:
    # Scraping reads loop-owned state, so it runs on the loop; it is a few microseconds of work.
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


def add_metrics(app: web.Application) -> AppMetrics:
    """GET /metrics (the players' latency reports are kept by each camera)."""
    metrics = AppMetrics(app)
    app[METRICS] = metrics
    app.router.add_get("/metrics", metrics_handler)
    return metrics
