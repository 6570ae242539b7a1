"""MJPEG variants for slow links: `?width=W` and `?quality=Q`, each encoded once for all who ask.

A variant is a camera's MJPEG scaled down and/or at another JPEG quality. Each one has its own
shared encoder, JPEG hub and fan-out, exactly like the camera's default stream, so ten clients of
`?width=320` cost one encode per frame. A variant starts with its first client and is forgotten a
little after its last one leaves. Widths and qualities snap to a few steps and a camera keeps at
most MAX_VARIANTS of them, so no client can make the server run unbounded encoders.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from aiohttp import web

from camcast.encoding.jpeg import SharedJpegEncoder
from camcast.frames import Frame, JpegPart
from camcast.hub import Hub
from camcast.queryargs import float_arg

log = logging.getLogger("camcast.mjpeg")

WIDTHS = (160, 240, 320, 480, 640, 800, 960, 1280, 1600, 1920, 2560, 3840)
QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
MAX_WIDTH_ARG = 16384
MAX_VARIANTS = 8  # live per camera: each one is an encoder thread while it has clients
# Longer than the encoder's own linger (2 s): a client that reconnects at once finds its variant.
FORGET_AFTER = 3.0


@dataclass(frozen=True, slots=True)
class VariantKey:
    width: int  # the most a frame may be wide (the capture's width keeps the full size)
    quality: int

    @property
    def name(self) -> str:
        """Its label in /api/status and /metrics (`encoder="jpeg-320q50"`)."""
        return f"jpeg-{self.width}q{self.quality}"


def snap_width(width: float, capture_width: int) -> int:
    """The largest step not wider than asked (at least the smallest); the capture's own width when
    the request is as wide or wider, since a variant never enlarges."""
    if width >= capture_width:
        return capture_width
    index = bisect.bisect_right(WIDTHS, width)
    return min(WIDTHS[max(index - 1, 0)], capture_width)


def snap_quality(quality: float) -> int:
    return min(QUALITIES, key=lambda step: (abs(step - quality), step))


def requested_variant(request: web.Request, capture_width: int, default_quality: int) -> VariantKey | None:
    """The variant that `?width=` and `?quality=` ask for (400 on a bad value); None for the
    camera's own stream, which is also what a request that snaps back to it gets."""
    width = float_arg(request, "width", 1, MAX_WIDTH_ARG)
    quality = float_arg(request, "quality", 1, 100)
    if width is None and quality is None:
        return None
    key = VariantKey(capture_width if width is None else snap_width(width, capture_width),
                     default_quality if quality is None else snap_quality(quality))
    return None if key == VariantKey(capture_width, default_quality) else key


class VariantUnavailable(Exception):
    """No variant can be started now (the camera has its maximum, or it is shutting down)."""


class Fanout(Protocol):
    """What a variant needs of its MJPEG fan-out (camcast.mjpeg.MjpegFanout)."""

    @property
    def client_count(self) -> int: ...

    async def close(self) -> None: ...


F = TypeVar("F", bound=Fanout)


class MjpegVariant(Generic[F]):
    """One variant: its shared encoder, the hub of its JPEGs and the fan-out to its clients."""

    def __init__(self, key: VariantKey, frames: Hub[Frame],
                 make_fanout: Callable[[Hub[JpegPart]], F]) -> None:
        self.key = key
        self.jpeg: Hub[JpegPart] = Hub(key.name)
        self.encoder = SharedJpegEncoder(frames, self.jpeg, key.quality, width=key.width, name=key.name)
        self.fanout = make_fanout(self.jpeg)
        self.users = 0  # MJPEG clients and snapshots in flight
        self.forget_timer: asyncio.TimerHandle | None = None

    def status(self) -> dict[str, object]:
        return {"name": self.key.name, "width": self.key.width, "quality": self.key.quality,
                "clients": self.fanout.client_count, "encoding": self.encoder.running,
                "frames_encoded": self.encoder.frames_encoded}

    async def close(self) -> None:
        await self.fanout.close()  # its endless responses end; their handlers return
        await self.encoder.close()
        self.jpeg.close()


class MjpegVariants(Generic[F]):
    """A camera's live variants, created on demand and forgotten when nobody uses them."""

    def __init__(self, frames: Hub[Frame], make_fanout: Callable[[Hub[JpegPart]], F],
                 limit: int = MAX_VARIANTS, forget_after: float = FORGET_AFTER) -> None:
        self._frames = frames
        self._make_fanout = make_fanout
        self._limit = limit
        self._forget_after = forget_after
        self._live: dict[VariantKey, MjpegVariant[F]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    @contextlib.contextmanager
    def lease(self, key: VariantKey) -> Iterator[MjpegVariant[F]]:
        """The variant `key` for as long as the block runs (raises VariantUnavailable)."""
        variant = self._get(key)
        variant.users += 1
        if variant.forget_timer is not None:
            variant.forget_timer.cancel()
            variant.forget_timer = None
        try:
            yield variant
        finally:
            variant.users -= 1
            if variant.users == 0 and not self._closed and self._live.get(key) is variant:
                variant.forget_timer = asyncio.get_running_loop().call_later(
                    self._forget_after, self._forget, variant)

    def _get(self, key: VariantKey) -> MjpegVariant[F]:
        if self._closed:
            raise VariantUnavailable("the camera is shutting down")
        variant = self._live.get(key)
        if variant is not None:
            return variant
        if len(self._live) >= self._limit:
            unused = next((v for v in self._live.values() if v.users == 0), None)
            if unused is None:
                live = ", ".join(k.name for k in self._live)
                raise VariantUnavailable(
                    f"this camera already serves {self._limit} MJPEG variants ({live}); ask for one of "
                    "those, or for the full stream without ?width= and ?quality=")
            self._forget(unused)  # lingering after its last client: make room
        variant = self._live[key] = MjpegVariant(key, self._frames, self._make_fanout)
        log.debug("MJPEG variant %s started", key.name)
        return variant

    def _forget(self, variant: MjpegVariant[F]) -> None:
        if variant.forget_timer is not None:
            variant.forget_timer.cancel()
            variant.forget_timer = None
        if variant.users or self._live.get(variant.key) is not variant:
            return
        del self._live[variant.key]
        log.debug("MJPEG variant %s forgotten", variant.key.name)
        task = asyncio.get_running_loop().create_task(variant.close(), name=f"close-{variant.key.name}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- what /api/status and /metrics show ------------------------------------------------------
    def status(self) -> list[dict[str, object]]:
        return [variant.status() for variant in self._live.values()]

    def encoders(self) -> list[tuple[str, SharedJpegEncoder]]:
        return [(variant.key.name, variant.encoder) for variant in self._live.values()]

    def hubs(self) -> list[Hub[JpegPart]]:
        return [variant.jpeg for variant in self._live.values()]

    async def close(self) -> None:
        """End every variant's clients and encoder; no new variant starts afterwards."""
        self._closed = True
        variants, self._live = list(self._live.values()), {}
        for variant in variants:
            if variant.forget_timer is not None:
                variant.forget_timer.cancel()
        await asyncio.gather(*(variant.close() for variant in variants), *self._closing)
