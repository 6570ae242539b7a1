"""A strict multipart/x-mixed-replace parser for an aiohttp response body, and stream statistics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import aiohttp
import cv2
import numpy as np

from camcast.stamp import read_stamp

MJPEG_TYPE = "multipart/x-mixed-replace"


class MjpegError(AssertionError):
    """The stream broke the multipart format."""


@dataclass
class Part:
    headers: dict[str, str]  # lower-case names
    body: bytes
    received_us: int  # wall clock when the last byte arrived
    _image: np.ndarray | None = field(default=None, repr=False)

    @property
    def header_time_us(self) -> int:
        """The X-Timestamp header (capture time, seconds with 6 decimals) in microseconds."""
        return round(float(self.headers["x-timestamp"]) * 1e6)

    def image(self) -> np.ndarray:
        """The decoded BGR picture; raises MjpegError if the body is not a valid JPEG."""
        if self._image is None:
            if not self.body.startswith(b"\xff\xd8") or not self.body.endswith(b"\xff\xd9"):
                raise MjpegError(f"part is not a JPEG (starts {self.body[:4]!r}, ends {self.body[-4:]!r})")
            image = cv2.imdecode(np.frombuffer(self.body, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise MjpegError("part does not decode as a JPEG")
            self._image = image
        return self._image

    def stamp_us(self) -> int:
        return read_stamp(self.image())


def boundary_of(content_type: str) -> str:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != MJPEG_TYPE:
        raise MjpegError(f"Content-Type is {content_type!r}, not {MJPEG_TYPE}")
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and value:
            return value.strip('"')
    raise MjpegError(f"no boundary in {content_type!r}")


class MjpegReader:
    """Read parts one by one: boundary line, headers, Content-Length bytes, CRLF before the next boundary."""

    def __init__(self, content: aiohttp.StreamReader, boundary: str) -> None:
        self._content = content
        self._delimiter = b"--" + boundary.encode()
        self.parts = 0

    async def next_part(self) -> Part | None:
        """The next part, or None when the stream ended cleanly between parts."""
        line = await self._content.readline()
        if not line:
            return None
        line = line.rstrip(b"\r\n")
        if line == self._delimiter + b"--":
            return None
        if line != self._delimiter:
            raise MjpegError(f"expected {self._delimiter!r}, got {line[:80]!r} after {self.parts} parts")
        headers: dict[str, str] = {}
        while True:
            line = await self._content.readline()
            if not line:
                return None  # the server went away between the boundary and the next part
            line = line.rstrip(b"\r\n")
            if not line:
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise MjpegError(f"bad header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise MjpegError(f"part without Content-Length: {headers}")
        body = await self._content.readexactly(int(headers["content-length"]))
        received_us = time.time_ns() // 1000
        end = await self._content.readexactly(2)
        if end != b"\r\n":
            raise MjpegError(f"Content-Length {len(body)} is wrong: body followed by {end!r}")
        self.parts += 1
        return Part(headers, body, received_us)

    def __aiter__(self) -> MjpegReader:
        return self

    async def __anext__(self) -> Part:
        part = await self.next_part()
        if part is None:
            raise StopAsyncIteration
        return part


@contextlib.asynccontextmanager
async def open_mjpeg(session: aiohttp.ClientSession, url: str) -> AsyncIterator[MjpegReader]:
    """GET an MJPEG URL, check the status and Content-Type, and yield a reader of its parts."""
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=10)) as response:
        if response.status != 200:
            raise MjpegError(f"GET {url}: {response.status} {await response.text()}")
        yield MjpegReader(response.content, boundary_of(response.headers["Content-Type"]))


async def collect(reader: MjpegReader, seconds: float, limit: int | None = None,
                  stall: float = 5.0) -> list[Part]:
    """The parts that arrive within `seconds` (or the first `limit` of them).

    Whole parts only, so the reader can be used again afterwards; the first part that
    arrives after the deadline is dropped. A stream that sends nothing for `stall` s fails.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    parts: list[Part] = []
    while limit is None or len(parts) < limit:
        try:
            part = await asyncio.wait_for(reader.next_part(), stall)
        except TimeoutError:
            raise MjpegError(f"no part for {stall:g} s (after {reader.parts} parts)") from None
        if part is None or loop.time() > deadline:
            break
        parts.append(part)
    return parts


def rate_of(times_us: Sequence[int]) -> float:
    """Frames per second over a run of capture (or receive) times."""
    if len(times_us) < 2:
        return 0.0
    return (len(times_us) - 1) / ((times_us[-1] - times_us[0]) / 1e6)


def coverage(times_us: Sequence[int], fps: float) -> float:
    """Share of the source's frames within the span that arrived (1.0: none was skipped)."""
    if len(times_us) < 2:
        return 0.0
    expected = round((times_us[-1] - times_us[0]) / 1e6 * fps) + 1
    return len(set(times_us)) / expected
