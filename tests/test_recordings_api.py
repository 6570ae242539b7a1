"""The record REST API and the recordings files API, on one real server (plus a few that must fail)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from camcast.recorder.naming import create_unique
from support.server import ServerProcess, camcast_command, clean_env, launch

StartServer = Callable[..., ServerProcess]
SECRET = b"top secret outside the recordings folder\n"


def request(server: ServerProcess, method: str, path: str, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    """Any method, and the path sent exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def call(server: ServerProcess, method: str, path: str, expect: int = 200) -> Any:
    status, _, body = request(server, method, path)
    assert status == expect, body
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("api")
    assert not (workdir / "recordings").exists()
    server = launch(workdir)
    try:
        yield server
    finally:
        code, _ = server.terminate()
        assert code == 0, server.describe()
        assert "Traceback" not in server.log(), server.describe()


@pytest.fixture(scope="module")
def recorded(server: ServerProcess) -> str:
    """One real recording of about 1.5 s (recorded through the idempotent REST calls)."""
    assert call(server, "GET", "/api/record")["state"] == "stopped"
    first = call(server, "POST", "/api/record/start")
    assert first["state"] == "recording" and first["name"].endswith(".mp4")
    assert call(server, "POST", "/api/record/start")["name"] == first["name"]  # idempotent
    time.sleep(1.5)  # record for about 1.5 s (the tests below check the file's duration)
    state = call(server, "GET", "/api/record")
    assert state["state"] == "recording" and state["name"] == first["name"]
    assert state["elapsed"] >= 1.0 and state["bytes"] > 0
    assert server.status()["recording"]["state"] == "recording"
    stopped = call(server, "POST", "/api/record/stop")
    assert (stopped["state"], stopped["name"]) == ("stopped", first["name"])
    assert call(server, "POST", "/api/record/stop")["state"] == "stopped"  # idempotent
    return str(first["name"])


def test_folder_is_created_and_recording_plays(server: ServerProcess, recorded: str) -> None:
    path = server.recordings / recorded
    assert path.is_file()
    with av.open(str(path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 20


def test_list_is_newest_first_with_details(server: ServerProcess, recorded: str) -> None:
    older = server.recordings / "2020-01-01T00-00-00Z.mp4"
    shutil.copy(server.recordings / recorded, older)
    (server.recordings / "notes.txt").write_text("not a video")
    try:
        rows = call(server, "GET", "/api/recordings")
    finally:
        older.unlink()
    assert [row["name"] for row in rows] == [recorded, older.name]
    newest = rows[0]
    assert newest["bytes"] == (server.recordings / recorded).stat().st_size
    assert 1.0 <= newest["duration"] <= 3.0
    assert newest["started"].endswith("Z") and newest["started"][:10] == recorded[:10]
    assert rows[1]["started"].startswith("2020-01-01T00:00:00")


def test_download_whole_and_ranges(server: ServerProcess, recorded: str) -> None:
    data = (server.recordings / recorded).read_bytes()
    status, headers, body = request(server, "GET", f"/recordings/{recorded}")
    assert status == 200 and body == data
    assert headers["Content-Type"] == "video/mp4" and headers.get("Accept-Ranges") == "bytes"

    status, headers, body = request(server, "GET", f"/recordings/{recorded}", {"Range": "bytes=100-1099"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes 100-1099/{len(data)}"
    assert body == data[100:1100]
    status, _, body = request(server, "GET", f"/recordings/{recorded}", {"Range": "bytes=-64"})
    assert status == 206 and body == data[-64:]
    status, _, body = request(server, "GET", f"/recordings/{recorded}",
                              {"Range": f"bytes={len(data) - 10}-"})
    assert status == 206 and body == data[-10:]


def test_delete(server: ServerProcess, recorded: str) -> None:
    copy = server.recordings / "2021-05-05T05-05-05Z.mp4"
    shutil.copy(server.recordings / recorded, copy)
    assert request(server, "DELETE", f"/api/recordings/{copy.name}")[0] == 204
    assert not copy.exists()
    assert request(server, "GET", f"/recordings/{copy.name}")[0] == 404
    assert request(server, "DELETE", f"/api/recordings/{copy.name}")[0] == 404
    assert copy.name not in [row["name"] for row in call(server, "GET", "/api/recordings")]


def test_the_file_being_written_cannot_be_deleted(server: ServerProcess, recorded: str) -> None:
    state = call(server, "POST", "/api/record/start")  # answers once the file is open
    try:
        assert request(server, "DELETE", f"/api/recordings/{state['name']}")[0] == 409
        rows = call(server, "GET", "/api/recordings")
        assert rows[0]["name"] == state["name"] and rows[0]["recording"] is True
    finally:
        call(server, "POST", "/api/record/stop")
    assert (server.recordings / state["name"]).exists()
    assert request(server, "DELETE", f"/api/recordings/{state['name']}")[0] == 204


@pytest.mark.parametrize("path", [
    "../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2Fetc%2Fpasswd", "/etc/passwd", "..%5C..%5Csecret.mp4", "..", "%2e%2e", ".hidden.mp4",
    "x.mp4%00.txt", "a%00", "a" * 300 + ".mp4", "escape.mp4", "..%2Fsecret.mp4", "%252e%252e%252fsecret.mp4",
])
def test_names_cannot_escape_the_folder(server: ServerProcess, recorded: str, path: str) -> None:
    outside = server.recordings.parent / "secret.mp4"
    outside.write_bytes(SECRET)
    link = server.recordings / "escape.mp4"
    if not link.is_symlink():
        link.symlink_to(outside)
    for method, prefix in (("GET", "/recordings/"), ("DELETE", "/api/recordings/")):
        status, _, body = request(server, method, prefix + path)
        assert status in (400, 404), (method, path, status)
        assert SECRET not in body and b"root:" not in body
    assert outside.read_bytes() == SECRET and link.is_symlink()
    assert "escape.mp4" not in [row["name"] for row in call(server, "GET", "/api/recordings")]


def test_start_refused_when_the_disk_is_low(start_server: StartServer) -> None:
    server = start_server("--min-free-percent", "100")
    status, _, body = request(server, "POST", "/api/record/start")
    assert status == 503
    answer = json.loads(body)
    assert answer["state"] == "stopped" and "low disk space" in answer["error"]
    assert list(server.recordings.iterdir()) == []


@pytest.mark.parametrize("make", ["under-a-file", "is-a-file"])
def test_unusable_folder_is_a_startup_error(tmp_path: Path, make: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    target = blocker / "recordings" if make == "under-a-file" else blocker
    done = subprocess.run(
        camcast_command("--source", "testpattern", "--host", "127.0.0.1", "--port", "0",
                        "--recordings", str(target)),
        capture_output=True, text=True, timeout=30, env=clean_env(), cwd=tmp_path)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"camcast: error: --recordings {target}:"), done.stderr


def test_unauthenticated_requests_never_touch_files(tmp_path: Path) -> None:
    server = launch(tmp_path / "guarded", ["--token", "s3cret-token"])
    try:
        (server.recordings / "2022-02-02T02-02-02Z.mp4").write_bytes(b"x" * 100)
        assert request(server, "DELETE", "/api/recordings/2022-02-02T02-02-02Z.mp4")[0] == 401
        assert request(server, "POST", "/api/record/start")[0] == 401
        assert (server.recordings / "2022-02-02T02-02-02Z.mp4").exists()
        status, _, body = request(server, "GET", "/recordings/2022-02-02T02-02-02Z.mp4?token=s3cret-token")
        assert status == 200 and body == b"x" * 100  # <video src> can only carry the token in the query
    finally:
        server.terminate()
    assert not any(p.suffix == ".mp4" and p.stat().st_size > 100 for p in server.recordings.iterdir())
    assert os.path.isdir(server.recordings)


def test_names_are_never_reused(tmp_path: Path) -> None:
    start_us = 1_700_000_000_123_456
    paths = []
    for _ in range(3):
        path, handle = create_unique(tmp_path, start_us, "mp4")
        handle.write(b"x")
        handle.close()
        paths.append(path.name)
    assert paths == ["2023-11-14T22-13-20Z.mp4", "2023-11-14T22-13-20Z-1.mp4", "2023-11-14T22-13-20Z-2.mp4"]
    assert all((tmp_path / name).read_bytes() == b"x" for name in paths)
