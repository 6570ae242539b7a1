"""The IP-camera test bed itself: what PyAV gets from support.rtspcamera, and the support.h264files files."""

from __future__ import annotations

import itertools
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest

from camcast.stamp import read_stamp
from support.h264files import (
    ffprobe_video,
    frame_types,
    stamp_of_frame,
    write_bframes_mp4,
    write_passthrough_mp4,
)
from support.rtspcamera import RtspCamera, StartCamera, start_rtsp_camera

__all__ = ["start_rtsp_camera"]  # the fixture, imported so that pytest finds it here

RTP_CLOCK = 90_000
READ_TIMEOUT_US = "5000000"  # PyAV gives up on a silent socket after 5 s instead of hanging the test
START_CODE = re.compile(b"\x00\x00\x01")


def nal_types(data: bytes) -> list[int]:
    """The NAL unit types of an Annex B access unit, in order."""
    return [data[m.end()] & 0x1F for m in START_CODE.finditer(data) if m.end() < len(data)]


@dataclass
class Seen:
    """What one RTSP client got: codec facts, every packet in decode order, decoded frames' stamps."""

    profile: str | None = None
    extradata: bytes = b""
    # (pts, dts, keyframe, data) in decode order; (pts, stamp µs, decoded at µs) in display order
    packets: list[tuple[int | None, int | None, bool, bytes]] = field(default_factory=list)
    frames: list[tuple[int | None, int, int]] = field(default_factory=list)
    ended: bool = False  # the server closed the stream (EOF)


def watch(url: str, transport: str, packets: int, container: av.container.InputContainer | None = None,
          seen: Seen | None = None) -> Seen:
    """Read `packets` video packets from `url` (or until the stream ends), decoding every frame."""
    seen = seen or Seen()
    own = container is None
    container = container or av.open(url, options={"rtsp_transport": transport, "timeout": READ_TIMEOUT_US})
    try:
        stream = container.streams.video[0]
        seen.profile = stream.codec_context.profile
        seen.extradata = bytes(stream.codec_context.extradata or b"")
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's end-of-stream marker
                seen.ended = True
                break
            seen.packets.append((packet.pts, packet.dts, packet.is_keyframe, bytes(packet)))
            for frame in packet.decode():
                gray = frame.to_ndarray(format="gray")
                seen.frames.append((frame.pts, read_stamp(gray), time.time_ns() // 1000))
            if len(seen.packets) >= packets:
                break
        else:
            seen.ended = True
    finally:
        if own:
            container.close()
    return seen


def keyframe_indices(seen: Seen) -> list[int]:
    return [i for i, (_, _, key, _) in enumerate(seen.packets) if key]


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_stream_is_stamped_high_profile_h264_with_the_asked_gop(start_rtsp_camera: StartCamera,
                                                                transport: str) -> None:
    fps, gop = 30, 15
    camera = start_rtsp_camera(size=(320, 240), fps=fps, gop=gop, profile="high")
    seen = watch(camera.url, transport, packets=3 * gop + 1)

    assert seen.profile == "High"
    keys = keyframe_indices(seen)
    assert keys[0] == 0 and len(keys) >= 3, keys
    assert {b - a for a, b in itertools.pairwise(keys)} == {gop}, keys
    # Annex B access units; SPS and PPS in band right before every IDR; P slices otherwise.
    for index, (_, _, key, data) in enumerate(seen.packets):
        assert data.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")), data[:8].hex()
        types = [t for t in nal_types(data) if t != 6]  # SEI (x264's banner) only in the first IDR
        assert types == ([7, 8, 5] if key else [1]), (index, nal_types(data))
    assert nal_types(seen.extradata)[:2] == [7, 8]  # the SDP's sprop-parameter-sets

    # The stream's timestamps run with the stamps (both taken at capture) ...
    timed = [(pts, stamp) for pts, stamp, _ in seen.frames if pts is not None]
    pts0, stamp0 = timed[0]
    drift = [abs((pts - pts0) * 1_000_000 // RTP_CLOCK - (stamp - stamp0)) for pts, stamp in timed]
    assert max(drift) < 2_000, drift
    steps = {b - a for (_, a), (_, b) in itertools.pairwise(timed)}
    assert min(steps) > 0 and max(steps) < 3 * 1_000_000 / fps, sorted(steps)
    # ... and the stamps are the capture wall clock: the newest frames arrive within 0.5 s of it
    # (the first ones are older: av.open buffers about a second of packets while it probes).
    lags = [received - stamp for _, stamp, received in seen.frames[-10:]]
    assert all(0 <= lag < 500_000 for lag in lags), lags


@pytest.mark.parametrize(("profile", "name"), [("baseline", "Constrained Baseline"), ("main", "Main")])
def test_the_asked_profile_is_sent(start_rtsp_camera: StartCamera, profile: str, name: str) -> None:
    camera = start_rtsp_camera(size=(320, 240), gop=30, profile=profile)
    seen = watch(camera.url, "tcp", packets=2)
    assert seen.profile == name
    assert seen.packets[0][2]


def test_bframes_make_a_reordered_stream(start_rtsp_camera: StartCamera) -> None:
    camera = start_rtsp_camera(size=(320, 240), gop=30, bframes=2)
    seen = watch(camera.url, "tcp", packets=30)
    assert seen.profile == "High"
    pts = [p for p, _, _, _ in seen.packets if p is not None]
    assert any(b < a for a, b in itertools.pairwise(pts)), pts  # decode order is not display order
    stamps = [stamp for _, stamp, _ in seen.frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), stamps  # display order is capture


def test_one_encoder_serves_every_client(start_rtsp_camera: StartCamera) -> None:
    camera = start_rtsp_camera(size=(320, 240), gop=15)
    # The UDP client opens about a second after the TCP one (av.open probes that long), so reading
    # 30 packets more over TCP covers everything the UDP client reads.
    wanted = {"tcp": 75, "udp": 45}
    containers = {t: av.open(camera.url, options={"rtsp_transport": t, "timeout": READ_TIMEOUT_US})
                  for t in wanted}
    seen = {t: Seen() for t in wanted}
    threads = [threading.Thread(target=watch, args=(camera.url, t, wanted[t], containers[t], seen[t]))
               for t in wanted]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    finally:
        for container in containers.values():
            container.close()
    # Both clients got byte-identical frames: one shared encoder, not one per client.
    tcp, udp = ([data for _, _, _, data in seen[t].packets] for t in wanted)
    assert (len(tcp), len(udp)) == (wanted["tcp"], wanted["udp"])
    assert len(set(udp) - set(tcp)) <= 2, [udp.index(d) for d in set(udp) - set(tcp)]


def test_restart_is_a_reboot_on_the_same_port(start_rtsp_camera: StartCamera) -> None:
    camera = start_rtsp_camera(size=(320, 240), gop=15)
    url, pid = camera.url, camera.pid
    with av.open(url, options={"rtsp_transport": "tcp", "timeout": READ_TIMEOUT_US}) as before:
        assert watch(url, "tcp", 3, before).packets
        rebooted_at = time.time_ns() // 1000
        camera.restart()
        assert camera.url == url and camera.pid != pid
        # The old session ends (the server went away) instead of hanging.
        assert watch(url, "tcp", 10_000, before).ended
    after = watch(url, "tcp", packets=5)
    assert after.frames and min(stamp for _, stamp, _ in after.frames) > rebooted_at
    assert camera.returncodes == [0]


def test_missing_gstreamer_fails_with_the_packages_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from support import rtspcamera

    monkeypatch.setattr(rtspcamera, "missing_requirements", lambda: "No module named 'gi'")
    with pytest.raises(pytest.fail.Exception, match=r"(?s)apt-get install python3-gi .*No module named 'gi'"):
        RtspCamera().start()


@pytest.mark.parametrize("bframes", [0, 2])
def test_h264_files(tmp_path: Path, bframes: int) -> None:
    fps, gop, start_us = 30, 30, 1_700_000_000_000_000
    if bframes:
        path = write_bframes_mp4(tmp_path / "b.mp4", seconds=2.0, size=(320, 240), fps=fps, gop=gop,
                                 bframes=bframes, start_us=start_us)
    else:
        path = write_passthrough_mp4(tmp_path / "p.mp4", seconds=2.0, size=(320, 240), fps=fps, gop=gop,
                                     start_us=start_us)
    info = ffprobe_video(path)
    assert (info["codec_name"], info["profile"], info["width"], info["height"]) == ("h264", "High", 320, 240)
    assert (info["has_b_frames"] > 0) == bool(bframes), info["has_b_frames"]
    types = frame_types(path)
    assert [i for i, (_, key) in enumerate(types) if key] == [0, gop]
    assert ("B" in {t for t, _ in types}) == bool(bframes)
    with av.open(str(path)) as container:
        stamps = [read_stamp(f.to_ndarray(format="gray")) for f in container.decode(video=0)]
    assert stamps == [stamp_of_frame(start_us, i, fps) for i in range(2 * fps)]
