"""Configuration (defaults ← CAMCAST_* ← command line) and the command line's behaviour on errors."""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import time
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import pytest

from camcast.config import CameraConfig, Config, ConfigError, build_parser, load_config
from conftest import StartServer
from support.server import camcast_command, clean_env


def test_defaults() -> None:
    config = load_config([], env={})
    # With no camera named, the global options make one camera, `default`.
    assert config == Config(cameras=(CameraConfig("default"),))
    assert (config.source, config.host, config.port) == ("auto", "127.0.0.1", 8080)
    assert (config.width, config.height, config.fps) == (640, 480, 30.0)


def test_environment_sets_every_kind_of_option() -> None:
    config = load_config([], env={
        "CAMCAST_SOURCE": "testpattern", "CAMCAST_PORT": "9000", "CAMCAST_SIZE": "320x240",
        "CAMCAST_FPS": "12.5", "CAMCAST_STAMP": "yes", "CAMCAST_JPEG_QUALITY": "60",
        "CAMCAST_RECORDINGS": "/tmp/rec", "CAMCAST_ICE_ADDRESS": "127.0.0.1,192.0.2.7",
        "CAMCAST_LOG_LEVEL": "debug", "UNRELATED": "x",
    })
    assert config.source == "testpattern"
    assert config.port == 9000
    assert (config.width, config.height, config.fps) == (320, 240, 12.5)
    assert config.stamp is True
    assert config.jpeg_quality == 60
    assert config.recordings == Path("/tmp/rec")
    assert config.ice_addresses == ("127.0.0.1", "192.0.2.7")
    assert config.log_level == "debug"


def test_command_line_wins_over_environment() -> None:
    env = {"CAMCAST_PORT": "9000", "CAMCAST_SIZE": "320x240", "CAMCAST_STAMP": "0",
           "CAMCAST_ICE_ADDRESS": "192.0.2.7", "CAMCAST_FPS": "12"}
    config = load_config(["--port", "9100", "--size", "160x120", "--stamp", "--ice-address", "127.0.0.1"],
                         env=env)
    assert config.port == 9100
    assert (config.width, config.height) == (160, 120)
    assert config.stamp is True
    assert config.fps == 12  # not given on the command line: the environment's value stays
    # A repeatable option replaces the environment's list; it does not add to it.
    assert config.ice_addresses == ("127.0.0.1",)


@pytest.mark.parametrize("argv", [
    ["--size", "0x0"], ["--size", "641x480"], ["--size", "8000x480"], ["--fps", "-1"], ["--fps", "0"],
    ["--fps", "1000"], ["--jpeg-quality", "0"], ["--jpeg-quality", "101"], ["--port", "70000"],
])
def test_invalid_values_are_config_errors(argv: list[str]) -> None:
    with pytest.raises(ConfigError, match=argv[0]):
        load_config(argv, env={})


@pytest.mark.parametrize("name, value", [
    ("CAMCAST_FPS", "abc"), ("CAMCAST_SIZE", "big"), ("CAMCAST_STAMP", "maybe"),
    ("CAMCAST_LOG_LEVEL", "loud"), ("CAMCAST_FPS", "-3"),
])
def test_invalid_environment_is_a_config_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError):
        load_config([], env={name: value})


Cases = dict[str, tuple[list[str], dict[str, str]]]


def _run_all(cases: Cases, cwd: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run several short-lived camcast processes at once (each exits by itself)."""
    procs = {
        name: subprocess.Popen(camcast_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True, cwd=cwd, env=clean_env(env))
        for name, (args, env) in cases.items()
    }
    results = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{name}: camcast {cases[name][0]} did not exit\n{err}")
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


def test_bad_options_exit_2_with_one_line(tmp_path: Path) -> None:
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("not a video\n")
    busy = socket.create_server(("127.0.0.1", 0))
    busy_port = busy.getsockname()[1]
    base = ["--source", "testpattern", "--host", "127.0.0.1", "--port", "0"]
    cases: Cases = {
        "size 0x0": ([*base, "--size", "0x0"], {}),
        "size syntax": ([*base, "--size", "huge"], {}),
        "negative fps": ([*base, "--fps", "-1"], {}),
        "missing file": ([*base, "--source", str(tmp_path / "missing.mp4")], {}),
        "not a video": ([*base, "--source", str(not_a_video)], {}),
        "no such camera": ([*base, "--source", "/dev/video63"], {}),
        "port in use": ([*base, "--port", str(busy_port)], {}),
        "unknown option": ([*base, "--frobnicate"], {}),
        "bad env": (base, {"CAMCAST_FPS": "fast"}),
    }
    try:
        results = _run_all(cases, tmp_path)
    finally:
        busy.close()
    expected_words = {
        "size 0x0": "--size", "size syntax": "--size", "negative fps": "--fps", "missing file": "missing.mp4",
        "not a video": "notes.mp4", "no such camera": "/dev/video63", "port in use": "in use",
        "unknown option": "--frobnicate", "bad env": "CAMCAST_FPS",
    }
    for name, result in results.items():
        what = f"{name}: camcast {' '.join(cases[name][0])}\nstderr: {result.stderr!r}"
        assert result.returncode == 2, what
        assert "Traceback" not in result.stderr, what
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, what
        assert lines[0].startswith("camcast: error: "), what
        assert expected_words[name] in lines[0], what
        assert "serving" not in result.stdout, what


def _option_actions() -> list[argparse.Action]:
    return [a for a in build_parser()._actions if a.option_strings and a.dest != "help"]


def test_help_documents_every_option(tmp_path: Path) -> None:
    result = _run_all({"help": (["--help"], {})}, tmp_path)["help"]
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("usage: camcast")
    assert "CAMCAST_" in text  # how to set options from the environment
    for action in _option_actions():
        for option in action.option_strings:
            assert option in text, f"{option} missing from --help"
        assert action.help, f"{action.option_strings[0]} has no help text"
    # Every setting is reachable from the command line (--size sets both width and height).
    dests = {a.dest for a in _option_actions()} | {"width", "height"}
    assert {f.name for f in fields(Config)} <= dests


def test_environment_and_command_line_on_a_running_server(start_server: StartServer) -> None:
    server = start_server(
        "--fps", "20",
        source=None,
        env={"CAMCAST_SOURCE": "testpattern", "CAMCAST_SIZE": "320x240", "CAMCAST_FPS": "10",
             "CAMCAST_JPEG_QUALITY": "50"},
    )
    status = server.status()
    assert status["source"] == "testpattern"
    assert status["size"] == "320x240"
    assert status["fps_target"] == 20
    code, headers, body = server.get("snapshot.jpg")
    assert code == 200 and headers["Content-Type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (240, 320, 3)


def _ipv6_loopback() -> bool:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback (::1) to listen on")
def test_serves_on_ipv6_loopback(start_server: StartServer) -> None:
    server = start_server("--host", "::1", wait=False)  # comes after the fixed --host 127.0.0.1
    deadline = time.monotonic() + 20
    while (match := re.search(r" at (http://\[::1\]:(\d+)/)", server.stdout())) is None:
        assert server.proc.poll() is None, f"the server did not start\n{server.describe()}"
        assert time.monotonic() < deadline, f"no serving line\n{server.describe()}"
        time.sleep(0.05)
    server.url, server.port = match.group(1), int(match.group(2))
    assert server.wait_health(200) == 200
