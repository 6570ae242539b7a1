"""Small stamped H.264 MP4s: one a camera's packets could pass through untouched, one that needs transcoding.

Frame i of a file carries camcast's frame stamp with `start_us + stamp_step_us(fps) * i` (see
camcast.stamp), so a test can tell which frame it got back and in what order. Both files use High
profile and a fixed GOP (an IDR every `gop` frames, no scene-cut keyframes); they differ in B-frames.
"""

from __future__ import annotations

import json
import subprocess
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from camcast.stamp import STAMP_ROWS, write_stamp


def stamp_step_us(fps: int) -> int:
    return round(1_000_000 / fps)


def stamp_of_frame(start_us: int, index: int, fps: int) -> int:
    """The stamp frame `index` of a file written with `start_us` and `fps` carries."""
    return start_us + stamp_step_us(fps) * index


def draw_frame(index: int, width: int, height: int, time_us: int) -> np.ndarray:
    """A BGR picture with a scrolling texture, a moving square and the stamp of `time_us` on top."""
    x = np.arange(width, dtype=np.int32)[None, :]
    y = np.arange(height, dtype=np.int32)[:, None]
    texture = (40 + (x * 5 + (x // 16) * 37 + y + index * 3) % 160).astype(np.uint8)
    image = np.repeat(texture[:, :, None], 3, axis=2)
    image[:, :, 0] //= 2  # tinted, so chroma is not flat either
    side = max(8, min(width, height) // 10)
    bx = (index * 7) % max(1, width - side)
    by = STAMP_ROWS + (index * 5) % max(1, height - STAMP_ROWS - side)
    image[by : by + side, bx : bx + side] = 235
    write_stamp(image, time_us)
    return image


def write_h264_mp4(path: Path, *, seconds: float = 3.0, size: tuple[int, int] = (640, 480), fps: int = 30,
                   gop: int = 60, profile: str = "high", bframes: int = 0,
                   start_us: int | None = None) -> Path:
    """Write a stamped H.264 MP4 with libx264 (superfast, fixed GOP, `bframes` B-frames) and return `path`.

    `start_us` is frame 0's stamp (default: now); frame i carries stamp_of_frame(start_us, i, fps).
    """
    width, height = size
    start = time.time_ns() // 1000 if start_us is None else start_us
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        # superfast keeps the 8x8 transform and CABAC, so x264 really writes the profile asked for
        # (ultrafast would fall back to constrained baseline whatever the profile option says).
        stream.options = {"preset": "superfast", "profile": profile, "g": str(gop), "keyint_min": str(gop),
                          "sc_threshold": "0", "bf": str(bframes)}
        for index in range(round(seconds * fps)):
            picture = draw_frame(index, width, height, stamp_of_frame(start, index, fps))
            frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_passthrough_mp4(path: Path, *, seconds: float = 3.0, size: tuple[int, int] = (640, 480),
                          fps: int = 30, gop: int = 60, start_us: int | None = None) -> Path:
    """High profile, no B-frames, an IDR every `gop` frames (2 s by default): fit to pass through."""
    return write_h264_mp4(path, seconds=seconds, size=size, fps=fps, gop=gop, profile="high", bframes=0,
                          start_us=start_us)


def write_bframes_mp4(path: Path, *, seconds: float = 3.0, size: tuple[int, int] = (640, 480), fps: int = 30,
                      gop: int = 60, bframes: int = 2, start_us: int | None = None) -> Path:
    """High profile with `bframes` B-frames (reordered): WebRTC cannot carry it, so it must be transcoded."""
    return write_h264_mp4(path, seconds=seconds, size=size, fps=fps, gop=gop, profile="high",
                          bframes=bframes, start_us=start_us)


def ffprobe_video(path: Path) -> dict[str, Any]:
    """ffprobe's description of the first video stream (codec_name, profile, has_b_frames, width, ...)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json",
                          str(path)], capture_output=True, text=True, check=True, timeout=30).stdout
    return json.loads(out)["streams"][0]


def frame_types(path: Path) -> list[tuple[str, bool]]:
    """(picture type "I"/"P"/"B", key frame) of every frame in presentation order, as ffprobe decodes it."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "frame=pict_type,key_frame", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return [(f["pict_type"], f["key_frame"] == 1) for f in json.loads(out)["frames"]]
