"""Run a worker task only while its output hub has subscribers (with a short linger)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from camcast.hub import Hub

log = logging.getLogger("camcast.encoding")


class LazyWorker:
    """Run `run()` from the first subscriber of `output` until `linger` s after the last leaves."""

    def __init__(
        self,
        name: str,
        output: Hub[Any],
        run: Callable[[], Coroutine[Any, Any, None]],
        linger: float = 2.0,
    ) -> None:
        self.name = name
        self._output = output
        self._run = run
        self._linger = linger
        self._task: asyncio.Task[None] | None = None
        self._stopper: asyncio.TimerHandle | None = None
        self.starts = 0
        output.on_subscribers_changed(self._on_count)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _on_count(self, count: int) -> None:
        if count > 0:
            if self._stopper is not None:
                self._stopper.cancel()
                self._stopper = None
            if not self.running and not self._output.closed:
                self.starts += 1
                log.debug("%s: starting", self.name)
                self._task = asyncio.get_running_loop().create_task(self._guarded(), name=self.name)
        elif self.running and self._stopper is None:
            self._stopper = asyncio.get_running_loop().call_later(self._linger, self._stop_now)

    async def _guarded(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s crashed", self.name)

    def _stop_now(self) -> None:
        self._stopper = None
        if self._task is not None and self._output.subscriber_count == 0:
            log.debug("%s: idle, stopping", self.name)
            self._task.cancel()

    async def close(self) -> None:
        if self._stopper is not None:
            self._stopper.cancel()
            self._stopper = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
