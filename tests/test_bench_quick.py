"""The benchmark's quick mode runs end to end (servers and clients in subprocesses) and writes its report."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_quick_mjpeg_bench_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    tiny = {"size": "320x240", "clients": "1,3", "baseline_clients": "3", "hd_clients": "",
            "hd_baseline_clients": "", "window": "1", "warmup": "0.5", "probes": "2"}
    cmd = [sys.executable, "-m", "bench", "--quick", "--only", "mjpeg", "--repeats", "1", "--quiet",
           "--out", str(out)]
    for key, value in tiny.items():
        cmd += ["--set", f"mjpeg.{key}={value}"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    report = (out / "report.md").read_text()
    assert "## MJPEG" in report
    assert "### Targets" in report
    assert "### 320x240 @ 30 fps" in report
    assert "| server | clients | server cores | CPU ms per client-frame | fps/client min |" in report
    assert "### camcast against the one-encode-per-client Flask baseline" in report
    for png in ("mjpeg_cpu.png", "mjpeg_fps.png", "mjpeg_latency_cdf.png", "mjpeg_rss.png"):
        assert (out / png).stat().st_size > 1000
        assert f"]({png})" in report
    # Every client got frames: the servers and the load generator really talked.
    assert "Client errors: 0;" in report


def _quick(out: Path, suite: str, settings: dict[str, str]) -> str:
    cmd = [sys.executable, "-m", "bench", "--quick", "--only", suite, "--repeats", "1", "--quiet",
           "--out", str(out)]
    for key, value in settings.items():
        cmd += ["--set", f"{suite}.{key}={value}"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    return (out / "report.md").read_text()


def test_quick_webrtc_bench_writes_report(tmp_path: Path) -> None:
    tiny = {"size": "320x240", "peers": "1,3", "baseline_peers": "1", "window": "1", "settle": "0.5",
            "probes": "1"}
    report = _quick(tmp_path, "webrtc", tiny)
    assert "## WebRTC" in report
    assert "### 320x240 @ 30 fps" in report
    assert "### Peers per server core (320x240, every peer >= 29 fps, latency kept low)" in report
    assert "| camcast | marker | 3 |" in report
    assert "| aiortc relay (per-peer encoder) | marker | 1 |" in report
    for png in ("webrtc_cpu.png", "webrtc_fps.png", "webrtc_latency_cdf.png", "webrtc_rss.png"):
        assert (tmp_path / png).stat().st_size > 1000
        assert f"]({png})" in report
    # Every peer connected and counted frames; the decoding peer read stamps.
    assert "Peer errors (connect or probe): 0;" in report
    assert "| capture-to-decode latency at 1 peer(s) |" in report


def test_quick_recording_bench_writes_report(tmp_path: Path) -> None:
    report = _quick(tmp_path, "recording", {"size": "320x240", "peers": "2", "window": "1", "rounds": "1",
                                             "presses": "1"})
    assert "## Recording while WebRTC peers watch" in report
    assert "### Recordings of the CPU windows, read back (PyAV)" in report
    assert "| press to first recorded frame |" in report
    assert "encoders running while recording: h264 |" in report
    for png in ("recording_cpu.png", "recording_press_cdf.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_quick_browser_bench_writes_report(tmp_path: Path) -> None:
    report = _quick(tmp_path, "browser", {"size": "320x240", "sample_seconds": "2", "settle": "0.5"})
    assert "## Headless Chromium (the bundled player)" in report
    assert "| WebRTC | video/H264 |" in report
    assert "| MJPEG | MJPEG |" in report
    assert "Console or page errors: 0." in report
    assert (tmp_path / "browser_latency_cdf.png").stat().st_size > 1000


def test_quick_network_bench_writes_report(tmp_path: Path) -> None:
    report = _quick(tmp_path, "network", {"phases": "4000:6,600:6,4000:6", "window": "4", "settle": "2"})
    assert "## Emulated networks (per-viewer adaptation)" in report
    assert "| step-down after the drop (camcast, adaptation (renditions)) |" in report
    assert "### A clean viewer beside a troubled one (camcast, adaptation on)" in report
    assert (tmp_path / "network_timeline.png").stat().st_size > 1000


def test_quick_cameras_bench_writes_report(tmp_path: Path) -> None:
    tiny = {"size": "320x240", "window": "1", "settle": "0.5", "start_slack": "0.5", "idle_settle": "0.5",
            "idle_window": "2", "awake_window": "0.5"}
    report = _quick(tmp_path, "cameras", tiny)
    assert "## Many cameras (320x240 @ 30 fps test patterns)" in report
    assert "### One camera against 2 (320x240 @ 30 fps, 2 WebRTC peers per camera)" in report
    assert "| cam1 |" in report  # every camera of the two-camera point has its row
    assert "| capture threads, 4 on-demand cameras, no viewer | 0 |" in report
    assert "| idle camera: MJPEG request to first frame |" in report
    for png in ("cameras_cpu.png", "cameras_fps.png", "cameras_wake_cdf.png"):
        assert (tmp_path / png).stat().st_size > 1000
        assert f"]({png})" in report
    # Every peer connected to its camera and every wake-up request got a frame.
    assert "Peer errors: 0;" in report
    assert "errors: 0)" in report


def test_quick_renditions_bench_writes_report(tmp_path: Path) -> None:
    tiny = {"window": "1", "idle_window": "0.5", "settle": "0.5", "many_peers": "4"}
    report = _quick(tmp_path, "renditions", tiny)
    assert "## Renditions: the cost of the ladder (640x480 @ 30 fps)" in report
    assert "| extra rendition medium (320x240 @ 30 fps, 400 kbit/s): high -> high+medium |" in report
    assert "| marginal CPU per peer, 4 peers (half high, half medium) vs 1 + 1 |" in report
    assert "### What one more active rendition costs" in report
    for png in ("renditions_cpu.png", "renditions_peers.png"):
        assert (tmp_path / png).stat().st_size > 1000
        assert f"]({png})" in report
    # Every peer connected, got its pinned rendition and counted frames of it.
    assert "Peer errors: 0;" in report
    assert "rendition than pinned (from /api/status): none." in report
    assert "| medium-only | 320x240 @ 30 fps, 400 kbit/s (one encode) | 1 high | h264 " in report


def test_quick_whip_bench_writes_report(tmp_path: Path) -> None:
    from support import janus

    assert janus.missing() is None, janus.missing()
    tiny = {"subscribers": "2", "window": "1.5", "settle": "1.5", "lead": "1.5", "idle_window": "0.5"}
    report = _quick(tmp_path, "whip", tiny)
    assert "## WHIP: publishing to Janus" in report
    assert "| camcast CPU with the publisher | rise <= the cost of one local WebRTC peer |" in report
    assert "| whip | " in report and "| local | " in report
    assert "### Janus killed and started again" in report
    for png in ("whip_latency_cdf.png", "whip_restart_cdf.png"):
        assert (tmp_path / png).stat().st_size > 1000
        assert f"]({png})" in report
    # Every subscriber joined through Janus and got frames; the restarted Janus played again.
    assert "Subscriber errors: 0." in report
    assert "never played 0" in report


def test_quick_audio_bench_writes_report(tmp_path: Path) -> None:
    # One peer count: the four servers (camcast and the relay, with and without sound) in about 30 s.
    report = _quick(tmp_path, "audio", {"peers": "2", "window": "1", "settle": "0.5"})
    assert "## Audio: one shared Opus encode vs one per peer" in report
    assert "| camcast (one shared Opus encode) | tone | 2 |" in report
    assert "| aiortc MediaRelay (Opus per peer) | none | 2 |" in report
    assert "### The audio part: cores with the sound minus cores without it" in report
    # Every peer of a run with sound got the packets; none got any without.
    assert "| every listener gets the sound | all peers sent audio, ~50 packets/s |" in report
    assert "| met |" in report.split("| every listener gets the sound |", 1)[1].splitlines()[0]
    assert "Peer errors: 0;" in report
    assert (tmp_path / "audio_cpu.png").stat().st_size > 1000


def test_quick_passthrough_bench_writes_report(tmp_path: Path) -> None:
    # The RTSP camera (GStreamer, 640x480, a 1 s GOP), passed through and transcoded; joins; MJPEG.
    tiny = {"window": "1", "idle_window": "0.3", "latency_window": "1", "joins": "2", "mjpeg_clients": "1",
            "mjpeg_window": "1"}
    report = _quick(tmp_path, "passthrough", tiny)
    assert "## Passthrough: cameras that already encode (640x480 @ 30 fps)" in report
    assert "| RTSP 640x480 @ 30 camera, 2 WebRTC peers + recording: server CPU |" in report
    for mode in ("passthrough", "transcode"):
        assert f"| RTSP H.264, 2 WebRTC peers + recording | {mode} |" in report
        assert f"| HTTP MJPEG, 1 MJPEG clients | {mode} |" in report
    assert "### A new WebRTC peer's first frame on the 1 s GOP camera" in report
    assert "| camcast passthrough (measured) | 2 |" in report
    assert "| plain relay (computed: the camera's next IDR once connected) |" in report
    assert ("| added by camcast passthrough, per frame: last packet at the peer - access unit at the "
            "camera's viewer |") in report
    for png in ("passthrough_cpu.png", "passthrough_joins.png", "passthrough_latency_cdf.png"):
        assert (tmp_path / png).stat().st_size > 1000
        assert f"]({png})" in report
    # The server passed the camera's own packets on, and every peer, join and client got pictures.
    assert "the server's passthrough mode: ['passthrough']." in report
    assert "Errors (peer connects, joins, MJPEG clients, latency viewers): 0." in report


def test_quick_avsync_bench_writes_report(tmp_path: Path) -> None:
    report = _quick(tmp_path, "avsync", {"seconds": "3", "settle": "1"})
    assert "## A/V sync: Chromium and recordings" in report
    assert "| A/V offset in Chromium (beep heard vs flash displayed) |" in report
    assert "| A/V offset in the recording (PyAV) |" in report
    # Chromium heard beeps and saw flashes, and the recording held both: real figures, not blanks.
    assert "(n=0" not in report and "| 1 | 0 |" not in report
    assert "Page errors: 0." in report
    for png in ("avsync_latency_cdf.png", "avsync_offset_cdf.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_quick_motion_bench_writes_report(tmp_path: Path) -> None:
    # A few clips (4 objects, half a minute of noise and of light ramps, one light-switch clip) through
    # the server's detector, beside one alternative setting; then a real server with and without --motion.
    tiny = {"per_bucket": "1", "noise_hours": "0.005", "ramp_hours": "0.005", "clip_minutes": "0.3",
            "switch_clips": "1", "switch_every": "6", "workers": "1", "variants": "start_after=0.2",
            "window": "1", "settle": "1"}
    cmd = [sys.executable, "-m", "bench", "--quick", "--only", "motion", "--quiet", "--out", str(tmp_path)]
    for key, value in tiny.items():
        cmd += ["--set", f"motion.{key}={value}"]
    # About 30 s on a quiet machine; rendering the clips is CPU work, so a busy one needs longer.
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    assert "## Motion detection: accuracy on labelled clips, and its cost" in report
    assert "| recall, objects >= 1 % of the picture (server defaults) | >= 0.98 | " in report
    assert "| false events per hour where nothing moves (noise-only and ramp-only video) | <= 1 | " in report
    assert "| detection cost, one 640x480 @ 30 camera | <= 0.02 cores | +" in report
    # Both settings ran every clip; the three object sizes >= 1 % were each labelled once.
    assert "| defaults | " in report and "| start_after=0.2 | " in report
    assert re.search(r"\| [01]\.\d{3} \([0-3] of 3 entries\) \|", report)
    # The light-switch clip's 4 switches are counted apart from false events, whatever the detector did.
    assert re.search(r"\| [0-4]/4(, \+\d+ other)? \| \d+ \|", report)
    # The server with --motion said so in /api/status (the suite checks), and its detector thread was found.
    assert "| 640x480 | on | " in report and "| 640x480 | off | " in report
    assert "the detector thread alone" in report
    for png in ("motion_recall.png", "motion_delay_cdf.png", "motion_cost.png"):
        assert (tmp_path / png).stat().st_size > 1000
        assert f"]({png})" in report
