"""The benchmark's quick mode runs end to end (servers and clients in subprocesses) and writes its report."""

from __future__ import annotations

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
