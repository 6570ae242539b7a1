"""Run a worker task only while its output hub has subscribers (with a short linger)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar

from camcast.frames import Frame
from camcast.hub import Hub, HubClosed

R = TypeVar("R")

log = logging.getLogger("camcast.encoding")


RESTART_DELAY = 1.0  # s before a crashed worker runs again (its output still has subscribers)


class LazyWorker:
    """Run `run()` from the first subscriber of `output` until `linger` s after the last leaves.

    A run that crashes is started again after RESTART_DELAY while anyone still subscribes: a bug
    that one odd frame trips must not leave every viewer waiting forever.
    """

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
        self._restarter: asyncio.TimerHandle | None = None
        self.starts = 0
        self.crashes = 0
        # Whether the worker may run at all: the camera's own packets or JPEGs may be feeding the
        # same output instead (passthrough). Call refresh() when the answer changes.
        self.allowed: Callable[[], bool] = lambda: True
        output.on_subscribers_changed(self._on_count)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _on_count(self, count: int) -> None:
        if count > 0:
            if self._stopper is not None:
                self._stopper.cancel()
                self._stopper = None
            self._start()
        elif self.running and self._stopper is None:
            self._stopper = asyncio.get_running_loop().call_later(self._linger, self._stop_now)

    def refresh(self) -> None:
        """Start or stop after `allowed` changed."""
        if not self.allowed():
            if self._task is not None:
                self._task.cancel()
            return
        if self._output.subscriber_count > 0:
            self._start()

    def _start(self) -> None:
        if not self.running and not self._output.closed and self.allowed():
            self.starts += 1
            log.debug("%s: starting", self.name)
            self._task = asyncio.get_running_loop().create_task(self._guarded(), name=self.name)

    async def _guarded(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:
            self.crashes += 1
            if self.crashes == 1 or self.crashes % 100 == 0:  # a crash on every run must not flood the log
                log.exception("%s crashed (%d so far); restarting in %g s", self.name, self.crashes,
                              RESTART_DELAY)
            self._restarter = asyncio.get_running_loop().call_later(RESTART_DELAY, self._restart)

    def _restart(self) -> None:
        self._restarter = None
        if self._output.subscriber_count > 0:
            self._start()

    def _stop_now(self) -> None:
        self._stopper = None
        if self._task is not None and self._output.subscriber_count == 0:
            log.debug("%s: idle, stopping", self.name)
            self._task.cancel()

    async def close(self) -> None:
        for timer in (self._stopper, self._restarter):
            if timer is not None:
                timer.cancel()
        self._stopper = self._restarter = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def encode_frames(frames: Hub[Frame], executor: Executor, encode: Callable[[Frame], R],
                        deliver: Callable[[R], None]) -> None:
    """Encode the newest frame in `executor` (never on the loop), deliver the result, repeat.

    A frame that arrives while one is encoding replaces any older waiting one: an encoder
    that falls behind skips to the newest picture instead of adding delay.
    """
    loop = asyncio.get_running_loop()
    with frames.subscribe(maxsize=1, replay_latest=True) as subscription:
        while True:
            try:
                frame = await subscription.get()
            except HubClosed:
                return
            deliver(await loop.run_in_executor(executor, encode, frame))
