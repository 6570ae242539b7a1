"""The motion event store on its own: a real SQLite file, real recording files in its folder."""

from __future__ import annotations

from pathlib import Path

from camcast.frames import now_us
from camcast.motion.model import EventRecording, MotionEvent
from camcast.motion.store import EventStore

DAY_US = 86_400_000_000


def event(event_id: str, start_us: int, end_us: int | None, recording: str | None = None) -> MotionEvent:
    return MotionEvent(event_id, "default", start_us, end_us, 2.5, (0.1, 0.1, 0.2, 0.2),
                       EventRecording(recording, 1.5) if recording else None, end_us or start_us)


async def test_a_deleted_recording_leaves_its_event_without_a_link(tmp_path: Path) -> None:
    store = EventStore(tmp_path)
    await store.open()
    try:
        clip = tmp_path / "2026-11-30T10-00-00Z.mp4"
        clip.write_bytes(b"mp4")
        now = now_us()
        await store.save(event("aa11bb22", now - 10_000_000, now - 5_000_000, clip.name), b"\xff\xd8jpeg")
        got = await store.get("aa11bb22")
        assert got is not None and got.to_json()["recording"]["name"] == clip.name
        clip.unlink()  # retention, or DELETE /api/recordings/<name>
        got = await store.get("aa11bb22")
        assert got is not None and got.recording is None and got.to_json()["recording"] is None
        assert [e.id for e in await store.listing(None, 10)] == ["aa11bb22"]
        assert await store.thumbnail("aa11bb22") == b"\xff\xd8jpeg"
    finally:
        await store.close()


async def test_prune_deletes_events_that_ended_before_the_limit_only(tmp_path: Path) -> None:
    store = EventStore(tmp_path)
    await store.open()
    try:
        now = now_us()
        await store.save(event("0000000a", now - 10 * DAY_US, now - 10 * DAY_US + 5_000_000))  # old
        await store.save(event("0000000b", now - 1 * DAY_US, now - 1 * DAY_US + 5_000_000))  # recent
        await store.save(event("0000000c", now - 10 * DAY_US, None))  # still going on
        assert await store.prune(now - 7 * DAY_US) == 1
        assert sorted(e.id for e in await store.listing(None, 10)) == ["0000000b", "0000000c"]
        assert await store.thumbnail("0000000a") is None
    finally:
        await store.close()
    # Survives a reopen (the file is the store).
    again = EventStore(tmp_path)
    await again.open()
    try:
        assert {e.id for e in await again.listing(None, 10)} >= {"0000000b"}
    finally:
        await again.close()


async def test_an_unreadable_file_is_set_aside_and_a_new_one_started(tmp_path: Path) -> None:
    (tmp_path / "events.sqlite3").write_bytes(b"half a copy " * 500)
    store = EventStore(tmp_path)
    await store.open()
    try:
        await store.save(event("0000000d", now_us() - 5_000_000, now_us()))
        assert [e.id for e in await store.listing(None, 10)] == ["0000000d"]
    finally:
        await store.close()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("events.sqlite3.unreadable-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"half a copy")


async def test_a_file_that_cannot_be_opened_keeps_events_in_memory(tmp_path: Path) -> None:
    (tmp_path / "events.sqlite3").mkdir()  # e.g. a read-only or locked place
    store = EventStore(tmp_path)
    await store.open()
    try:
        await store.save(event("0000000e", now_us() - 5_000_000, now_us()))
        assert [e.id for e in await store.listing(None, 10)] == ["0000000e"]
    finally:
        await store.close()
