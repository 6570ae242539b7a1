#!/usr/bin/env python3
"""How camcast's WebRTC stream fares on a link whose rate steps: measurements on the emulated network.

The server (test pattern, 640x480 at 30 fps, its default bitrate) runs in the server's namespace of
the bed in tests/support/netlab.py, one viewer (aiortc, or Chromium through Playwright) in the
viewer's namespace, and the server side's tbf rate steps through the phases. Once a second it
records the link (what tbf let through and dropped), the server's /api/status for the session,
every RTCP packet the server's video sender receives (REMB, receiver reports with loss, jitter and
the sender's RTT, NACKs, PLIs; taken inside the server process by wrapping aiortc's
RTCRtpSender._handle_rtcp_packet, the server itself unchanged), and what the viewer saw (frames
decoded, capture-to-decode latency from the frame stamp, freezes; the aiortc viewer also logs the
RTCP it sends, Chromium its getStats()). Writes a CSV and a JSON per run into /tmp/netprobe/ and
prints a table per phase. Needs root. The viewers are bench/network_viewer.py's (the network bench
suite runs them too).

    python3 scripts/netprobe.py --viewer aiortc                       # 4 -> 1 -> 0.6 -> 4 Mbit/s, 20 s each
    python3 scripts/netprobe.py --viewer chromium --quick             # 8 s phases
    python3 scripts/netprobe.py --phases 4000:30,600:30,4000:30 --server-args="--adapt off"
    python3 scripts/netprobe.py --server-rev 45b5490                  # the server as of a git revision
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import runpy
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.network_viewer import Tail, jsonl_writer, rtcp_records  # noqa: E402 - after the path
from bench.network_viewer import main as view_main  # noqa: E402

OUT = Path("/tmp/netprobe")
DEFAULT_PHASES = "4000:20,1000:20,600:20,4000:20"  # kbit/s:seconds
QUICK_PHASES = "4000:8,1000:8,600:8,4000:8"
PLAY_TIMEOUT = 40.0  # s for the viewer's first decoded frame (a busy machine, a slow first phase)
CAPTURE = "640x480"


# -- `netprobe.py tap LOG -- ARGS`: camcast with its video senders' incoming RTCP logged -----------
def tap_main(log: str, camcast_args: list[str]) -> None:
    from aiortc.rtcrtpsender import RTCRtpSender

    write = jsonl_writer(log)
    original = RTCRtpSender._handle_rtcp_packet

    async def handle(self: RTCRtpSender, packet: Any) -> None:
        await original(self, packet)
        if self.kind != "video":
            return
        for record in rtcp_records(packet, self._ssrc):
            if record["kind"] == "rr":
                rtt = getattr(self, "_RTCRtpSender__rtt", None)  # aiortc's smoothed RTT from RR
                record["rtt_ms"] = None if rtt is None else rtt * 1000
            write({"sender": id(self), **record})

    RTCRtpSender._handle_rtcp_packet = handle  # type: ignore[method-assign]
    import camcast

    write({"kind": "start", "camcast": camcast.__file__})
    sys.argv = ["camcast", *camcast_args]
    runpy.run_module("camcast", run_name="__main__", alter_sys=True)


# -- the run ----------------------------------------------------------------------------------------
@dataclass
class Phase:
    kbps: int
    seconds: int


def parse_phases(text: str) -> list[Phase]:
    phases = []
    for part in text.split(","):
        kbps, _, seconds = part.partition(":")
        phases.append(Phase(int(kbps), int(seconds)))
    return phases


def export_revision(rev: str) -> Path:
    """The server and player of a git revision, unpacked once under /tmp/netprobe/src-<sha>."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], check=True,
                         capture_output=True, text=True).stdout.strip()
    target = OUT / f"src-{sha}"
    if not (target / "server" / "camcast").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "server", "client"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def session_of(status: dict[str, Any]) -> dict[str, Any]:
    sessions = (status.get("webrtc") or {}).get("sessions") or []
    return sessions[0] if sessions else {}


def probe(args: argparse.Namespace) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from support.netlab import launch_server, netlab

    phases = parse_phases(QUICK_PHASES if args.quick else args.phases)
    name = f"{time.strftime('%Y%m%dT%H%M%S')}-{args.viewer}" + (f"-{args.label}" if args.label else "")
    run_dir = OUT / name
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {}
    revision = "working tree"
    if args.server_rev:
        env["PYTHONPATH"] = str(export_revision(args.server_rev) / "server")
        revision = args.server_rev
    tap_log, viewer_log = run_dir / "rtcp.jsonl", run_dir / "viewer.jsonl"
    meta: dict[str, Any] = {
        "viewer": args.viewer, "page": args.page, "via": args.via, "server_revision": revision,
        "server_args": args.server_args, "phases": [vars(p) for p in phases],
        "loadavg_start": os.getloadavg(), "cpus": os.cpu_count(), "loss": args.loss,
    }

    def tapped(*camcast_args: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "tap", str(tap_log), "--", *camcast_args]

    rows: list[dict[str, Any]] = []
    with netlab() as lab:
        lab.server.shape(phases[0].kbps * 1000)
        if args.loss:
            # Past the bottleneck, unseen by the sender, as on a real lossy path.
            lab.server.loss(args.loss, media_only=True, on_arrival=True)
        server = launch_server(lab, run_dir / "server", ["--size", CAPTURE, "--fps", "30",
                                                          *shlex.split(args.server_args)],
                               env=env, command=tapped)
        viewer_cmd = [sys.executable, str(Path(__file__).resolve()), "view", args.viewer, server.url,
                      str(viewer_log), "--via", args.via, "--page", args.page]
        viewer_env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
        with open(run_dir / "viewer.out", "wb") as viewer_out:
            viewer = lab.viewer.popen(viewer_cmd, stdout=viewer_out, stderr=subprocess.STDOUT, env=viewer_env)
        vtail, rtail = Tail(viewer_log), Tail(tap_log)
        deadline = time.monotonic() + PLAY_TIMEOUT
        while not any(r.get("event") == "playing" for r in vtail.records):
            vtail.read()
            if viewer.poll() is not None:
                raise SystemExit(f"the viewer ended ({viewer.returncode}): {run_dir / 'viewer.out'}")
            if time.monotonic() > deadline:
                print(f"netprobe: no frame within {PLAY_TIMEOUT:g} s; measuring anyway", file=sys.stderr)
                break
            time.sleep(0.1)
        rows = measure(lab, server, phases, vtail, rtail, meta)
        viewer.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            viewer.wait(15)
        vtail.read()
        server.terminate(10)
        if viewer.returncode not in (0, -signal.SIGTERM):
            print(f"netprobe: the viewer ended with {viewer.returncode}: {run_dir / 'viewer.out'}",
                  file=sys.stderr)
    meta["loadavg_end"] = os.getloadavg()
    meta["camcast"] = next((r.get("camcast") for r in rtail.records if r.get("kind") == "start"), None)
    summary = summarize(rows, phases, rtail.records, meta["t0"])
    write_outputs(run_dir, rows, summary, meta, rtail.records, vtail.records)
    print_summary(summary, meta)
    return run_dir


def measure(lab: Any, server: Any, phases: list[Phase], vtail: Tail, rtail: Tail,
            meta: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    start = time.monotonic()
    meta["t0"] = time.time()
    qdisc = lab.server.qdisc()
    session = session_of(lab.server.call(server.status))
    remb = None
    last_rr: dict[str, Any] | None = None
    viewer: dict[str, Any] = {}
    tick = 0
    for index, phase in enumerate(phases):
        lab.server.shape(phase.kbps * 1000)
        for _ in range(phase.seconds):
            tick += 1
            time.sleep(max(0.0, start + tick - time.monotonic()))  # one sample a second, on schedule
            new_qdisc = lab.server.qdisc()
            new_session = session_of(lab.server.call(server.status))
            rtcp = rtail.read()
            for record in vtail.read():
                if "fps" in record:
                    viewer = record
            rembs = [r["bps"] for r in rtcp if r.get("kind") == "remb"]
            remb = rembs[-1] if rembs else remb
            rrs = [r for r in rtcp if r.get("kind") == "rr"]
            loss = None
            if rrs and last_rr is not None:
                # From the cumulative counts: each report's own fraction covers only the short time
                # since the previous one (browsers send one with every NACK).
                expected = rrs[-1]["highest_sequence"] - last_rr["highest_sequence"]
                if expected > 0:
                    loss = (rrs[-1]["packets_lost"] - last_rr["packets_lost"]) / expected
            last_rr = rrs[-1] if rrs else last_rr

            def grew(key: str, new: dict[str, Any], old: dict[str, Any]) -> Any:
                return (new.get(key) or 0) - (old.get(key) or 0) if key in new else None

            row = {
                "t": tick, "phase": index + 1, "rate_kbps": phase.kbps,
                "link_kbps": grew("bytes", new_qdisc, qdisc) * 8 / 1000,
                "link_drops": grew("drops", new_qdisc, qdisc),
                "backlog_bytes": new_qdisc.get("backlog"),
                "srv_fps": grew("frames_sent", new_session, session),
                "srv_kbps": (grew("bytes_sent", new_session, session) or 0) * 8 / 1000,
                "srv_keyframes": grew("keyframes_sent", new_session, session),
                "srv_dropped": grew("dropped", new_session, session),
                "srv_skipped": grew("skipped", new_session, session),
                "srv_pli": grew("pli", new_session, session),
                "srv_rendition": new_session.get("rendition"),  # with per-viewer adaptation
                "srv_estimate_kbps": (new_session.get("estimate_bps") or 0) / 1000 or None,
                "remb_kbps": remb / 1000 if remb is not None else None,
                "remb_min_kbps": min(rembs) / 1000 if rembs else None,
                "rr_loss": loss,
                "rr_jitter_ms": rrs[-1]["jitter_ms"] if rrs else None,
                "rr_rtt_ms": rrs[-1].get("rtt_ms") if rrs else None,
                "rtcp_nack_pkts": sum(r["count"] for r in rtcp if r.get("kind") == "nack"),
                "rtcp_pli": sum(1 for r in rtcp if r.get("kind") in ("pli", "fir")),
                **{f"v_{k}": v for k, v in viewer.items() if k not in ("t", "event", "errors")},
                "session": new_session,
            }
            qdisc, session = new_qdisc, new_session
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _line(row: dict[str, Any]) -> str:
    return (f"t={row['t']:3d} link {row['rate_kbps']:5d} kbit/s | through {_fmt(row['link_kbps']):>5} "
            f"drops {_fmt(row['link_drops']):>4} | sent {_fmt(row['srv_fps']):>2} fps "
            f"{_fmt(row['srv_kbps']):>5} kbit/s drop {_fmt(row['srv_dropped'])} pli {_fmt(row['srv_pli'])} "
            "| REMB "
            f"{_fmt(row['remb_kbps']):>5} loss {_fmt(row['rr_loss'], 2)} rtt {_fmt(row['rr_rtt_ms'])} ms "
            f"nack {row['rtcp_nack_pkts']} | viewer {_fmt(row.get('v_fps'))} fps "
            f"{_fmt(row.get('v_latency_ms'))} ms {_fmt(row.get('v_size'))}")


def summarize(rows: list[dict[str, Any]], phases: list[Phase], rtcp: list[dict[str, Any]],
              t0: float) -> list[dict[str, Any]]:
    rembs = [(r["t"] - t0, r["bps"] / 1000) for r in rtcp if r.get("kind") == "remb"]
    summary = []
    begin = 0
    for index, phase in enumerate(phases):
        part = [r for r in rows if r["phase"] == index + 1]
        end = begin + phase.seconds

        def values(key: str, part: list[dict[str, Any]] = part) -> list[float]:
            return [r[key] for r in part if isinstance(r.get(key), int | float)]

        def mean(key: str) -> float | None:
            got = values(key)
            return statistics.fmean(got) if got else None

        inside = [(t - begin, kbps) for t, kbps in rembs if begin <= t < end]
        before = [kbps for t, kbps in rembs if t < begin]
        previous = phases[index - 1].kbps if index else None
        react = None
        if previous is not None and phase.kbps < previous:
            react = next((t for t, kbps in inside if kbps <= phase.kbps), None)
        elif previous is not None and phase.kbps > previous:
            react = next((t for t, kbps in inside if kbps >= min(phase.kbps, 2 * previous)), None)
        tail = [kbps for t, kbps in inside if t >= phase.seconds - 3]
        fps = values("v_fps")
        summary.append({
            "phase": index + 1, "rate_kbps": phase.kbps, "seconds": phase.seconds,
            "link_kbps": mean("link_kbps"), "link_drops": sum(values("link_drops")),
            "srv_kbps": mean("srv_kbps"), "srv_fps": mean("srv_fps"),
            "srv_dropped": sum(values("srv_dropped")),
            "srv_keyframes": sum(values("srv_keyframes")), "srv_pli": sum(values("srv_pli")),
            "viewer_fps": mean("v_fps"), "viewer_fps_min": min(fps) if fps else None,
            "stalled_s": sum(1 for f in fps if f < 5),
            "latency_ms": statistics.median(values("v_latency_ms")) if values("v_latency_ms") else None,
            "rr_loss": mean("rr_loss"), "rtt_ms": mean("rr_rtt_ms"),
            "nack_pkts": sum(values("rtcp_nack_pkts")), "rtcp_pli": sum(values("rtcp_pli")),
            "remb_start_kbps": before[-1] if before else None,
            "remb_1s_kbps": next((k for t, k in reversed(inside) if t <= 1.0), None),
            "remb_3s_kbps": next((k for t, k in reversed(inside) if t <= 3.0), None),
            "remb_end_kbps": statistics.median(tail) if tail else None,
            "remb_min_kbps": min((k for _, k in inside), default=None),
            "remb_max_kbps": max((k for _, k in inside), default=None),
            "remb_react_s": react,
            "freeze_s": _grown(rows, part, "v_freeze_s"),
        })
        begin = end
    return summary


def _grown(rows: list[dict[str, Any]], part: list[dict[str, Any]], key: str) -> float | None:
    """How much a cumulative viewer figure grew during `part` (a slice of `rows`)."""
    if not part or part[-1].get(key) is None:
        return None
    earlier = [r.get(key) for r in rows[: rows.index(part[0])] if r.get(key) is not None]
    return part[-1][key] - (earlier[-1] if earlier else 0)


def write_outputs(run_dir: Path, rows: list[dict[str, Any]], summary: list[dict[str, Any]],
                  meta: dict[str, Any], rtcp: list[dict[str, Any]], viewer: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys and k != "session")
    csv_path = run_dir.with_suffix(".csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with open(run_dir.with_suffix(".json"), "w") as f:
        everything = {"meta": meta, "summary": summary, "rows": rows, "rtcp": rtcp, "viewer": viewer}
        json.dump(everything, f, indent=1)
    print(f"netprobe: {csv_path}, {run_dir.with_suffix('.json')} (logs in {run_dir})")


SUMMARY_COLUMNS = [
    ("phase", "phase", 0), ("rate_kbps", "link", 0), ("link_kbps", "thru", 0), ("srv_kbps", "sent", 0),
    ("viewer_fps", "fps", 1), ("viewer_fps_min", "min", 0), ("stalled_s", "stall", 0),
    ("freeze_s", "frz_s", 1), ("latency_ms", "lat_ms", 0), ("rr_loss", "loss", 2), ("rtt_ms", "rtt", 0),
    ("nack_pkts", "nack", 0), ("rtcp_pli", "pli", 0), ("srv_keyframes", "idr", 0),
    ("srv_dropped", "sdrop", 0), ("remb_start_kbps", "remb0", 0), ("remb_1s_kbps", "remb1", 0),
    ("remb_3s_kbps", "remb3", 0), ("remb_end_kbps", "rembE", 0), ("remb_min_kbps", "rembMin", 0),
    ("remb_react_s", "react", 1),
]


def print_summary(summary: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    print(f"\nviewer {meta['viewer']} ({meta['page'] if meta['viewer'] == 'chromium' else meta['via']}), "
          f"server {meta['server_revision']} {meta['server_args']}, load {meta['loadavg_start'][0]:.1f} -> "
          f"{meta['loadavg_end'][0]:.1f} on {meta['cpus']} cpus")
    print(" ".join(f"{title:>7}" for _, title, _ in SUMMARY_COLUMNS))
    for phase in summary:
        print(" ".join(f"{_fmt(phase[key], digits):>7}" for key, _, digits in SUMMARY_COLUMNS))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "tap":
        split = sys.argv.index("--")
        tap_main(sys.argv[2], sys.argv[split + 1:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "view":  # the viewer process, in the viewer's namespace
        view_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewer", choices=["aiortc", "chromium"], default="aiortc")
    parser.add_argument("--phases", default=DEFAULT_PHASES, help="kbit/s:seconds,... (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help=f"phases {QUICK_PHASES}")
    parser.add_argument("--via", choices=["whep", "offer"], default="whep", help="aiortc viewer's signalling")
    parser.add_argument("--page", choices=["whep", "player"], default="whep",
                        help="Chromium: a bare WHEP page, or the bundled player")
    parser.add_argument("--loss", type=float, default=0.0,
                        help="random loss of media datagrams past the link, e.g. 0.05")
    parser.add_argument("--server-args", default="", help="more camcast options, e.g. '--adapt off'")
    parser.add_argument("--server-rev", help="run the server of this git revision, not the installed one")
    parser.add_argument("--label", default="", help="added to the output names")
    probe(parser.parse_args())


if __name__ == "__main__":
    main()
