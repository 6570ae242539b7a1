"""Webhooks: each motion start and end POSTed as JSON to every configured URL.

One aiohttp ClientSession for the app, one bounded queue and one sending task per target URL:
a slow or dead receiver delays only its own messages, never capture nor the other targets; when
its queue is full the oldest message is dropped (with a warning). Each message is tried up to
MAX_TRIES times, waiting 1 s, 2 s, 4 s... between tries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from camcast import __version__
from camcast.control import Message

log = logging.getLogger("camcast.webhooks")

TIMEOUT = 5.0  # s per POST
MAX_TRIES = 5
FIRST_BACKOFF = 1.0  # s, doubling
QUEUE_SIZE = 100  # messages per target
DRAIN_SECONDS = 3.0  # at shutdown, how long the last messages (an event's end) may take to go out


def shown(url: str) -> str:
    """The URL for the log, without credentials or query (which may hold a secret)."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.hostname or "", query="").geturl()


class WebhookTarget:
    def __init__(self, url: str, backoff: float = FIRST_BACKOFF) -> None:
        self.url = url
        self.backoff = backoff
        self._queue: deque[Message] = deque()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()  # nothing queued nor being delivered
        self._idle.set()
        self.sent = 0
        self.failed = 0  # messages given up after MAX_TRIES
        self.dropped = 0  # messages dropped because the queue was full

    def post(self, message: Message) -> None:
        if len(self._queue) >= QUEUE_SIZE:
            self._queue.popleft()
            self.dropped += 1
            log.warning("webhook %s is behind: dropped its oldest message (%d dropped)", shown(self.url),
                        self.dropped)
        self._queue.append(message)
        self._idle.clear()
        self._ready.set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            await self._ready.wait()
            while self._queue:
                await self._deliver(session, self._queue.popleft())
            self._ready.clear()
            self._idle.set()

    async def drained(self) -> None:
        await self._idle.wait()

    @property
    def pending(self) -> int:
        return len(self._queue) + (0 if self._idle.is_set() else 1)

    async def _deliver(self, session: aiohttp.ClientSession, message: Message) -> None:
        wait = self.backoff
        for attempt in range(1, MAX_TRIES + 1):
            try:
                async with session.post(self.url, json=message) as response:
                    if response.status < 300:
                        self.sent += 1
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = str(exc) or type(exc).__name__
            if attempt == MAX_TRIES:
                break
            log.info("webhook %s: %s; trying again in %g s", shown(self.url), problem, wait)
            await asyncio.sleep(wait)
            wait *= 2
        self.failed += 1
        log.warning("webhook %s: %s; message given up after %d tries", shown(self.url), problem, MAX_TRIES)


class Webhooks:
    """Every target of the app, by URL (a URL several cameras share has one queue)."""

    def __init__(self) -> None:
        self.targets: dict[str, WebhookTarget] = {}

    def target(self, url: str) -> WebhookTarget:
        return self.targets.setdefault(url, WebhookTarget(url))

    def poster(self, urls: Iterable[str]) -> list[WebhookTarget]:
        return [self.target(url) for url in urls]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        if not self.targets:
            yield
            return
        headers = {"User-Agent": f"camcast/{__version__}"}
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            tasks = [asyncio.get_running_loop().create_task(t.run(session), name="webhook")
                     for t in self.targets.values()]
            try:
                yield
            finally:
                # The cameras have stopped: their last messages (an open event's end) go out first.
                targets = list(self.targets.values())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*(t.drained() for t in targets)), DRAIN_SECONDS)
                for target in targets:
                    if target.pending:
                        log.warning("webhook %s: %d message(s) not sent before shutdown", shown(target.url),
                                    target.pending)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)


def add_webhooks(app: web.Application, webhooks: Webhooks) -> None:
    """The session lives with the app (started before the cameras, so it outlives their last events)."""
    async def webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
        async with webhooks.running():
            yield

    app.cleanup_ctx.append(webhooks_ctx)
