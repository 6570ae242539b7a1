"""GET /metrics in Prometheus text format, read from the live pipeline at scrape time.

Each app has its own CollectorRegistry with one custom collector: the pipeline keeps plain
counters (and bucket histograms) and never knows about Prometheus. The capture-to-display
latency the players report over the data channel (`{"type":"latency","ms":N}`) is kept here.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
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
from camcast.appkeys import CONTROL, STREAM
from camcast.auth import TOKEN_GUARD
from camcast.control import ControlError, Message, finite_number
from camcast.histogram import LATENCY_SECONDS_BUCKETS, Histogram, HistogramSnapshot
from camcast.mjpeg import MJPEG
from camcast.recorder import RECORDER, Recorder
from camcast.stream import Stream

MAX_LATENCY_MS = 60_000.0  # more than a minute is a broken clock, not a latency


class DisplayLatency:
    """The players' reports: a histogram of accepted values and a count of rejected ones."""

    def __init__(self) -> None:
        self.histogram = Histogram(LATENCY_SECONDS_BUCKETS)
        self.rejected = 0

    async def handle(self, message: Message, sender: str) -> Message | None:
        ms = finite_number(message, "ms")
        if ms is None:
            self.rejected += 1
            raise ControlError("latency needs a number 'ms'")
        if not 0 <= ms <= MAX_LATENCY_MS:
            # A client whose clock is off reports nonsense: keep it out of the histogram.
            self.rejected += 1
            raise ControlError(f"latency ms must be 0..{MAX_LATENCY_MS:g}")
        self.histogram.observe(ms / 1000.0)
        return None


def _histogram(family: HistogramMetricFamily, labels: list[str], snap: HistogramSnapshot) -> None:
    buckets = [("+Inf" if math.isinf(bound) else repr(bound), count) for bound, count in snap.buckets]
    family.add_metric(labels, buckets, snap.sum)


class PipelineCollector(Collector):
    """Reads the stream, encoders, hubs and viewers of one app whenever Prometheus scrapes."""

    def __init__(self, app: web.Application, latency: DisplayLatency) -> None:
        self._app = app
        self._latency = latency

    def describe(self) -> list[Metric]:
        return []  # no up-front collect: the app may not be running when the registry is built

    def collect(self) -> Iterator[Metric]:
        app = self._app
        stream = app[STREAM]
        info = InfoMetricFamily("camcast_build", "camcast version")
        info.add_metric([], {"version": __version__})
        yield info
        yield from self._stream_metrics(stream)
        fanout = app.get(MJPEG)
        if fanout is not None:
            skipped = CounterMetricFamily("camcast_mjpeg_frames_skipped", "Frames MJPEG clients "
                                          "skipped because their socket was still busy",
                                          labels=["stream"])
            skipped.add_metric([stream.settings.name], fanout.dropped)
            yield skipped
        recorder = app.get(RECORDER)
        if recorder is not None:
            yield from self._recording_metrics(stream.settings.name, recorder)
        peers = GaugeMetricFamily("camcast_control_peers", "Peers attached to the control channel")
        peers.add_metric([], app[CONTROL].peer_count)
        yield peers
        guard = app.get(TOKEN_GUARD)
        if guard is not None:
            yield CounterMetricFamily("camcast_auth_rejected", "Requests rejected for a missing or "
                                      "wrong token", value=guard.rejected)
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

    def _stream_metrics(self, stream: Stream) -> Iterator[Metric]:
        name = stream.settings.name
        capture = stream.capture
        s = ["stream"]

        uptime = GaugeMetricFamily("camcast_uptime_seconds", "Seconds since the stream started", labels=s)
        uptime.add_metric([name], stream.uptime())
        up = GaugeMetricFamily("camcast_source_up", "1 while the source delivers frames", labels=s)
        up.add_metric([name], 1 if stream.source_up else 0)
        reconnects = CounterMetricFamily("camcast_source_reconnects", "Times the source was lost",
                                         labels=s)
        reconnects.add_metric([name], capture.reconnects if capture else 0)
        captured = CounterMetricFamily("camcast_frames_captured", "Frames read from the source", labels=s)
        captured.add_metric([name], capture.frames_captured if capture else 0)
        fps = GaugeMetricFamily("camcast_capture_fps", "Measured capture frame rate", labels=s)
        fps.add_metric([name], stream.fps_meter.fps)
        yield from (uptime, up, reconnects, captured, fps)

        se = ["stream", "encoder"]
        running = GaugeMetricFamily("camcast_encoder_running", "1 while the shared encoder runs", labels=se)
        encoded = CounterMetricFamily("camcast_frames_encoded", "Frames encoded", labels=se)
        encode_time = HistogramMetricFamily("camcast_encode_seconds", "Time to encode one frame",
                                            labels=se)
        keyframes = CounterMetricFamily("camcast_keyframes", "Keyframes produced", labels=se)
        errors = CounterMetricFamily("camcast_encoder_errors", "Encoder errors (each restarts it)",
                                     labels=se)
        encoders: dict[str, Any] = {"jpeg": stream.jpeg_encoder, **stream.video_encoders}
        for codec, encoder in encoders.items():
            running.add_metric([name, codec], 1 if encoder.running else 0)
            encoded.add_metric([name, codec], encoder.frames_encoded)
            _histogram(encode_time, [name, codec], encoder.encode_time.snapshot())
            if codec != "jpeg":
                keyframes.add_metric([name, codec], encoder.keyframes)
                errors.add_metric([name, codec], encoder.errors)
        yield from (running, encoded, encode_time, keyframes, errors)

        hubs = [stream.frames, stream.jpeg, *stream.packets.values()]
        dropped = CounterMetricFamily("camcast_hub_dropped", "Items dropped for slow subscribers, "
                                      "per hub", labels=["stream", "hub"])
        subscribers = GaugeMetricFamily("camcast_hub_subscribers", "Subscribers per hub",
                                        labels=["stream", "hub"])
        for hub in hubs:
            dropped.add_metric([name, hub.name], hub.dropped)
            subscribers.add_metric([name, hub.name], hub.subscriber_count)
        yield from (dropped, subscribers)

        sk = ["stream", "kind"]
        viewers = GaugeMetricFamily("camcast_viewers", "Viewers watching now, by kind", labels=sk)
        for kind, count in stream.viewers.by_kind().items():
            viewers.add_metric([name, kind], count)
        joined = CounterMetricFamily("camcast_viewers_joined", "Viewers that connected, by kind",
                                     labels=sk)
        for kind, count in stream.viewers.total.items():
            joined.add_metric([name, kind], count)
        sent = CounterMetricFamily("camcast_bytes_sent", "Bytes sent to viewers, by kind", labels=sk)
        for kind, count in stream.viewers.bytes_sent.items():
            sent.add_metric([name, kind], count)
        yield from (viewers, joined, sent)

        latency = HistogramMetricFamily("camcast_display_latency_seconds",
                                        "Capture-to-display latency reported by players", labels=s)
        _histogram(latency, [name], self._latency.histogram.snapshot())
        rejected = CounterMetricFamily("camcast_latency_reports_rejected",
                                       "Latency reports that were not a sane number", labels=s)
        rejected.add_metric([name], self._latency.rejected)
        yield from (latency, rejected)

    def _recording_metrics(self, name: str, recorder: Recorder) -> Iterator[Metric]:
        s = ["stream"]
        recording = GaugeMetricFamily("camcast_recording", "1 while recording", labels=s)
        recording.add_metric([name], 1 if recorder.recording else 0)
        # The writer thread updates the open file's size as it writes: live, read without blocking.
        written = GaugeMetricFamily("camcast_recording_bytes", "Bytes written to the file being "
                                    "recorded (0 when stopped)", labels=s)
        written.add_metric([name], sum(size for _, _, size in recorder.active_files().values()))
        files = CounterMetricFamily("camcast_recording_files", "Recording files opened (segments "
                                    "included)", labels=s)
        files.add_metric([name], recorder.files_written)
        dropped = CounterMetricFamily("camcast_recorder_dropped", "Packets the recorder lost (each "
                                      "waits for a keyframe)", labels=s)
        dropped.add_metric([name], recorder.dropped)
        yield from (recording, written, files, dropped)


class AppMetrics:
    def __init__(self, app: web.Application) -> None:
        self.latency = DisplayLatency()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PipelineCollector(app, self.latency))
        ProcessCollector(registry=self.registry)  # process_open_fds, process_resident_memory_bytes, ...


METRICS = web.AppKey("metrics", AppMetrics)


async def metrics_handler(request: web.Request) -> web.Response:
    # Scraping reads loop-owned state, so it runs on the loop; it is a few microseconds of work.
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


def add_metrics(app: web.Application) -> AppMetrics:
    """GET /metrics, and the data channel's "latency" messages feeding its histogram."""
    metrics = AppMetrics(app)
    app[METRICS] = metrics
    app[CONTROL].register("latency", metrics.latency.handle)
    app.router.add_get("/metrics", metrics_handler)
    return metrics
