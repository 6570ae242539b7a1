#!/usr/bin/python3
"""An IP camera stand-in: GStreamer's RTSP server sending stamped, moving H.264 at rtsp://HOST:PORT/PATH.

Runs under Debian's /usr/bin/python3 with python3-gi (no numpy there), so pictures are built from
plain bytes. Every frame carries camcast's frame stamp (server/camcast/stamp.py): the top STAMP_ROWS
rows hold STAMP_CELLS black/white cells, cell i white where bit 63-i of the capture wall-clock time
in µs is set; camcast.stamp.read_stamp on a decoded frame gives that time back. Each buffer's PTS is
the pipeline's running time at the same instant, so timestamps and stamps agree.

One encoder serves every client (a shared media); RTP goes over UDP or interleaved in RTSP/TCP,
as the client asks. Prints "READY rtsp://HOST:PORT/PATH" on stdout once it listens; SIGTERM or
SIGINT stops it with status 0.

    /usr/bin/python3 rtsp_camera_server.py --port 8554 --size 640x480 --fps 30 --gop 120 --profile high
"""

from __future__ import annotations

import argparse
import array
import math
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

# Same layout as camcast.stamp (that module needs numpy, which Debian's python may lack).
STAMP_ROWS = 16
STAMP_CELLS = 64
BLOCK = 48  # side of the moving square, in pixels
# The sound: (rate, channels) of the sine pushed into its appsrc (timestamped on the pipeline's
# running time, like the pictures; audiotestsrc would make the media seekable, and a live media that
# says so fails the PLAY), then its encoder and payloader.
AUDIO_BRANCHES = {
    "none": (0, 0, ""),
    "aac": (44100, 2, "audioconvert ! avenc_aac ! rtpmp4gpay name=pay1 pt=97"),
    "pcma": (8000, 1, "alawenc ! rtppcmapay name=pay1"),
    "pcmu": (8000, 1, "mulawenc ! rtppcmupay name=pay1"),
    "opus": (48000, 2, "audioconvert ! opusenc ! rtpopuspay name=pay1 pt=98"),
}
AUDIO_BUFFER_S = 0.02


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8554, help="RTSP port; 0 picks a free one")
    parser.add_argument("--path", default="/cam", help="mount point, e.g. /cam")
    parser.add_argument("--size", default="640x480", help="WxH, both even")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--gop", type=int, default=120, help="frames from one IDR to the next")
    parser.add_argument("--profile", choices=("baseline", "main", "high"), default="high")
    parser.add_argument("--bframes", type=int, default=0, help="B-frames between references (>0: reordered)")
    parser.add_argument("--bitrate", type=int, default=1500, help="kbit/s")
    parser.add_argument("--audio", choices=tuple(AUDIO_BRANCHES), default="none",
                        help="a second track: a sine wave in AAC, G.711 (A-law, mu-law) or Opus")
    parser.add_argument("--audio-freq", type=int, default=440, help="the sine's frequency, Hz")
    args = parser.parse_args(argv)
    width, _, height = args.size.partition("x")
    args.width, args.height = int(width), int(height)
    if args.width < STAMP_CELLS or args.height <= STAMP_ROWS or args.width % 2 or args.height % 2:
        parser.error(f"--size {args.size}: need even sides, at least {STAMP_CELLS} wide")
    if not args.path.startswith("/"):
        args.path = "/" + args.path
    return args


class Painter:
    """I420 pictures: a diagonal texture scrolling sideways, a bouncing square, the stamp on top."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        period = 256
        # A row longer than the picture; each picture row is a shifted window into it, so the
        # texture moves and varies down the picture for the cost of a slice per row.
        self.texture = bytes(40 + (x * 5 + (x // 16) * 37) % 160 for x in range(width + period))
        self.period = period
        # Cell of each column exactly as camcast.stamp._cell_of_column computes it.
        cells = [(x * STAMP_CELLS) // width for x in range(width)]
        self.runs: list[tuple[int, int]] = []  # (cell, run length) from left to right
        for cell in cells:
            if self.runs and self.runs[-1][0] == cell:
                self.runs[-1] = (cell, self.runs[-1][1] + 1)
            else:
                self.runs.append((cell, 1))
        # Tinted gradients, with neutral chroma under the stamp so its cells decode to pure black and white.
        cw, ch = width // 2, height // 2
        neutral = b"\x80" * (STAMP_ROWS // 2 * cw)
        u = bytes((96 + (x * 64) // cw) for x in range(cw)) * ch
        v = bytes((160 - (y * 64) // ch) for y in range(ch) for _ in range(cw))
        self.chroma = neutral + u[len(neutral) :] + neutral + v[len(neutral) :]

    def stamp_row(self, time_us: int) -> bytes:
        return b"".join((b"\xff" if time_us >> (63 - cell) & 1 else b"\x00") * run for cell, run in self.runs)

    def frame(self, index: int, time_us: int) -> bytes:
        width, height = self.width, self.height
        luma = bytearray(width * height)
        luma[: STAMP_ROWS * width] = self.stamp_row(time_us) * STAMP_ROWS
        shift = index * 3
        texture, period = self.texture, self.period
        for y in range(STAMP_ROWS, height):
            start = (shift + y) % period
            luma[y * width : (y + 1) * width] = texture[start : start + width]
        # A white square bouncing across the picture below the stamp: motion the encoder has to code.
        span_x, span_y = max(1, width - BLOCK), max(1, height - STAMP_ROWS - BLOCK)
        bx = abs((index * 7) % (2 * span_x) - span_x)
        by = STAMP_ROWS + abs((index * 5) % (2 * span_y) - span_y)
        white = b"\xeb" * min(BLOCK, width - bx)
        for y in range(by, min(height, by + BLOCK)):
            luma[y * width + bx : y * width + bx + len(white)] = white
        return bytes(luma) + self.chroma


class SineFeeder(threading.Thread):
    """Pushes a sine into the media's audio appsrc every 20 ms, stamped like the pictures."""

    def __init__(self, appsrc: Gst.Element, freq: int, rate: int, channels: int) -> None:
        super().__init__(name="camera-sine", daemon=True)
        self.appsrc, self.freq, self.rate, self.channels = appsrc, freq, rate, channels
        self.stopped = threading.Event()

    def samples(self, first: int, count: int) -> bytes:
        values = array.array("h", (int(9800 * math.sin(2 * math.pi * self.freq * (first + i) / self.rate))
                                   for i in range(count) for _ in range(self.channels)))
        return values.tobytes()

    def run(self) -> None:
        count = int(self.rate * AUDIO_BUFFER_S)
        sent = 0
        due = time.monotonic()
        while not self.stopped.is_set():
            delay = due - time.monotonic()
            if delay > 0 and self.stopped.wait(delay):
                break
            due += AUDIO_BUFFER_S
            clock = self.appsrc.get_clock()
            if clock is None:
                continue
            buffer = Gst.Buffer.new_wrapped(self.samples(sent, count))
            # The buffer's last sample is now: its first was captured 20 ms ago.
            pts = clock.get_time() - self.appsrc.get_base_time() - int(AUDIO_BUFFER_S * Gst.SECOND)
            buffer.pts, buffer.duration = max(0, pts), int(AUDIO_BUFFER_S * Gst.SECOND)
            sent += count
            result = self.appsrc.emit("push-buffer", buffer)
            if result in (Gst.FlowReturn.FLUSHING, Gst.FlowReturn.EOS):
                break


class Feeder:
    """Pushes frames into one media's appsrc at the camera's own pace, from a thread, like a sensor."""

    def __init__(self, appsrc: Gst.Element, painter: Painter, fps: int) -> None:
        self.appsrc, self.painter, self.fps = appsrc, painter, fps
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="camera-feed", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def running_time(self) -> int | None:
        clock = self.appsrc.get_clock()
        if clock is None:
            return None
        return clock.get_time() - self.appsrc.get_base_time()

    def run(self) -> None:
        interval = 1.0 / self.fps
        duration = Gst.SECOND // self.fps
        index = 0
        due = time.monotonic()
        while not self.stopped.is_set():
            delay = due - time.monotonic()
            if delay > 0 and self.stopped.wait(delay):
                break
            # Behind by more than a frame (a busy machine): skip, as a sensor would, rather than burst.
            due = max(due + interval, time.monotonic())
            pts = self.running_time()
            if pts is None:  # not playing yet: no clock to stamp against
                continue
            # The stamp and the PTS are read at the same instant: capture time in two clocks.
            data = self.painter.frame(index, time.time_ns() // 1000)
            buffer = Gst.Buffer.new_wrapped(data)
            buffer.pts, buffer.dts, buffer.duration = pts, Gst.CLOCK_TIME_NONE, duration
            buffer.offset = index
            index += 1
            result = self.appsrc.emit("push-buffer", buffer)
            if result not in (Gst.FlowReturn.OK, Gst.FlowReturn.NOT_LINKED):
                if result in (Gst.FlowReturn.FLUSHING, Gst.FlowReturn.EOS):
                    break
                print(f"camera: push-buffer returned {result.value_nick}", file=sys.stderr, flush=True)


def launch_line(args: argparse.Namespace) -> str:
    caps = f"video/x-raw,format=I420,width={args.width},height={args.height},framerate={args.fps}/1"
    # x264 writes SPS and PPS in band before every IDR by itself (and in the caps, hence the SDP's
    # sprop-parameter-sets), so the payloader adds none; no access unit delimiters, like most cameras.
    # superfast keeps CABAC and 8x8 transforms: x264 writes the profile its tools need, so ultrafast
    # would turn a "high" request into constrained baseline.
    encoder = (f"x264enc tune=zerolatency speed-preset=superfast key-int-max={args.gop} "
               f"bframes={args.bframes} b-adapt=false bitrate={args.bitrate} threads=1 aud=false")
    audio = ""
    if args.audio != "none":
        rate, channels, branch = AUDIO_BRANCHES[args.audio]
        audio_caps = f"audio/x-raw,format=S16LE,layout=interleaved,rate={rate},channels={channels}"
        audio = (f" appsrc name=asrc is-live=true format=time do-timestamp=false caps={audio_caps} "
                 f"! queue max-size-buffers=10 leaky=downstream ! {branch}")
    return (f"( appsrc name=src is-live=true format=time do-timestamp=false caps={caps} "
            f"! queue max-size-buffers=2 leaky=downstream ! {encoder} "
            f"! video/x-h264,stream-format=avc,alignment=au,profile={args.profile} "
            f"! rtph264pay name=pay0 pt=96 config-interval=0{audio} )")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Gst.init(None)
    painter = Painter(args.width, args.height)
    feeders: list[Feeder] = []

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
    factory.set_shared(True)  # one pipeline, one encoder, however many clients
    factory.set_protocols(GstRtsp.RTSPLowerTrans.UDP | GstRtsp.RTSPLowerTrans.TCP)

    def on_media_configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        # A new media each time the first client arrives after the last one left: feed that one.
        appsrc = media.get_element().get_by_name("src")
        feeder = Feeder(appsrc, painter, args.fps)
        feeders.append(feeder)
        media.connect("unprepared", lambda _media: feeder.stop())
        feeder.start()
        audio_src = media.get_element().get_by_name("asrc")
        if audio_src is not None:
            rate, channels, _ = AUDIO_BRANCHES[args.audio]
            sine = SineFeeder(audio_src, args.audio_freq, rate, channels)
            media.connect("unprepared", lambda _media: sine.stopped.set())
            sine.start()

    factory.connect("media-configure", on_media_configure)

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"camera: cannot listen on {args.host}:{args.port}", file=sys.stderr, flush=True)
        return 1

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, lambda: loop.quit() or GLib.SOURCE_REMOVE)
    print(f"READY rtsp://{args.host}:{server.get_bound_port()}{args.path}", flush=True)
    loop.run()
    for feeder in feeders:
        feeder.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
