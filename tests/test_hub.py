"""Hub: newest-item fan-out with bounded per-subscriber queues; lazy workers; one JPEG per frame."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from camcast.encoding.jpeg import SharedJpegEncoder
from camcast.encoding.lazy import LazyWorker
from camcast.frames import Frame, JpegPart, now_us
from camcast.hub import Hub, HubClosed
from support.waiting import eventually


async def test_items_arrive_in_order() -> None:
    hub: Hub[int] = Hub("numbers")
    with hub.subscribe(maxsize=10) as sub:
        for i in range(5):
            hub.publish(i)
        assert [await sub.get() for _ in range(5)] == [0, 1, 2, 3, 4]
        assert sub.received == 5 and sub.dropped == 0
    assert hub.published == 5 and hub.latest == 4


async def test_slow_subscriber_drops_oldest_and_never_holds_back_others() -> None:
    hub: Hub[int] = Hub("numbers")
    fast_got: list[int] = []
    with hub.subscribe(maxsize=1) as slow, hub.subscribe(maxsize=1) as fast:
        for i in range(1000):
            hub.publish(i)
            fast_got.append(await fast.get())
        assert fast_got == list(range(1000))
        assert fast.dropped == 0
        # The slow one never read: it holds only the newest item, and counted the rest as dropped.
        assert slow.pending() == 1
        assert slow.dropped == 999
        assert await slow.get() == 999
        assert hub.dropped == 999


async def test_queue_is_bounded_by_maxsize() -> None:
    hub: Hub[int] = Hub("numbers")
    with hub.subscribe(maxsize=3) as sub:
        for i in range(10_000):
            hub.publish(i)
        assert sub.pending() == 3
        assert [sub.get_nowait(), sub.get_nowait(), sub.get_nowait(), sub.get_nowait()] == [
            9997, 9998, 9999, None]


async def test_waiting_subscriber_wakes_on_publish() -> None:
    hub: Hub[str] = Hub("words")
    with hub.subscribe() as sub:
        waiter = asyncio.create_task(sub.get())
        await asyncio.sleep(0)
        assert not waiter.done()
        hub.publish("hello")
        assert await asyncio.wait_for(waiter, 1) == "hello"


async def test_subscriber_count_and_listeners() -> None:
    hub: Hub[int] = Hub("numbers")
    counts: list[int] = []
    hub.on_subscribers_changed(counts.append)
    a = hub.subscribe()
    with hub.subscribe():
        assert hub.subscriber_count == 2
    assert hub.subscriber_count == 1
    a.close()
    a.close()  # closing twice is harmless and not reported twice
    assert hub.subscriber_count == 0
    assert counts == [1, 2, 1, 0]


async def test_replay_latest_gives_a_new_subscriber_the_newest_item() -> None:
    hub: Hub[int] = Hub("numbers")
    with hub.subscribe(replay_latest=True) as empty:
        assert empty.pending() == 0  # nothing published yet
    hub.publish(1)
    hub.publish(2)
    with hub.subscribe(replay_latest=True) as sub, hub.subscribe() as plain:
        assert await sub.get() == 2
        assert plain.pending() == 0


async def test_close_drains_then_ends_every_subscription() -> None:
    hub: Hub[int] = Hub("numbers")
    counts: list[int] = []
    hub.on_subscribers_changed(counts.append)
    sub = hub.subscribe(maxsize=5)
    idle = hub.subscribe()
    waiting = asyncio.create_task(idle.get())
    await asyncio.sleep(0)
    hub.publish(1)
    hub.publish(2)
    assert await asyncio.wait_for(waiting, 1) == 2  # maxsize 1: only the newest
    hub.close()
    assert hub.subscriber_count == 0 and counts[-1] == 0
    # Items already queued are still delivered, then iteration stops.
    assert [item async for item in sub] == [1, 2]
    with pytest.raises(HubClosed):
        await asyncio.wait_for(idle.get(), 1)
    hub.publish(3)  # ignored after close
    assert hub.latest == 2
    late = hub.subscribe(replay_latest=True)
    with pytest.raises(HubClosed):
        await asyncio.wait_for(late.get(), 1)


async def test_closing_a_subscription_wakes_its_reader() -> None:
    hub: Hub[int] = Hub("numbers")
    sub = hub.subscribe()
    reader = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    sub.close()
    with pytest.raises(HubClosed):
        await asyncio.wait_for(reader, 1)
    assert hub.subscriber_count == 0


async def test_lazy_worker_runs_only_while_its_output_is_wanted() -> None:
    output: Hub[int] = Hub("out")
    runs: list[str] = []

    async def run() -> None:
        runs.append("started")
        try:
            while True:
                output.publish(len(runs))
                await asyncio.sleep(0.01)
        finally:
            runs.append("stopped")

    worker = LazyWorker("test", output, run, linger=0.05)
    await asyncio.sleep(0.05)  # nobody wants its output yet: time passes and it does not start
    assert not worker.running and runs == []
    with output.subscribe() as sub:
        assert worker.running
        await asyncio.wait_for(sub.get(), 1)
    # Leaving and coming back within the linger keeps the same run going.
    with output.subscribe():
        await asyncio.sleep(0.01)
        assert worker.running and worker.starts == 1
    await eventually(lambda: not worker.running, 5, "the worker to stop after its linger")
    assert runs == ["started", "stopped"]
    with output.subscribe():
        assert worker.running and worker.starts == 2
    await worker.close()
    assert not worker.running


async def test_lazy_worker_survives_a_crash_and_can_start_again() -> None:
    output: Hub[int] = Hub("out")
    attempts = 0

    async def run() -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("encoder broke")

    worker = LazyWorker("crashy", output, run, linger=0.01)
    with output.subscribe():
        await eventually(lambda: attempts == 1 and not worker.running, 5, "the first run to crash")
    with output.subscribe():  # wanted again: it starts again
        await eventually(lambda: attempts == 2 and not worker.running, 5, "the second run to crash")
    await worker.close()


def _frame(seq: int) -> Frame:
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, : seq % 64] = 200
    return Frame(image, seq, now_us())


async def test_jpeg_encoder_encodes_once_per_frame_for_every_client() -> None:
    frames: Hub[Frame] = Hub("frames")
    jpeg: Hub[JpegPart] = Hub("jpeg")
    encoder = SharedJpegEncoder(frames, jpeg, quality=80)
    assert not encoder.running
    subs = [jpeg.subscribe(maxsize=100) for _ in range(5)]
    assert encoder.running
    await eventually(lambda: frames.subscriber_count == 1, 5, "the encoder to subscribe to the frames")
    for seq in range(1, 11):
        frames.publish(_frame(seq))
        parts = [await asyncio.wait_for(sub.get(), 5) for sub in subs]
        assert {part.seq for part in parts} == {seq}
        # The very same bytes object for every client: encoded once, shared.
        assert all(part.chunk is parts[0].chunk for part in parts)
        assert parts[0].jpeg.startswith(b"\xff\xd8") and parts[0].jpeg.endswith(b"\xff\xd9")
    assert encoder.frames_encoded == 10
    snapshot = await encoder.snapshot()
    assert snapshot is not None and snapshot.seq == 10
    assert encoder.frames_encoded == 10  # the snapshot reused the shared encode
    for sub in subs:
        sub.close()
    await encoder.close()
    assert not encoder.running
