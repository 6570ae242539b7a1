"""--log-format json: one JSON object per line, with the events that matter as fields."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest

from camcast.logsetup import JsonFormatter, setup_logging
from support.mjpeg import collect, open_mjpeg
from support.server import ServerProcess
from support.waiting import eventually


def json_lines(server: ServerProcess) -> list[dict[str, object]]:
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert lines, server.describe()
    return [json.loads(line) for line in lines]  # every line parses, or the test fails here


async def wait_for_event(server: ServerProcess, event: str, timeout: float = 10.0) -> dict[str, object]:
    # Wait on the loop, not in it: the client's socket only closes once the loop runs.
    found = await eventually(lambda: [e for e in json_lines(server) if e.get("event") == event], timeout,
                             f"a {event} line")  # a failing test's report shows the server's log
    return found[-1]


async def test_json_log_lines_parse_and_carry_event_fields(start_server, http) -> None:
    server = start_server("--log-format", "json")
    async with open_mjpeg(http, server.url + "video.mjpg") as reader:
        await collect(reader, 10.0, limit=2)
    left = await wait_for_event(server, "viewer_left")
    for entry in json_lines(server):
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert str(entry["time"]).endswith("Z")
    found = await wait_for_event(server, "source_found")
    assert found["source"] == "testpattern" and found["level"] == "info"
    assert found["logger"] == "camcast.source"
    joined = await wait_for_event(server, "viewer_joined")
    assert joined["kind"] == "mjpeg" and str(joined["viewer"]).startswith("127.0.0.1:")
    assert left["viewer"] == joined["viewer"]
    assert "mjpeg viewer connected" in str(joined["message"])


async def test_text_is_the_default(server, http) -> None:
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert lines and not any(line.startswith("{") for line in lines)
    assert any("INFO" in line and "source found: testpattern" in line for line in lines)


def test_json_formatter_keeps_extras_exceptions_and_odd_values() -> None:
    record = logging.LogRecord("camcast.recorder", logging.WARNING, __file__, 1, "saved %s (%d bytes)",
                               ("a.mp4", 1234), None)
    record.file = Path("recordings/a.mp4")  # not JSON by itself: written as text, never lost
    record.bytes = 1234
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "saved a.mp4 (1234 bytes)"
    assert entry["level"] == "warning" and entry["logger"] == "camcast.recorder"
    assert entry["file"] == "recordings/a.mp4" and entry["bytes"] == 1234
    assert "args" not in entry and "msg" not in entry

    try:
        raise RuntimeError("boom\nwith a second line")
    except RuntimeError:
        failed = logging.LogRecord("camcast", logging.ERROR, __file__, 1, "it failed", (), sys.exc_info())
    line = JsonFormatter().format(failed)
    assert "\n" not in line  # one event, one line, even with a multi-line traceback
    assert "RuntimeError: boom" in json.loads(line)["exception"]


def test_setup_logging_json_to_a_stream() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info", "json", stream=out)
        logging.getLogger("camcast.test").info("peer joined: %s", "p1", extra={"peer": "p1"})
        logging.getLogger("camcast.test").debug("not shown at info")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["peer"] == "p1"
    with pytest.raises(ValueError):
        setup_logging("info", "xml", stream=out)
