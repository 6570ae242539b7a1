"""Access control: the token, CORS on WHEP and /api/, the page's CSP, the exposure warning."""

from __future__ import annotations

import asyncio
import hmac
import re
from unittest import mock

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from camcast.auth import TokenGuard, exposure_warning, is_loopback
from support.mjpeg import collect, open_mjpeg

TOKEN = "s3cret-Token_1234"
ORIGIN = "https://player.example"

# Every data and API route, whether or not its feature is present: closed is the default.
PROTECTED = [
    ("GET", "video.mjpg"), ("GET", "snapshot.jpg"), ("GET", "metrics"),
    ("GET", "api/status"), ("GET", "api/record"), ("POST", "api/record/start"),
    ("POST", "api/record/stop"), ("GET", "api/recordings"), ("DELETE", "api/recordings/x.mp4"),
    ("GET", "recordings/x.mp4"), ("POST", "offer"), ("POST", "whep"), ("DELETE", "whep/abc"),
    ("GET", "no/such/route"),
]
PUBLIC = ["", "client/player.js", "client/player.css", "healthz"]


async def _status(http: aiohttp.ClientSession, method: str, url: str,
                  **kwargs: object) -> tuple[int, CIMultiDictProxy[str], str]:
    async with http.request(method, url, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, response.headers, await response.text(errors="replace")


async def test_token_guards_every_route_but_the_page_and_healthz(start_server, http) -> None:
    server = start_server("--token", TOKEN)
    for path in PUBLIC:
        code, _, _ = await _status(http, "GET", server.url + path)
        assert code == 200, path
    for method, path in PROTECTED:
        code, headers, text = await _status(http, method, server.url + path)
        assert code == 401, (method, path, code)
        assert headers["WWW-Authenticate"].startswith("Bearer"), path
        assert "token" in text
    # A wrong token is told apart from a missing one (RFC 6750), in both places a token may be.
    for kwargs in ({"headers": {"Authorization": "Bearer wrong"}}, {"params": {"token": "wrong"}},
                   {"headers": {"Authorization": f"Bearer {TOKEN}x"}},
                   {"headers": {"Authorization": f"Basic {TOKEN}"}, "params": {"token": TOKEN[:-1]}}):
        code, headers, text = await _status(http, "GET", server.url + "api/status", **kwargs)
        assert code == 401, kwargs
        assert 'error="invalid_token"' in headers["WWW-Authenticate"]
        assert "wrong" in text
    # The token never shows up in what the server prints.
    assert TOKEN not in server.log() and TOKEN not in server.stdout()


async def test_bearer_header_and_query_token_both_work(start_server, http) -> None:
    server = start_server("--token", TOKEN)
    for kwargs in ({"headers": {"Authorization": f"Bearer {TOKEN}"}},
                   {"headers": {"Authorization": f"bearer {TOKEN}"}},
                   {"params": {"token": TOKEN}}):
        code, _, text = await _status(http, "GET", server.url + "api/status", **kwargs)
        assert code == 200, kwargs
        assert '"source"' in text
        async with http.get(server.url + "snapshot.jpg", **kwargs) as response:  # type: ignore[arg-type]
            assert response.status == 200
            assert (await response.read()).startswith(b"\xff\xd8")
    # What an <img> tag does: the token in the query of the endless MJPEG stream.
    async with open_mjpeg(http, f"{server.url}video.mjpg?token={TOKEN}") as reader:
        parts = await collect(reader, 10.0, limit=3)
    assert len(parts) == 3


async def test_guessing_tokens_is_slowed_down_per_address(start_server, http) -> None:
    server = start_server("--token", TOKEN)
    codes = []
    for attempt in range(20):  # as fast as the client goes: well within a second or two
        code, headers, text = await _status(http, "GET", server.url + "api/status",
                                            headers={"Authorization": f"Bearer guess{attempt}"})
        codes.append(code)
        if code == 429:
            assert headers["Retry-After"] == "1" and "too many" in text
    assert codes[:10] == [401] * 10 and codes[-1] == 429, codes
    # Asking without a token is no guess; the right token works again once the guesser slows down.
    assert (await _status(http, "GET", server.url + "api/status"))[0] == 401
    await asyncio.sleep(1.5)  # the Retry-After the server asked for, not a wait for a condition
    code, _, _ = await _status(http, "GET", server.url + "api/status",
                               headers={"Authorization": f"Bearer {TOKEN}"})
    assert code == 200
    async with http.get(server.url + "metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200


async def test_token_from_environment(start_server, http) -> None:
    server = start_server(env={"CAMCAST_TOKEN": TOKEN})
    assert (await _status(http, "GET", server.url + "snapshot.jpg"))[0] == 401
    code, _, _ = await _status(http, "GET", server.url + "snapshot.jpg",
                               headers={"Authorization": f"Bearer {TOKEN}"})
    assert code == 200


def test_token_is_compared_in_constant_time() -> None:
    guard = TokenGuard(TOKEN)
    with mock.patch("camcast.auth.hmac.compare_digest", wraps=hmac.compare_digest) as compare:
        assert guard.check(TOKEN)
        assert not guard.check(TOKEN[:-1] + "X")
        assert not guard.check("")
    assert compare.call_count == 3
    assert not guard.check(None)
    with pytest.raises(ValueError):
        TokenGuard("")


async def test_cors_on_whep_and_api_only_and_preflight_needs_no_token(start_server, http) -> None:
    server = start_server("--token", TOKEN)  # default origin policy: *
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    for path in ("whep", "whep/some-session", "api/record/start"):
        code, headers, _ = await _status(http, "OPTIONS", server.url + path, headers=preflight)
        assert code == 204, path
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in headers["Access-Control-Allow-Methods"]
        assert "authorization" in headers["Access-Control-Allow-Headers"].lower()
        assert "Access-Control-Allow-Credentials" not in headers
    # Errors carry CORS headers too, so a player on another origin can read the 401 and ask.
    code, headers, _ = await _status(http, "POST", server.url + "whep", headers={"Origin": ORIGIN})
    assert code == 401
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "Location" in headers["Access-Control-Expose-Headers"]
    code, headers, _ = await _status(http, "GET", server.url + "api/status",
                                     headers={"Origin": ORIGIN, "Authorization": f"Bearer {TOKEN}"})
    assert code == 200 and headers["Access-Control-Allow-Origin"] == "*"
    # Everything else never gets CORS headers, and a preflight there is not answered.
    for path in ("snapshot.jpg", "metrics", ""):
        _, headers, _ = await _status(http, "GET", server.url + path,
                                      headers={"Origin": ORIGIN, "Authorization": f"Bearer {TOKEN}"})
        assert "Access-Control-Allow-Origin" not in headers, path
    code, headers, _ = await _status(http, "OPTIONS", server.url + "snapshot.jpg", headers=preflight)
    assert code == 401 and "Access-Control-Allow-Origin" not in headers


async def test_cors_origins_are_configurable(start_server, http) -> None:
    server = start_server("--cors-origin", ORIGIN, "--cors-origin", "http://localhost:3000")
    for origin in (ORIGIN, "http://localhost:3000"):
        _, headers, _ = await _status(http, "GET", server.url + "api/status", headers={"Origin": origin})
        assert headers["Access-Control-Allow-Origin"] == origin
        assert "Origin" in headers.getall("Vary", [])
    _, headers, _ = await _status(http, "GET", server.url + "api/status",
                                  headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in headers
    code, headers, _ = await _status(http, "OPTIONS", server.url + "whep", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert code == 204 and "Access-Control-Allow-Origin" not in headers


async def test_player_page_sends_a_content_security_policy(server, http) -> None:
    for path in ("", "client/player.js"):
        _, headers, _ = await _status(http, "GET", server.url + path)
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "object-src 'none'" in csp, path
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"


async def test_warns_when_listening_beyond_loopback_without_a_token(start_server, http) -> None:
    # Listening on every interface is fine here: the test talks to it over 127.0.0.1 only.
    exposed = start_server("--host", "0.0.0.0")
    assert "anyone on the network can watch and record" in exposed.log()
    guarded = start_server("--host", "0.0.0.0", "--token", TOKEN)
    assert "anyone on the network" not in guarded.log()
    assert (await _status(http, "GET", guarded.url + "api/status"))[0] == 401


def test_exposure_warning_rules() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.8.0.1")
    assert is_loopback("::ffff:127.0.0.1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.168.1.5")
    assert exposure_warning("127.0.0.1", "") is None
    assert exposure_warning("0.0.0.0", TOKEN) is None
    for address in ("0.0.0.0", "::"):
        warning = exposure_warning(address, "")
        assert warning and address in warning and "--token" in warning, warning


def test_player_never_builds_html_from_strings() -> None:
    # Recording names, error messages and the like reach the page as text only (textContent).
    from camcast.webclient import client_root

    sinks = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function")
    for script in sorted(client_root().glob("*.js")):
        source = script.read_text()
        for sink in sinks:
            assert sink not in source, f"{script.name} uses {sink}"
    page = (client_root() / "index.html").read_text()
    # The CSP forbids inline script: no <script> bodies, no on...= handler attributes.
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert not re.search(r"\son[a-z]+\s*=", page)
