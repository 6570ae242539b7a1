"""Shared fixtures: the real server as a subprocess, Chromium, aiohttp, loopback ICE, a sample video.

Async tests run under pytest-asyncio (asyncio_mode=auto). Tests that use `chromium` are moved
onto the session event loop automatically (the browser lives there); everything else keeps a
fresh loop per test.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from support.browser import CHROMIUM, MISSING, launch_chromium
from support.loopback import patch_aioice
from support.server import ServerError, ServerProcess, launch
from support.video import make_video

StartServer = Callable[..., ServerProcess]

_SERVERS = pytest.StashKey[list[ServerProcess]]()


@pytest.fixture
def start_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StartServer]:
    """Factory: `start_server(*args, env=None, source="testpattern", healthy=True, wait=True)`.

    Runs `python -m camcast --source SOURCE --host 127.0.0.1 --port 0 --ice-address 127.0.0.1
    --recordings <tmp>/recordings *args` in its own temporary folder with a clean environment
    (no inherited CAMCAST_*; `env` adds variables), waits for the "camcast: serving ... at URL"
    line and for /healthz to answer 200 (`healthy=False`: any answer), and returns a
    `support.server.ServerProcess` (`.url` ends with "/", `.port`, `.log()`, `.status()`,
    `.get(path)`, `.wait_health(code)`, `.terminate()`).

    `source=None` leaves --source out (so CAMCAST_SOURCE or the default applies); `args` come
    after the fixed options, so e.g. `--source file.mp4` or `--fps 10` override them.

    On teardown every server gets SIGTERM and must exit with status 0 within 5 s (else it is
    killed and the test errors), and its log must hold no traceback (set
    `server.allow_tracebacks = True` to opt out). A failing test shows each server's stdout
    and stderr in its report.
    """
    servers: list[ServerProcess] = []
    request.node.stash[_SERVERS] = servers

    def start(*args: str, env: dict[str, str] | None = None, source: str | None = "testpattern",
              healthy: bool = True, wait: bool = True) -> ServerProcess:
        server = launch(tmp_path / f"server-{len(servers)}", args, env=env, source=source,
                        healthy=healthy, wait=wait)
        servers.append(server)
        return server

    yield start

    problems = []
    for server in servers:
        try:
            code, _ = server.terminate()
        except ServerError as exc:
            problems.append(str(exc))
            continue
        if code != 0:
            problems.append(f"server exited with {code} after SIGTERM\n{server.describe()}")
        elif "Traceback" in server.log() and not server.allow_tracebacks:
            problems.append(f"server logged a traceback\n{server.describe()}")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    """A running server with the default test pattern (640x480 at 30 fps, stamped)."""
    return start_server()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for i, server in enumerate(item.stash.get(_SERVERS, [])):
            report.sections.append((f"camcast server {i} ({report.when})", server.describe()))


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session with no connection limit (tests open many streams at once)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium():  # type: ignore[no-untyped-def]
    """A headless Debian Chromium (playwright.async_api.Browser), one per test session.

    Fails (never skips) when /usr/bin/chromium is missing. Open pages with
    `support.browser.open_page(chromium, server.url)`, which grants camera/microphone first.
    Tests using it run on the session event loop (see pytest_collection_modifyitems).
    """
    if not CHROMIUM.exists():
        pytest.fail(MISSING, pytrace=False)
    from playwright.async_api import async_playwright

    playwright = await async_playwright().start()
    try:
        browser = await launch_chromium(playwright)
        try:
            yield browser
        finally:
            await browser.close()
    finally:
        await playwright.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The session-scoped browser is bound to the session loop: run its users there.
    for item in items:
        if "chromium" not in getattr(item, "fixturenames", ()):
            continue
        if not inspect.iscoroutinefunction(getattr(item, "obj", None)):
            continue
        marker = item.get_closest_marker("asyncio")
        if marker is None or not (marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")):
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make aiortc peers in this test gather only 127.0.0.1 host candidates.

    Combine with `support.loopback.rtc_configuration()` (no STUN/TURN servers) and start the
    server with --ice-address 127.0.0.1 (start_server does).
    """
    patch_aioice(monkeypatch)


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s, 320x240, 15 fps H.264 MP4 (30 frames); frame i shows i as text and as cells that
    `support.video.read_frame_index` reads back. Shared: copy it before changing it."""
    return make_video(tmp_path_factory.mktemp("video") / "sample.mp4")
