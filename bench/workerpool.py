"""Load-generating worker processes that start together and report one result each.

Every load in the bench (WebRTC peers, listeners, soak churn) runs its clients in spawned processes,
so the clients' CPU is never the server's and their event loops never share a core's time slice
with the coordinator. A worker imports what it needs, says it is ready, waits for the common start
time, runs, and puts one result (or an error) on the queue; the coordinator never hangs on a
worker that died.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

READY_TIMEOUT = 60.0  # s for every worker to import and connect what it prepares


@dataclass
class Signals:
    """What a worker gets from the pool (picklable: multiprocessing's own primitives)."""

    out: Any  # queue of {"ready": role}, then one result dict or {"error": ...}
    go: Any  # set at the start
    t0: Any  # the common start time (wall clock, s)
    stop: Any  # set when the coordinator wants the workers to finish early

    def wait_for_start(self) -> float:
        if not self.go.wait(READY_TIMEOUT * 2):
            raise TimeoutError("no start signal")
        return float(self.t0.value)


def run_worker(signals: Signals, role: str, prepare: Callable[[], None],
               main: Callable[[float], dict[str, Any]]) -> None:
    """A worker's whole life: `prepare()` (imports, hooks), ready, wait, `main(start)`; any failure
    is reported, never left for the coordinator to time out on."""
    try:
        prepare()
        signals.out.put({"ready": role})
        signals.out.put(main(signals.wait_for_start()))
    except BaseException as exc:  # report, never hang the coordinator
        signals.out.put({"role": role, "error": f"{role}: {type(exc).__name__}: {exc}"})


@dataclass(frozen=True)
class Job:
    name: str  # the process's name
    target: Callable[..., None]  # called as target(*args, signals)
    args: tuple[Any, ...]


class WorkerPool:
    """Spawns the jobs' processes; `start()` once all are ready; `results()` until each has reported."""

    def __init__(self, what: str, jobs: list[Job], within: float,
                 on_result: Callable[[dict[str, Any]], None] | None = None) -> None:
        """`within`: s past the start by which every result is due; `on_result` sees each as it comes."""
        self.what = what  # for messages: "audio load workers"
        self.within = within
        self._on_result = on_result
        ctx = mp.get_context("spawn")
        self.signals = Signals(ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0), ctx.Event())
        self._procs = [ctx.Process(target=job.target, name=job.name, daemon=True,
                                   args=(*job.args, self.signals)) for job in jobs]
        for proc in self._procs:
            proc.start()
        self.start_time = math.nan
        self._early: list[dict[str, Any]] = []  # results of workers that ended before the start

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def _dead(self) -> list[str]:
        return [p.name for p in self._procs if p.exitcode not in (None, 0)]

    def start(self, lead: float = 0.3) -> float:
        """Wait until every worker is ready, then start them all `lead` seconds from now (wall)."""
        ready = 0
        deadline = time.monotonic() + READY_TIMEOUT
        while ready < len(self._procs):
            try:
                item = self.signals.out.get(timeout=0.5)
            except queue.Empty:
                if time.monotonic() > deadline or self._dead():
                    self.close()
                    raise RuntimeError(f"{self.what} did not start: {self._dead() or 'timeout'}") from None
                continue
            if "error" in item:
                self.close()
                raise RuntimeError(f"{self.what} failed: {item['error']}")
            if "ready" in item:
                ready += 1
            else:
                self._early.append(item)
        self.start_time = time.time() + lead
        self.signals.t0.value = self.start_time
        self.signals.go.set()
        return self.start_time

    def results(self) -> list[dict[str, Any]]:
        """Every worker's result, waiting at most `within` s past the start; closes the pool."""
        deadline = self.start_time + self.within
        out = list(self._early)
        try:
            while len(out) < len(self._procs):
                try:
                    item = self.signals.out.get(timeout=0.5)
                except queue.Empty:
                    dead = self._dead()
                    if dead or time.time() > deadline:
                        raise RuntimeError(f"{self.what} failed or hung: {dead or 'timeout'}") from None
                    continue
                if "error" in item:
                    raise RuntimeError(f"{self.what} failed: {item['error']}")
                out.append(item)
                if self._on_result is not None:
                    self._on_result(item)
        finally:
            self.close()
        return out

    def close(self) -> None:
        self.signals.stop.set()
        if not self.signals.go.is_set():  # never started: nothing to wind down
            for proc in self._procs:
                proc.terminate()
        for proc in self._procs:
            proc.join(15)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def end_process(proc: Any, wait: float) -> None:
    """Give a worker process `wait` s to leave by itself, then terminate it, then kill it."""
    proc.join(wait)
    for stop in (proc.terminate, proc.kill):
        if not proc.is_alive():
            return
        stop()
        proc.join(5)
