"""aiortc viewers inside the emulated network's namespaces, watched while the link changes.

Each viewer runs its own event loop in a thread that entered a namespace (so its sockets live
there) and gathers one ICE host candidate: the address of that namespace's side. Several viewers
in different namespaces may run at once: the candidate is chosen per thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from support.netlab import Side
from support.server import ServerProcess
from support.webrtc_viewer import FrameInfo, Viewer

_local = threading.local()


@contextlib.contextmanager
def host_address_per_thread() -> Iterator[None]:
    """aioice gathers, in each thread, the address that thread set with `use_address`."""
    import aioice.ice

    def addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
        address = getattr(_local, "address", None)
        assert address is not None, "a viewer thread must call use_address first"
        return [address] if use_ipv4 else []

    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = addresses
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


@dataclass
class Watch:
    """What one viewer saw: its frames, and the server's view of its session every half second."""

    frames: list[FrameInfo] = field(default_factory=list)
    sessions: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (monotonic, session)
    stop: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0
    error: BaseException | None = None

    def fps(self, start: float, end: float) -> float:
        return sum(1 for f in self.frames if start <= f.arrived < end) / max(1e-6, end - start)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time without a decoded frame between `start` and `end`."""
        times = [start] + [f.arrived for f in self.frames if start <= f.arrived <= end] + [end]
        return max(b - a for a, b in itertools.pairwise(times))

    def keyframes(self, start: float, end: float) -> int:
        return sum(1 for f in self.frames if start <= f.arrived < end and f.key)

    def session(self) -> dict[str, Any]:
        return self.sessions[-1][1] if self.sessions else {}

    def renditions(self, start: float = 0.0) -> list[str]:
        """The renditions the server had this viewer on, in order, without repeats."""
        seen: list[str] = []
        for at, session in self.sessions:
            name = session.get("rendition")
            if at >= start and name and (not seen or seen[-1] != name):
                seen.append(name)
        return seen


def start_viewer(side: Side, server: ServerProcess, status_side: Side, via: str = "whep") -> Watch:
    """Start a viewer inside `side`'s namespace; it watches until `watch.stop` is set. The server's
    status is read from inside `status_side` (the server's own namespace: not over the link)."""
    watch = Watch()
    ready: Future[None] = Future()

    async def run() -> None:
        _local.address = side.address
        async with aiohttp.ClientSession() as http:
            viewer = Viewer(server.url, read_stamps=False, control=(via == "offer"))
            watch.frames = viewer.frames
            try:
                await viewer.connect(http, via=via)
                watch.started = time.monotonic()
                ready.set_result(None)
                session_id = viewer.answer.get("id") or (viewer.session_url or "").rsplit("/", 1)[-1]
                while not watch.stop.is_set():
                    await asyncio.sleep(0.5)
                    status = await asyncio.wrap_future(status_side.submit(server.status))
                    for session in status["webrtc"]["sessions"]:
                        if session["id"] == session_id:
                            watch.sessions.append((time.monotonic(), session))
            finally:
                await viewer.close()

    def body() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            watch.error = exc
            if not ready.done():
                ready.set_exception(exc)

    side.submit(body)
    ready.result(timeout=30)
    return watch


def wait_until(condition: Callable[[], bool], timeout: float, what: str, watch: Watch | None = None) -> float:
    """Block until `condition()` holds; return the seconds it took. Fails with `what` (and the
    viewer's last session) past `timeout`."""
    started = time.monotonic()
    while not condition():
        if watch is not None and watch.error is not None:
            raise AssertionError(f"the viewer failed: {watch.error!r}")
        if time.monotonic() - started > timeout:
            last = f"; last session: {watch.session()}" if watch is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{last}")
        time.sleep(0.1)
    return time.monotonic() - started
