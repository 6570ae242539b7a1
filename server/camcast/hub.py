"""Publish/subscribe of the newest item, bounded per subscriber.

A hub lives on the event loop: `publish` is called from the loop thread (producers in
other threads hand items over with `loop.call_soon_threadsafe`). Each subscriber has a
small bounded queue; when it is full the oldest item is dropped and counted, so a slow
subscriber never slows the others and never grows memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class HubClosed(Exception):
    """The hub was closed: no more items will come."""


class Subscription(Generic[T]):
    def __init__(self, hub: Hub[T], maxsize: int) -> None:
        self._hub = hub
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.dropped = 0
        self.received = 0

    def _push(self, item: T) -> None:
        if len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
            self._hub.dropped += 1
        self._items.append(item)
        self.received += 1
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self) -> None:
        self._closed = True
        self._wake()

    def pending(self) -> int:
        return len(self._items)

    def get_nowait(self) -> T | None:
        return self._items.popleft() if self._items else None

    async def get(self) -> T:
        """The next item; raises HubClosed when the hub (or this subscription) is closed."""
        while not self._items:
            if self._closed:
                raise HubClosed
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def close(self) -> None:
        if not self._closed:
            self._end()
            self._hub._remove(self)

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except HubClosed:
            raise StopAsyncIteration from None

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hub(Generic[T]):
    """Fan out the newest item to every subscriber."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._subscribers: list[Subscription[T]] = []
        self._listeners: list[Callable[[int], None]] = []
        self.latest: T | None = None
        self.published = 0
        self.dropped = 0  # over all subscribers, closed ones included
        self.closed = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def on_subscribers_changed(self, listener: Callable[[int], None]) -> None:
        """Call `listener(count)` whenever a subscriber joins or leaves (lazy start/stop)."""
        self._listeners.append(listener)

    def subscribe(self, maxsize: int = 1, replay_latest: bool = False) -> Subscription[T]:
        sub: Subscription[T] = Subscription(self, maxsize)
        if self.closed:
            sub._end()
            return sub
        if replay_latest and self.latest is not None:
            sub._push(self.latest)
        self._subscribers.append(sub)
        self._notify()
        return sub

    def publish(self, item: T) -> None:
        if self.closed:
            return
        self.latest = item
        self.published += 1
        for sub in self._subscribers:
            sub._push(item)

    def forget_latest(self) -> None:
        """Drop the newest item (a paused source's last picture is not news to the next subscriber)."""
        self.latest = None

    def close(self) -> None:
        """End every subscription (their `get` raises HubClosed once drained)."""
        self.closed = True
        subs, self._subscribers = self._subscribers, []
        for sub in subs:
            sub._end()
        if subs:
            self._notify()

    def _remove(self, sub: Subscription[T]) -> None:
        try:
            self._subscribers.remove(sub)
        except ValueError:
            return
        self._notify()

    def _notify(self) -> None:
        count = len(self._subscribers)
        for listener in self._listeners:
            listener(count)
