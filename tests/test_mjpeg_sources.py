"""JPEG passthrough sources: an HTTP MJPEG camera or snapshot URL, and a UVC camera in MJPG mode.

The HTTP source reads a real aiohttp camera (support.mjpeg_camera) that serves known JPEG bytes
in the many shapes cameras use, and a real camcast; every picture must come out byte for byte
as it was served. The UVC source's byte handling runs on a fake capture (no webcam here).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import cv2
import numpy as np
import pytest
import pytest_asyncio

from camcast.sources.base import SourceError
from camcast.sources.mjpeg_http import HttpMjpegSource, JpegImage
from camcast.sources.multipart_jpeg import MultipartError, MultipartJpegParser, boundary_of
from camcast.sources.uvc_mjpeg import MJPG, UvcMjpegSource
from conftest import StartServer
from support.mjpeg import open_mjpeg
from support.mjpeg_camera import PASSWORD, USER, MjpegCamera, make_jpegs
from support.waiting import eventually
from test_tls import write_self_signed

JPEGS = make_jpegs()


@pytest_asyncio.fixture
async def camera() -> AsyncIterator[MjpegCamera]:
    async with MjpegCamera(JPEGS).running() as cam:
        yield cam


def read_all(source: HttpMjpegSource, limit: int = 50) -> list[bytes]:
    """Open, read until None (or `limit` pictures), close: the pictures' bytes."""
    source.open()
    try:
        pictures = []
        while len(pictures) < limit and (image := source.read()) is not None:
            assert isinstance(image, JpegImage)
            pictures.append(image.data)
        return pictures
    finally:
        source.close()


def cycle(jpegs: list[bytes], count: int) -> list[bytes]:
    return [jpegs[i % len(jpegs)] for i in range(count)]


def decodes(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


# -- multipart streams --------------------------------------------------------------------------

STREAMS = {
    "content-length, a delimiter line inside a JPEG": ("count=8&trap=1", "trap"),
    "no content-length": ("count=6&length=0", ""),
    "wrong content-length": ("count=6&length=wrong", ""),
    "no part headers": ("count=6&headers=0", ""),
    "blank line before the picture, no length": ("count=6&blank=1&length=0", ""),
    "quoted odd boundary": ("count=6&quoted=1&boundary=" + quote("odd boundary='=x+y"), ""),
    "dashes in the header's boundary too": ("count=6&header_dashes=1&length=0", ""),
    "delimiter lines without dashes": ("count=6&bare=1&length=0", ""),
    "no boundary in the content-type": ("count=6&noboundary=1", ""),
}


@pytest.mark.parametrize("query,extra", list(STREAMS.values()), ids=list(STREAMS))
async def test_stream_parts_come_out_byte_identical(camera: MjpegCamera, query: str, extra: str) -> None:
    count = int(query.split("&")[0].removeprefix("count="))
    expected = cycle([camera.trap, *JPEGS] if extra == "trap" else JPEGS, count)
    source = HttpMjpegSource(f"{camera.url}/stream?{query}")
    pictures = await asyncio.to_thread(read_all, source)
    assert source.mode == "stream"
    assert len(pictures) == count, source.last_error
    assert pictures == expected, "bytes differ from what the camera sent"
    assert "stream ended" in source.last_error  # the closing delimiter ends it cleanly
    decodes(pictures[0])


@pytest.mark.parametrize("query", [value[0] for value in STREAMS.values()], ids=list(STREAMS))
async def test_parser_is_indifferent_to_how_the_bytes_are_split(camera: MjpegCamera, query: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{camera.url}/stream?{query}") as response:
        content_type, body = response.headers["Content-Type"], await response.read()
    whole = MultipartJpegParser(boundary_of(content_type))
    whole.feed(body)
    expected = list(iter(whole.next_jpeg, None))
    assert expected and whole.ended
    rng = random.Random(1)
    for _ in range(3):
        parser, pictures, pos = MultipartJpegParser(boundary_of(content_type)), [], 0
        while pos < len(body):
            step = rng.choice((1, 2, 3, 7, 64, 1500))
            parser.feed(body[pos : pos + step])
            pos += step
            pictures.extend(iter(parser.next_jpeg, None))
        assert pictures == expected


async def test_old_http10_camera_without_chunks_or_closing_delimiter(camera: MjpegCamera) -> None:
    # boundary=--myboundary in the header, "--myboundary" lines, and the connection simply closes.
    source = HttpMjpegSource(f"{camera.raw_url}/video.cgi?count=4")
    pictures = await asyncio.to_thread(read_all, source)
    assert pictures == cycle(JPEGS, 4)
    assert "stream ended" in source.last_error


async def test_redirect_is_followed(camera: MjpegCamera) -> None:
    source = HttpMjpegSource(f"{camera.url}/redirect?count=3")
    assert await asyncio.to_thread(read_all, source) == cycle(JPEGS, 3)


# -- snapshot URLs ------------------------------------------------------------------------------

async def test_snapshot_url_is_fetched_again_at_fps(camera: MjpegCamera) -> None:
    source = HttpMjpegSource(f"{camera.url}/snapshot.jpg", fps=20)
    started = time.monotonic()
    pictures = await asyncio.to_thread(read_all, source, 5)
    elapsed = time.monotonic() - started
    assert source.mode == "snapshot"
    assert pictures == cycle(JPEGS, 5)
    assert camera.snapshot_hits == 5, "one GET per picture"
    assert elapsed >= 4 / 20 * 0.9, f"5 pictures at 20 fps took only {elapsed:.3f} s"


# -- credentials --------------------------------------------------------------------------------

def private_url(camera: MjpegCamera, path: str, user: str = USER, password: str = PASSWORD) -> str:
    host = camera.url.removeprefix("http://")
    return f"http://{quote(user, safe='')}:{quote(password, safe='')}@{host}{path}"


async def test_basic_auth_from_the_url(camera: MjpegCamera) -> None:
    stream = HttpMjpegSource(private_url(camera, "/private/stream?count=3"))
    assert await asyncio.to_thread(read_all, stream) == cycle(JPEGS, 3)
    redirected = HttpMjpegSource(private_url(camera, "/private/redirect?count=2"))
    assert await asyncio.to_thread(read_all, redirected) == cycle(JPEGS, 2), "credentials kept on one host"
    snapshot = HttpMjpegSource(private_url(camera, "/private/snapshot.jpg"), fps=50)
    assert await asyncio.to_thread(read_all, snapshot, 2) == cycle(JPEGS, 2)
    assert "p%40ss" not in stream.description and "***" in stream.description


@pytest.mark.parametrize("credentials", ["none", "wrong"])
async def test_unauthorized_says_so(camera: MjpegCamera, credentials: str) -> None:
    url = (f"{camera.url}/private/stream" if credentials == "none"
           else private_url(camera, "/private/stream", password="guess"))
    source = HttpMjpegSource(url)
    with pytest.raises(SourceError) as error:
        await asyncio.to_thread(source.open)
    source.close()
    message = str(error.value)
    assert message.startswith(f"{source.description}: 401 Unauthorized"), message
    assert ("USER:PASSWORD@" in message) if credentials == "none" else ("refused" in message)
    assert "guess" not in message


async def test_digest_only_camera_is_named(camera: MjpegCamera) -> None:
    with pytest.raises(SourceError, match=r"401 Unauthorized \(the camera asks for Digest"):
        await asyncio.to_thread(HttpMjpegSource(f"{camera.url}/digest").open)


# -- errors -------------------------------------------------------------------------------------

async def test_open_errors_are_clear(camera: MjpegCamera) -> None:
    cases = {
        f"{camera.url}/nothing": rf"^{camera.url}/nothing: 404 Not Found$",
        f"{camera.url}/html": r": Content-Type 'text/html' is neither an MJPEG stream",
        "rtsp://127.0.0.1/x": r"not an http:// or https:// URL",
    }
    for url, pattern in cases.items():
        with pytest.raises(SourceError, match=pattern):
            await asyncio.to_thread(HttpMjpegSource(url).open)
    with socket_that_refuses() as port, pytest.raises(SourceError, match=r"cannot connect"):
        await asyncio.to_thread(HttpMjpegSource(f"http://127.0.0.1:{port}/").open)


@contextlib.contextmanager
def socket_that_refuses() -> Iterator[int]:
    """A loopback port with nothing listening on it (bound, never listened on)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_parts_that_are_not_jpegs_end_the_stream(camera: MjpegCamera) -> None:
    source = HttpMjpegSource(f"{camera.url}/notjpeg")
    assert await asyncio.to_thread(read_all, source) == []
    assert "part 1 is not a JPEG (starts with b'\\x89PNG" in source.last_error


async def test_a_part_that_never_ends_is_bounded(camera: MjpegCamera) -> None:
    source = HttpMjpegSource(f"{camera.url}/endless", max_part=256 * 1024)
    assert await asyncio.to_thread(read_all, source) == []
    assert "part without a boundary" in source.last_error and "limit 262144" in source.last_error


def test_parser_rejects_oversized_content_length() -> None:
    parser = MultipartJpegParser("b", max_part=1000)
    parser.feed(b"--b\r\nContent-Length: 5000\r\n\r\n\xff\xd8")
    with pytest.raises(MultipartError, match="larger than the limit of 1000"):
        parser.next_jpeg()


# -- a camera that stalls, and close() ----------------------------------------------------------

async def test_stalled_camera_read_returns_none_within_the_timeout(camera: MjpegCamera) -> None:
    source = HttpMjpegSource(f"{camera.url}/stall", timeout=0.5)
    await asyncio.to_thread(source.open)
    started = time.monotonic()
    assert await asyncio.wait_for(asyncio.to_thread(source.read), 5) is None
    assert time.monotonic() - started < 3, "read() returned long after its timeout"
    assert "nothing received for 0.5 s" in source.last_error
    source.close()
    source.close()  # idempotent


async def test_silent_camera_fails_open_within_the_timeout(camera: MjpegCamera) -> None:
    with pytest.raises(SourceError, match=r"/silent: no answer within 0.5 s"):
        source = HttpMjpegSource(f"{camera.url}/silent", timeout=0.5)
        await asyncio.wait_for(asyncio.to_thread(source.open), 5)


async def blocked_read_is_ended_by_close(source: HttpMjpegSource, blocked: Callable[[], bool]) -> None:
    """Start read() in a thread, wait until it blocks, close() from here: it returns None at once."""
    done = threading.Event()
    result: list[Any] = []

    def reader() -> None:
        result.append(source.read())
        done.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    await eventually(blocked, 5, "read() to block")
    assert not done.is_set(), "read() returned before close()"
    closed_at = time.monotonic()
    await asyncio.to_thread(source.close)
    await eventually(done.is_set, 3, "read() to return after close()")
    assert time.monotonic() - closed_at < 3 < source.timeout
    assert result == [None] and source.last_error == ""
    assert source.read() is None


async def test_close_from_another_thread_unblocks_a_stream_read(camera: MjpegCamera) -> None:
    source = HttpMjpegSource(f"{camera.url}/stall", timeout=30)
    await asyncio.to_thread(source.open)
    # Blocked: the half picture is in the parser's buffer and the socket waits for the rest.
    await blocked_read_is_ended_by_close(source, lambda: source._io.locked() and source._parser is not None
                                         and source._parser.buffered > 1000)


async def test_close_from_another_thread_unblocks_a_snapshot_wait(camera: MjpegCamera) -> None:
    source = HttpMjpegSource(f"{camera.url}/snapshot.jpg", fps=0.05, timeout=30)  # 20 s apart
    await asyncio.to_thread(source.open)
    assert (await asyncio.to_thread(source.read)) == JpegImage(JPEGS[0])
    await blocked_read_is_ended_by_close(source, source._io.locked)  # read() holds it while it waits
    assert camera.snapshot_hits == 1


# -- https --------------------------------------------------------------------------------------

async def test_https_camera(tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    async with MjpegCamera(JPEGS).running(ssl_context=server_tls) as cam:
        trusted = ssl.create_default_context(cafile=str(cert))
        source = HttpMjpegSource(f"{cam.url}/stream?count=3", ssl_context=trusted)
        assert await asyncio.to_thread(read_all, source) == cycle(JPEGS, 3)
        with pytest.raises(SourceError, match=r"TLS failed: CERTIFICATE_VERIFY_FAILED"):
            await asyncio.to_thread(HttpMjpegSource(f"{cam.url}/stream?count=3").open)


# -- a real camcast -----------------------------------------------------------------------------

async def test_reads_a_real_camcast_like_a_plain_client(start_server: StartServer,
                                                        http: aiohttp.ClientSession) -> None:
    server = start_server("--size", "320x240", "--fps", "15")
    seen: list[bytes] = []
    async with open_mjpeg(http, server.url + "video.mjpg") as plain:

        async def follow() -> None:
            async for part in plain:
                seen.append(part.body)

        following = asyncio.create_task(follow())
        try:
            await eventually(lambda: seen, 10, "the plain client's first frame")
            source = HttpMjpegSource(server.url + "video.mjpg")
            pictures = await asyncio.to_thread(read_all, source, 8)
            after = len(seen)
            await eventually(lambda: len(seen) >= after + 2, 10, "two more frames for the plain client")
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
    assert len(pictures) == 8, source.last_error
    # The same frames through the same fan-out: byte for byte what the plain client got.
    assert all(picture in seen for picture in pictures), "a picture no plain client was sent"
    assert len(set(pictures)) == 8, "every picture a new frame"
    assert all(decodes(p).shape == (240, 320, 3) for p in pictures)
    snapshot = HttpMjpegSource(server.url + "snapshot.jpg", fps=10)
    shots = await asyncio.to_thread(read_all, snapshot, 2)
    # (Whether two shots differ depends on the server's capture keeping pace: not asserted here.)
    assert [decodes(p).shape for p in shots] == [(240, 320, 3)] * 2


# -- UVC in MJPG mode (a fake capture: there is no webcam here) ---------------------------------

class FakeCapture:
    """cv2.VideoCapture as the V4L2 backend behaves with CONVERT_RGB off: buffers of bytes."""

    def __init__(self, frames: list[Any], fourcc: int = MJPG, opened: bool = True,
                 size: tuple[int, int] = (640, 480)) -> None:
        self.frames = list(frames)
        self.props: dict[int, float] = {cv2.CAP_PROP_FOURCC: fourcc}
        self.opened = opened
        self.size = size
        self.released = 0
        self.gate: threading.Event | None = None  # when set up, read() waits for it
        self.in_read = threading.Event()

    def isOpened(self) -> bool:
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        if prop != cv2.CAP_PROP_FOURCC:  # the device keeps the format it has
            self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        sizes = {cv2.CAP_PROP_FRAME_WIDTH: self.size[0], cv2.CAP_PROP_FRAME_HEIGHT: self.size[1]}
        return sizes.get(prop, self.props.get(prop, 0.0))

    def read(self) -> tuple[bool, Any]:
        self.in_read.set()
        if self.gate is not None:
            self.gate.wait(10)
        if not self.frames:
            return False, None
        return True, self.frames.pop(0)

    def release(self) -> None:
        self.released += 1


def as_buffer(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.uint8).reshape(1, -1).copy()  # the shape V4L2 hands back


def uvc(fake: FakeCapture, device: str = "/dev/video0") -> UvcMjpegSource:
    return UvcMjpegSource(device, 640, 480, 30, open_capture=lambda _device: fake)


def test_uvc_passes_the_cameras_jpegs_through() -> None:
    padded = JPEGS[2] + b"\x00" * 4096  # drivers may report the whole, zero-filled buffer
    fake = FakeCapture([as_buffer(JPEGS[0]), as_buffer(JPEGS[1]), as_buffer(padded)])
    opened: list[str | int] = []
    source = UvcMjpegSource("2", 640, 480, 30, open_capture=lambda device: opened.append(device) or fake)
    source.open()
    assert opened == [2], "a digit string is a camera index"
    assert fake.props[cv2.CAP_PROP_CONVERT_RGB] == 0, "the compressed buffer, not a decoded picture"
    assert (fake.props[cv2.CAP_PROP_FRAME_WIDTH], fake.props[cv2.CAP_PROP_FRAME_HEIGHT]) == (640, 480)
    assert source.description == "2 (MJPG 640x480)" and source.stamps is False
    pictures = [source.read() for _ in range(3)]
    assert pictures == [JpegImage(JPEGS[0]), JpegImage(JPEGS[1]), JpegImage(JPEGS[2])]
    assert source.read() is None and "read failed" in source.last_error
    source.close()
    source.close()
    assert fake.released == 1 and source.read() is None


def test_uvc_without_mjpg_at_that_size_is_a_clear_error() -> None:
    yuyv = np.full((1, 640 * 480 * 2), 0x80, np.uint8)
    decoded = np.zeros((480, 640, 3), np.uint8)  # a backend that decoded anyway
    for fake, detail in [(FakeCapture([yuyv]), "its frames are not JPEGs"),
                         (FakeCapture([decoded]), "its frames are not JPEGs"),
                         (FakeCapture([], fourcc=cv2.VideoWriter.fourcc(*"YUYV")), "it delivers YUYV")]:
        with pytest.raises(SourceError, match=rf"/dev/video0 does not do MJPG at 640x480.*{detail}"):
            uvc(fake).open()
        assert fake.released == 1


def test_uvc_open_failures() -> None:
    with pytest.raises(SourceError, match=r"cannot open /dev/video0"):
        uvc(FakeCapture([], opened=False)).open()
    with pytest.raises(SourceError, match=r"opened but gave no frame"):
        uvc(FakeCapture([])).open()
    # The real V4L2 backend on a device that does not exist.
    with pytest.raises(SourceError, match=r"cannot open /dev/video-none"):
        UvcMjpegSource("/dev/video-none", 640, 480, 30).open()


def test_uvc_non_jpeg_frame_later_ends_the_stream() -> None:
    source = uvc(FakeCapture([as_buffer(JPEGS[0]), as_buffer(b"\x00\x01garbage")]))
    source.open()
    assert source.read() == JpegImage(JPEGS[0])
    assert source.read() is None and "not a JPEG" in source.last_error
    source.close()


async def test_uvc_close_during_a_read_releases_when_the_read_returns() -> None:
    fake = FakeCapture([as_buffer(JPEGS[0]), as_buffer(JPEGS[1])])
    source = uvc(fake)
    source.open()
    assert source.read() == JpegImage(JPEGS[0])  # the frame open() checked
    fake.gate = threading.Event()
    fake.in_read.clear()
    reading = asyncio.create_task(asyncio.to_thread(source.read))
    await eventually(fake.in_read.is_set, 5, "read() in the driver")
    source.close()  # from this thread, while the reader is inside the driver
    assert fake.released == 0, "released under a read in progress"
    fake.gate.set()
    assert await reading is None
    assert fake.released == 1
