"""Bad HTTP input gets a clear 4xx with a reason: never a 500, a crash, a stuck request or a log flood.

Against one real server: malformed and non-object JSON, wrong content types (415), bodies over the
64 KB limit (413), unknown routes (404) and methods (405), odd recording names, over-long request
lines and headers. (`?fps=` values are checked in test_mjpeg, path escapes in test_recordings_api.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from support.server import ServerProcess, running

JSON, SDP = "application/json", "application/sdp"
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def bad_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(tmp_path_factory.mktemp("bad-input"), ["--size", "160x120"]) as server:
        yield server


async def request(http: aiohttp.ClientSession, method: str, url: str, **kwargs: object) -> tuple[int, str]:
    async with http.request(method, url, **kwargs) as r:  # type: ignore[arg-type]
        return r.status, await r.text(errors="replace")


async def assert_still_fine(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    async with http.get(server.url + "api/status") as r:
        status = await r.json()
    assert status["webrtc"]["peers"] == 0 and status["webrtc"]["negotiating"] == 0
    async with http.get(server.url + "healthz") as r:
        assert r.status == 200
    log = server.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-2000:]


@pytest.mark.parametrize(("body", "reason"), [
    ("", "JSON"), ("not json", "JSON"), ("{", "JSON"), ('{"sdp": "v=0"', "JSON"),
    ("[" * 20_000, "JSON"),  # deep nesting, under the size limit
    ("[]", "object"), ("null", "object"), ("42", "object"), ('"v=0"', "object"), ("true", "object"),
    ('{"type": "offer"}', "sdp"), ('{"sdp": 5}', "sdp"), ('{"sdp": null}', "sdp"),
    ('{"sdp": ["v=0"]}', "sdp"),
    ('{"sdp": "v=0\\r\\n", "type": "answer"}', "offer"), ('{"sdp": "v=0\\r\\n", "type": 1}', "offer"),
    ('{"sdp": "hello", "type": "offer"}', "not SDP"), ('{"sdp": "", "type": "offer"}', "empty"),
    (b'{"sdp": "\xff\xfe", "type": "offer"}', "UTF-8"),
])
async def test_malformed_offer_json_is_a_400(bad_server: ServerProcess, http: aiohttp.ClientSession,
                                             body: str | bytes, reason: str) -> None:
    status, text = await request(http, "POST", bad_server.url + "offer", data=body,
                                 headers={"Content-Type": JSON})
    assert status == 400 and reason in text, (status, text)


async def test_wrong_content_types_are_415(bad_server: ServerProcess, http: aiohttp.ClientSession) -> None:
    offer, whep = bad_server.url + "offer", bad_server.url + "whep"
    cases = [
        (offer, "text/plain"), (offer, SDP), (offer, "application/x-www-form-urlencoded"), (offer, None),
        (whep, JSON), (whep, "text/plain"), (whep, "multipart/form-data; boundary=x"), (whep, None),
    ]
    for url, content_type in cases:
        headers = {"Content-Type": content_type} if content_type else {}
        async with http.post(url, data=b'{"sdp": "v=0", "type": "offer"}', headers=headers,
                             skip_auto_headers=["Content-Type"]) as r:
            text = await r.text()
            assert r.status == 415, (url, content_type, r.status, text)
            wanted = SDP if url == whep else JSON
            assert wanted in text and r.headers["Accept-Post"] == wanted
    # Parameters on the right type are fine (they get as far as the SDP check).
    status, text = await request(http, "POST", whep, data="hello", headers={"Content-Type": f"{SDP}; x=1"})
    assert status == 400 and "not SDP" in text


async def _chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 8192):
        yield b"v" * 8192


async def test_bodies_over_64_kb_are_413(bad_server: ServerProcess, http: aiohttp.ClientSession) -> None:
    big_sdp = "v=0\r\n" + "a=x-padding:" + "p" * (LIMIT + 10)
    for url, content_type, data in [
        ("offer", JSON, '{"sdp": "' + "v" * (LIMIT + 1) + '", "type": "offer"}'),
        ("whep", SDP, big_sdp),
        ("whep", SDP, b"v" * 10_000_000),  # 10 MB: refused without being kept
    ]:
        status, text = await request(http, "POST", bad_server.url + url, data=data,
                                     headers={"Content-Type": content_type})
        assert status == 413, (url, status, text[:100])
    # Chunked, so the size is only known while reading: still 413.
    status, _ = await request(http, "POST", bad_server.url + "whep", data=_chunks(LIMIT * 4),
                              headers={"Content-Type": SDP})
    assert status == 413
    # Just under the limit is read (and refused for what it is, not for its size).
    under = "v=0\r\n" + "a=x:" + "p" * 60_000
    status, text = await request(http, "POST", bad_server.url + "whep", data=under,
                                 headers={"Content-Type": SDP})
    assert status == 400, (status, text[:100])
    await assert_still_fine(http, bad_server)


async def test_unknown_routes_are_404_and_wrong_methods_405(bad_server: ServerProcess,
                                                            http: aiohttp.ClientSession) -> None:
    for path in ["nope", "api/nope", "api/record/pause", "whep/a/b", "video.mjpeg", "client/../etc/passwd",
                 "%00", "api/status/x", "recordings/", "recordings"]:
        status, _ = await request(http, "GET", bad_server.url + path)
        assert status == 404, (path, status)
    for method, path in [("GET", "offer"), ("PUT", "offer"), ("GET", "whep"), ("PUT", "whep"),
                         ("PATCH", "whep/abc"), ("GET", "whep/abc"), ("POST", "video.mjpg"),
                         ("DELETE", "api/status"), ("POST", "recordings/x.mp4"), ("GET", "api/record/start"),
                         ("PUT", "api/recordings/x.mp4"), ("POST", "healthz"), ("DELETE", "metrics")]:
        async with http.request(method, bad_server.url + path) as r:
            assert r.status == 405, (method, path, r.status)
            assert method not in r.headers["Allow"] and r.headers["Allow"]
    for session in ["abc", "x" * 2000, "%C3%A9", "a.b", "%00"]:
        status, _ = await request(http, "DELETE", bad_server.url + "whep/" + session)
        assert status == 404, session
    await assert_still_fine(http, bad_server)


@pytest.mark.parametrize("name", [
    "%ff.mp4", "%C3%A9t%C3%A9.mp4", "x.mp4%2F", "x.mp4%0D%0ASet-Cookie:%20a=b", "x%20y.mp4", "-.mp4",
    "x.mp4.", "x.exe", "x", "%2e", "x.mp4%3F.txt", "C:%5Cx.mp4", "%2F%2Fetc%2Fpasswd", "a" * 1000 + ".mp4",
])
async def test_odd_recording_names_are_refused(bad_server: ServerProcess, http: aiohttp.ClientSession,
                                               name: str) -> None:
    for method, prefix in (("GET", "recordings/"), ("DELETE", "api/recordings/")):
        async with http.request(method, bad_server.url + prefix + name) as r:
            assert r.status in (400, 404), (method, name, r.status)
            assert "Set-Cookie" not in r.headers


async def test_over_long_request_lines_and_headers(bad_server: ServerProcess) -> None:
    """aiohttp's parser refuses them (400); the log must not get a traceback for each one."""

    async def raw(head: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", bad_server.port)
        try:
            writer.write(head)
            await writer.drain()
            return await asyncio.wait_for(reader.read(200), 10)
        finally:
            writer.close()

    long_name = b"a" * 20_000
    replies = [
        await raw(b"GET /recordings/" + long_name + b".mp4 HTTP/1.1\r\nHost: x\r\n\r\n"),
        await raw(b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Big: " + long_name + b"\r\n\r\n"),
        await raw(b"GET /api/status HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * 500 + b"\r\n"),
        await raw(b"GET /api/status HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"),
        await raw(b"BREW /coffee HTCPCP/1.0\r\n\r\n"),
        await raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64)),  # TLS to the HTTP port
    ]
    for reply in replies:
        status = reply.split(b" ", 2)[1] if reply.startswith(b"HTTP/1.") else b""
        assert status.startswith(b"4") or reply == b"", reply[:80]
    async with aiohttp.ClientSession() as http:
        await assert_still_fine(http, bad_server)
