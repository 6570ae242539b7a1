"""Recording bench client: WebRTC peers watching, record presses over the data channel, CPU windows.

Runs in its own process (bench.rtc_receivers patches aiortc process-wide): `peers` counting peers,
the first with the player's `control` data channel.

1. CPU: the server's CPU over equal windows, recording off and on, alternated (off/on, on/off, ...)
   so a drifting shared machine weighs on both alike. Recording remuxes the packets the peers
   already get, so the difference is the remux and the file writes. The CPU of the threads the
   press started (the recording's writer thread) is measured too: a direct figure, free of the
   noise of a difference. Every window also reports the slowest peer's fps and the encoders that ran.
2. Presses: a `record` start sent on the data channel at wall time P (the player's button); the
   coordinator later reads the file's first frame stamp, and P to the `recording` reply is timed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import queue
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.machine import BusyMeter

SETTLE_AFTER_PRESS = 0.5  # s: a window starts this long after a start/stop took effect


@dataclass(frozen=True)
class RecordingPlan:
    url: str
    server_pid: int
    peers: int
    window: float
    rounds: int  # off/on window pairs
    presses: int
    settle: float = 3.0
    timeout: float = 20.0


async def _press(viewer: Any, action: str, timeout: float) -> tuple[float, dict[str, Any]]:
    """Send a record start/stop; returns (wall time the matching state broadcast came, that message)."""
    while not viewer.messages.empty():
        viewer.messages.get_nowait()
    want = "recording" if action == "start" else "stopped"
    viewer.send(json.dumps({"type": "record", "action": action}))
    deadline = time.monotonic() + timeout
    while True:
        message = await asyncio.wait_for(viewer.messages.get(), deadline - time.monotonic())
        arrived = time.time()
        if not isinstance(message, dict):
            continue
        if message.get("type") == "record" and message.get("state") == want:
            return arrived, message
        if message.get("type") == "error":
            raise RuntimeError(f"record {action}: {message.get('message')}")


def _status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "api/status", timeout=5) as response:
        return json.load(response)  # type: ignore[no-any-return]


def _thread_cpu(process: psutil.Process) -> dict[int, float]:
    """CPU seconds of each thread of a process, by native thread id: from /proc/PID/task/TID/schedstat
    (nanoseconds on CPU) where Linux has it, as the clock-tick counts (10 ms) would swamp a few
    percent of 0.15 cores over a short window; else psutil's per-thread times."""
    out = {}
    try:
        for task in Path(f"/proc/{process.pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                out[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
    except OSError:
        pass
    return out or {t.id: t.user_time + t.system_time for t in process.threads()}


def _fps_min(buffers: list[Any], t0: float, t1: float) -> float:
    return min(sum(1 for t in b.frame_times if t0 <= t < t1) for b in buffers) / (t1 - t0)


async def _main(plan: RecordingPlan) -> dict[str, Any]:
    import aiohttp
    from tests.support.webrtc_viewer import Viewer

    from bench.rtc_receivers import jitter_buffer_of
    from camcast.frames import now_us

    server = psutil.Process(plan.server_pid)
    me = psutil.Process()
    async with aiohttp.ClientSession() as http:
        viewers = [Viewer(plan.url, codecs=("h264",), control=i == 0, read_stamps=False)
                   for i in range(plan.peers)]
        try:
            for viewer in viewers:
                await asyncio.wait_for(viewer.connect(http), plan.timeout)
                await asyncio.sleep(0.1)
            control = viewers[0]
            await control.wait_open(plan.timeout)
            buffers = [jitter_buffer_of(v.transceiver.receiver) for v in viewers]
            await asyncio.sleep(plan.settle)  # every peer past its first keyframe

            windows, files = [], []
            for r in range(plan.rounds):
                for recording in ((False, True) if r % 2 == 0 else (True, False)):
                    before = _thread_cpu(server)
                    if recording:
                        await _press(control, "start", plan.timeout)
                    await asyncio.sleep(SETTLE_AFTER_PRESS)
                    busy = BusyMeter()
                    busy.begin()
                    threads0 = _thread_cpu(server)
                    t0, w0 = time.monotonic(), time.time()
                    own0 = sum(me.cpu_times()[:2])
                    await asyncio.sleep(plan.window)
                    threads1 = _thread_cpu(server)
                    seconds = time.monotonic() - t0
                    # Threads that ran through the window (one that ended inside it took its time along).
                    cores = sum(threads1[t] - threads0.get(t, 0.0) for t in threads1) / seconds
                    own = (sum(me.cpu_times()[:2]) - own0) / seconds
                    machine = busy.end()
                    # Threads born at the press: the recording run's writer thread (it muxes and writes).
                    born = set(threads0) - set(before)
                    writer = sum(threads1[t] - threads0[t] for t in born if t in threads1) / seconds
                    status = await asyncio.to_thread(_status, plan.url)
                    windows.append({"recording": recording, "cores": cores, "client_cores": own,
                                    "new_thread_cores": writer, "new_threads": len(born),
                                    "machine_cores": machine, "other_cores": max(0.0, machine - cores - own),
                                    "fps_min": _fps_min(buffers, w0, time.time()),
                                    "encoders": status.get("encoders", {}),
                                    "recording_state": status["recording"]["state"]})
                    if recording:
                        _, stopped = await _press(control, "stop", plan.timeout)
                        files.append({"name": stopped["name"], "server_frames": stopped.get("frames")})
                        await asyncio.sleep(SETTLE_AFTER_PRESS)

            presses = []
            for k in range(plan.presses):
                # Past the encoder's keyframe rate limit; at varied phases of the frame clock.
                await asyncio.sleep(1.0 + (k * 0.0131) % (1 / 30))
                pressed = now_us()
                arrived, state = await _press(control, "start", plan.timeout)
                await asyncio.sleep(0.4)
                await _press(control, "stop", plan.timeout)
                presses.append({"name": state["name"], "pressed_us": pressed,
                                "reply_ms": arrived * 1000 - pressed / 1000})
            status = await asyncio.to_thread(_status, plan.url)
            return {"windows": windows, "files": files, "presses": presses,
                    "recorder_dropped": status["recording"].get("dropped", 0),
                    "peers_at_end": (status.get("webrtc") or {}).get("peers")}
        finally:
            for viewer in viewers:
                try:
                    await asyncio.wait_for(viewer.close(), 5.0)
                except Exception:  # closing is best effort; the server drops silent peers itself
                    pass


def _entry(plan: RecordingPlan, out: Any) -> None:
    try:
        from bench.rtc_receivers import install, loopback_only

        loopback_only()
        install("count")
        out.put(asyncio.run(_main(plan)))
    except BaseException as exc:  # report, never hang the coordinator
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def run_client(plan: RecordingPlan) -> tuple[dict[str, Any], int]:
    """Run the client in its own process; returns its result and its pid (for CPU accounting)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_entry, args=(plan, out), name="recording-client", daemon=True)
    proc.start()
    budget = (plan.peers * (plan.timeout + 0.1) + plan.settle
              + plan.rounds * 2 * (plan.window + 2 * SETTLE_AFTER_PRESS + 2 * plan.timeout)
              + plan.presses * (2.5 + 2 * plan.timeout) + 30.0)
    deadline = time.monotonic() + budget
    try:
        while True:
            try:
                result = out.get(timeout=0.5)
                break
            except queue.Empty:
                if proc.exitcode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"recording client failed or hung (exit {proc.exitcode})") from None
    finally:
        proc.join(15)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    if "error" in result:
        raise RuntimeError("recording client: " + result["error"])
    return result, proc.pid or 0
