"""Several cameras: the TOML --config file, --camera NAME=SOURCE, the --source shorthand, each camera's
recordings folder, and the one-line errors that name the file, camera and key."""

from __future__ import annotations

import re
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from camcast.cameraconfig import CAMERA_KEYS
from camcast.config import Config, ConfigError, load_config
from support.server import camcast_command, clean_env

README = Path(__file__).resolve().parents[1] / "README.md"


def write(folder: Path, text: str, name: str = "cams.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def load(path: Path, *argv: str, env: dict[str, str] | None = None) -> Config:
    return load_config(["--config", str(path), *argv], env=env or {})


def summary(config: Config) -> list[tuple[str, str]]:
    return [(camera.name, camera.source) for camera in config.cameras]


EXAMPLE = """\
    port = 8081
    fps = 15
    ice_address = ["127.0.0.1"]

    [cameras.front]
    source = "/dev/video0"
    size = "1280x720"
    on_demand = true

    [cameras.garden]
    source = "rtsp://192.0.2.10/stream"
    bitrate = 1000000
    max_recordings_bytes = "20G"
"""


def test_file_gives_global_options_and_cameras_in_file_order(tmp_path: Path) -> None:
    config = load(write(tmp_path, EXAMPLE))
    assert config.port == 8081
    assert config.ice_addresses == ("127.0.0.1",)
    assert summary(config) == [("front", "/dev/video0"), ("garden", "rtsp://192.0.2.10/stream")]
    front, garden = config.cameras
    assert (front.size, front.fps, front.on_demand, front.bitrate) == ("1280x720", 15, True, 2_000_000)
    assert (garden.size, garden.fps, garden.on_demand, garden.bitrate) == ("640x480", 15, False, 1_000_000)
    assert garden.max_recordings_bytes == 20 * 1024**3
    assert front.max_recordings_bytes == 0


def test_precedence_file_then_environment_then_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        port = 8081
        jpeg_quality = 60
        fps = 15
        max_peers = 5
        ice_address = ["192.0.2.1"]
        [cameras.a]
        source = "testpattern"
        fps = 10
        [cameras.b]
        source = "testpattern"
    """)
    config = load(path, "--fps", "20", "--max-peers", "7",
                  env={"CAMCAST_PORT": "9000", "CAMCAST_FPS": "12", "CAMCAST_ICE_ADDRESS": "127.0.0.1"})
    assert config.jpeg_quality == 60  # the file over the default
    assert config.port == 9000  # the environment over the file
    assert config.ice_addresses == ("127.0.0.1",)  # a list replaces the file's, as on the command line
    assert (config.fps, config.max_peers) == (20, 7)  # the command line over both
    a, b = config.cameras
    assert a.fps == 10  # a camera's own table is more specific than any global value
    assert b.fps == 20
    assert (a.jpeg_quality, b.jpeg_quality) == (60, 60)


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    config = load_config([], env={"CAMCAST_CONFIG": str(path)})
    assert config.config_file == path
    assert [camera.name for camera in config.cameras] == ["front", "garden"]


def test_camera_option_replaces_a_file_cameras_source_or_adds_one(tmp_path: Path) -> None:
    config = load(write(tmp_path, EXAMPLE), "--camera", "front=testpattern", "--camera", "back=/dev/video1")
    assert summary(config) == [("front", "testpattern"), ("garden", "rtsp://192.0.2.10/stream"),
                               ("back", "/dev/video1")]
    assert config.cameras[0].size == "1280x720"  # the rest of front's table stays


def test_cameras_from_the_command_line_and_the_environment() -> None:
    config = load_config(["--camera", "a=testpattern", "--camera", "b=/dev/video1", "--fps", "12"], env={})
    assert summary(config) == [("a", "testpattern"), ("b", "/dev/video1")]
    assert [camera.fps for camera in config.cameras] == [12, 12]
    from_env = load_config([], env={"CAMCAST_CAMERA": "x=testpattern,y=testpattern"})
    assert summary(from_env) == [("x", "testpattern"), ("y", "testpattern")]
    # The command line's list replaces the environment's.
    both = load_config(["--camera", "z=testpattern"], env={"CAMCAST_CAMERA": "x=testpattern"})
    assert summary(both) == [("z", "testpattern")]


def test_source_alone_is_one_camera_named_default(tmp_path: Path) -> None:
    config = load_config(["--source", "testpattern", "--recordings", str(tmp_path / "rec")], env={})
    assert summary(config) == [("default", "testpattern")]
    assert config.cameras[0].recordings == tmp_path / "rec"
    assert load_config([], env={}).cameras[0].source == "auto"


@pytest.mark.parametrize("how", ["command line", "environment", "file"])
def test_explicit_source_with_other_cameras_is_camera_default_first(tmp_path: Path, how: str) -> None:
    top = 'source = "/dev/video2"\n' if how == "file" else ""
    path = write(tmp_path, top + '[cameras.front]\nsource = "/dev/video0"\n')
    argv = ["--source", "/dev/video2"] if how == "command line" else []
    env = {"CAMCAST_SOURCE": "/dev/video2"} if how == "environment" else {}
    config = load(path, *argv, "--camera", "back=/dev/video1", env=env)
    assert summary(config) == [("default", "/dev/video2"), ("front", "/dev/video0"), ("back", "/dev/video1")]


def test_source_option_gives_a_file_camera_named_default_its_source(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        source = "/dev/video5"
        [cameras.front]
        source = "/dev/video0"
        [cameras.default]
        source = "/dev/video2"
        fps = 10
    """)
    # The table is more specific than the top of the same file...
    assert summary(load(path)) == [("front", "/dev/video0"), ("default", "/dev/video2")]
    # ...and the command line wins over the file, as with --camera default=...; it comes first.
    config = load(path, "--source", "/dev/video3")
    assert summary(config) == [("default", "/dev/video3"), ("front", "/dev/video0")]
    assert config.cameras[0].fps == 10


def test_each_of_several_cameras_records_into_its_own_folder(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        [cameras.a]
        source = "testpattern"
        [cameras.b]
        source = "testpattern"
        recordings = "elsewhere"
    """)
    rec = tmp_path / "rec"
    config = load(path, "--recordings", str(rec), "--camera", "c=testpattern")
    assert [camera.recordings for camera in config.cameras] == [rec / "a", Path("elsewhere"), rec / "c"]
    assert config.recordings == rec
    one = load(write(tmp_path, '[cameras.a]\nsource = "testpattern"\n', "one.toml"), "--recordings", str(rec))
    assert one.cameras[0].recordings == rec  # one camera keeps the folder as it is


def test_files_urls_and_the_test_pattern_may_serve_several_cameras(tmp_path: Path) -> None:
    video = str(tmp_path / "clip.mp4")
    config = load_config(["--camera", "a=testpattern", "--camera", "b=testpattern", "--camera", f"c={video}",
                          "--camera", f"d={video}", "--camera", "e=rtsp://192.0.2.1/s",
                          "--camera", "f=rtsp://192.0.2.1/s"], env={})
    assert len(config.cameras) == 6


def test_readme_example_is_a_valid_config(tmp_path: Path) -> None:
    section = README.read_text().split("### Several cameras", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no TOML example under Several cameras"
    config = load(write(tmp_path, match.group(1)), "--recordings", "rec")
    assert [camera.name for camera in config.cameras] == ["front", "garden", "doorway"]
    assert [camera.recordings for camera in config.cameras] == [Path("rec/front"), Path("rec/garden"),
                                                                Path("/srv/doorway")]


def test_readme_lists_every_per_camera_option() -> None:
    section = README.read_text().split("**Per-camera options**", 1)[1].split("The others", 1)[0]
    assert set(re.findall(r"`(\w+)`", section)) == CAMERA_KEYS


def error(path: Path, *argv: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(path, *argv)
    message = str(caught.value)
    assert "\n" not in message
    return message


FRONT = '[cameras.front]\nsource = "testpattern"\n'

# (what, the file, the message after "<file>: ")
FILE_MISTAKES = [
    ("unknown camera key", FRONT + "fsp = 10\n", "[cameras.front] fsp: unknown key (did you mean fps?)"),
    ("unknown top-level key", "prot = 8080\n" + FRONT, "prot: unknown key (did you mean port?)"),
    ("a camera outside [cameras]", '[front]\nsource = "testpattern"\n',
     "front: unknown key (a camera is a [cameras.front] table)"),
    ("[camera.NAME]", '[camera.front]\nsource = "testpattern"\n',
     "camera: unknown key (did you mean cameras?)"),
    ("camera name", '[cameras."Front!"]\nsource = "testpattern"\n',
     "[cameras.Front!]: camera names are 1-32 of a-z 0-9 _ -"),
    ("string for a number", FRONT + 'fps = "fast"\n',
     '[cameras.front] fps: expected a number, got a string ("fast")'),
    ("boolean for an integer", FRONT + "bitrate = true\n",
     "[cameras.front] bitrate: expected a whole number, got a boolean (true)"),
    ("fraction for an integer", "max_peers = 2.5\n",
     "max_peers: expected a whole number, got a number (2.5)"),
    ("string for a boolean", FRONT + 'on_demand = "yes"\n',
     '[cameras.front] on_demand: expected true or false, got a string ("yes")'),
    ("number for a size", FRONT + "size = 640\n",
     '[cameras.front] size: expected a string such as "640x480", got a whole number (640)'),
    ("size syntax", FRONT + 'size = "big"\n',
     "[cameras.front] size: 'big' is not WIDTHxHEIGHT, e.g. 640x480"),
    ("byte count syntax", FRONT + 'max_recordings_bytes = "lots"\n',
     "[cameras.front] max_recordings_bytes: 'lots' is not a size, e.g. 500M or 2G"),
    ("table for a string", FRONT + "codec = {}\n", "[cameras.front] codec: expected a string, got a table"),
    ("list of numbers", "ice_address = [1]\n" + FRONT,
     "ice_address: expected a list of strings, got an array"),
    ("value out of range in a table", FRONT + "fps = 0\n",
     "[cameras.front] fps 0: must be more than 0 and at most 240"),
    ("value out of range at the top", "jpeg_quality = 0\n" + FRONT, "jpeg_quality 0: must be 1..100"),
    ("idle timeout out of range", FRONT + "idle_timeout = 0.1\n",
     "[cameras.front] idle_timeout 0.1: must be 0.5..3600 seconds"),
    ("pre-roll needs the mp4 recorder", FRONT + 'recorder = "opencv"\npreroll = 2\n',
     "[cameras.front] preroll keeps encoded packets: it needs recorder mp4"),
    ("a bad ICE server at the top", 'ice_server = ["stun:"]\n',
     "ice_server stun:: expected stun:HOST[:PORT] or turn:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp]"),
    ("global option in a camera table", FRONT + "port = 8080\n",
     "[cameras.front] port: a global option, set it at the top of the file "
     "(before the [cameras.NAME] tables)"),
    ("camera without a source", "[cameras.front]\nfps = 10\n",
     '[cameras.front] source: missing (every camera needs one, e.g. source = "/dev/video0")'),
    ("cameras not a table", 'cameras = ["front"]\n', "cameras: expected [cameras.NAME] tables, got an array"),
    ("a camera not a table", '[cameras]\nfront = "/dev/video0"\n',
     'cameras.front: expected a table [cameras.front], got a string ("/dev/video0")'),
    ("two cameras on one device", '[cameras.a]\nsource = "0"\n[cameras.b]\nsource = "/dev/video0"\n',
     "[cameras.b] source /dev/video0: the same device as camera a"),
    ("auto is camera 0", '[cameras.a]\nsource = "auto"\n[cameras.b]\nsource = "0"\n',
     "[cameras.b] source 0: the same device as camera a"),
    ("invalid TOML", "fps = \n", "line 1, column 7: invalid TOML (invalid value)"),
    ("a table twice", FRONT + FRONT,
     "line 3, column 15: invalid TOML (cannot declare ('cameras', 'front') twice)"),
    ("unterminated string", 'source = "abc', "end of file: invalid TOML (unterminated string)"),
]


@pytest.mark.parametrize("text, expected", [case[1:] for case in FILE_MISTAKES],
                         ids=[case[0] for case in FILE_MISTAKES])
def test_file_mistakes_name_the_file_camera_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert error(path) == f"{path}: {expected}"


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert error(missing) == f"{missing}: cannot read (No such file or directory)"
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('# caméra\n'.encode("latin-1"))
    assert error(latin1) == f"{latin1}: cannot read (not UTF-8 text)"


def test_a_device_link_is_the_device_it_points_to(tmp_path: Path) -> None:
    # As /dev/v4l/by-id/... links point at /dev/videoN (a device node that exists on every machine here).
    link = tmp_path / "usb-Webcam-video-index0"
    link.symlink_to("/dev/null")
    path = write(tmp_path, f'[cameras.a]\nsource = "/dev/null"\n[cameras.b]\nsource = "{link}"\n')
    assert error(path) == f"{path}: [cameras.b] source {link}: the same device as camera a"


def test_a_value_overridden_on_the_command_line_is_named_as_an_option(tmp_path: Path) -> None:
    path = write(tmp_path, "fps = 15\n" + FRONT)
    assert error(path, "--fps", "0") == "--fps 0: must be more than 0 and at most 240"
    assert error(path, "--size", "0x0") == "--size 0x0: width and height must be 1..7680x4320"


def test_two_cameras_sharing_a_folder(tmp_path: Path) -> None:
    path = write(tmp_path, '[cameras.a]\nsource = "testpattern"\nrecordings = "rec/b"\n')
    assert error(path, "--recordings", "rec", "--camera", "b=testpattern") == (
        f"{path}: [cameras.a] recordings rec/b: the folder of camera b too (each camera needs its own)")


@pytest.mark.parametrize("argv, expected", [
    (["--camera", "a=testpattern", "--camera", "a=/dev/video1"], "--camera a: given twice"),
    (["--camera", "Bad=x"], "--camera Bad=x: camera names are 1-32 of a-z 0-9 _ -"),
    (["--camera", "front"], "--camera front: expected NAME=SOURCE, e.g. front=/dev/video0"),
    (["--camera", "a=1", "--camera", "b=/dev/video1"], "--camera b=/dev/video1: the same device as camera a"),
    (["--source", "/dev/video1", "--camera", "b=1"], "--camera b=1: the same device as camera default"),
    (["--source", "testpattern", "--camera", "default=x"],
     "--camera default: given twice (--source testpattern is camera default when there are other cameras)"),
    (["--camera", "a=testpattern", "--fps", "0"], "--fps 0: must be more than 0 and at most 240"),
    (["--idle-timeout", "4000"], "--idle-timeout 4000: must be 0.5..3600 seconds"),
])
def test_command_line_camera_mistakes(argv: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(argv, env={})
    assert str(caught.value) == expected


def test_camera_on_a_device_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[cameras.front]\nsource = "/dev/video0"\n')
    assert error(path, "--camera", "back=0") == "--camera back=0: the same device as camera front"


def test_bad_config_files_exit_2_with_one_line(tmp_path: Path) -> None:
    files = {
        "unknown key": (write(tmp_path, FRONT + "fsp = 10\n", "a.toml"), "[cameras.front] fsp: unknown key"),
        "wrong type": (write(tmp_path, FRONT + 'fps = "fast"\n', "b.toml"), "expected a number"),
        "syntax": (write(tmp_path, "fps = \n", "c.toml"), "line 1, column 7: invalid TOML"),
        "missing": (tmp_path / "missing.toml", "cannot read"),
        "same device": (write(tmp_path, '[cameras.a]\nsource = "0"\n[cameras.b]\nsource = "/dev/video0"\n',
                              "d.toml"), "the same device as camera a"),
    }
    procs = {
        what: subprocess.Popen(camcast_command("--config", str(path), "--port", "0"), cwd=tmp_path,
                               env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        for what, (path, _) in files.items()
    }
    try:
        results = {what: proc.communicate(timeout=60) for what, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for what, (out, err) in results.items():
        path, words = files[what]
        lines = err.strip().splitlines()
        assert procs[what].returncode == 2, f"{what}: {err!r}"
        assert len(lines) == 1, f"{what}: {err!r}"
        assert lines[0].startswith(f"camcast: error: {path}: "), f"{what}: {err!r}"
        assert words in lines[0], f"{what}: {err!r}"
        assert "serving" not in out


def _check(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(camcast_command("--check", *argv), cwd=tmp_path, env=clean_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def test_check_validates_a_good_configuration_and_exits_without_listening(tmp_path: Path) -> None:
    path = write(tmp_path, '[cameras.front]\nsource = "testpattern"\n[cameras.back]\nsource = "testpattern"\n'
                 'on_demand = true\n')
    with socket.socket() as taken:  # --check never binds: a port in use is no error for it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _check(tmp_path, "--config", str(path), "--port", str(port),
                      "--recordings", str(tmp_path / "rec"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "camcast: configuration OK: 2 cameras (front, back)"
    assert "serving" not in done.stdout
    # The folders a start would write into are made (and found writable), one per camera.
    assert (tmp_path / "rec" / "front").is_dir() and (tmp_path / "rec" / "back").is_dir()


def test_check_reports_a_bad_file_and_a_source_that_cannot_open(tmp_path: Path) -> None:
    bad = write(tmp_path, FRONT + "fsp = 10\n", "bad.toml")
    done = _check(tmp_path, "--config", str(bad))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"camcast: error: {bad}: [cameras.front] fsp: unknown key (did you mean fps?)"]
    missing = tmp_path / "missing.mp4"
    done = _check(tmp_path, "--camera", "a=testpattern", "--camera", f"b={missing}",
                  "--recordings", str(tmp_path / "rec"))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"camcast: error: camera b: --source {missing}: "), lines[0]
