#!/usr/bin/python3
"""A WHEP viewer built on GStreamer's webrtcbin: the client that GStreamer-based players and gateways use.

Runs under Debian's /usr/bin/python3 with python3-gi, gir1.2-gst-plugins-bad-1.0 (the GstWebRTC and
GstSdp typelibs) and GStreamer's plugins (no numpy there: pixels are read from plain bytes). It does
WHEP itself: a recvonly video transceiver offering one codec, the offer sent once ICE gathering is
complete (no trickle), the answer applied, the video decoded with decodebin; each decoded frame's
camcast frame stamp (server/camcast/stamp.py) is read back. Progress is printed as JSON lines:

    {"event": "posted", "status": 201, "location": "/whep/ID"}
    {"event": "state", "what": "connection", "state": "connected"}
    {"event": "frame", "n": 1, "width": 640, "height": 480, "stamp_us": ..., "latency_ms": 41.2}
    {"event": "deleted", "status": 200}
    {"event": "done", "frames": 30}

Exits 0 after --frames decoded frames (the session DELETEd first; with --hold, once a line is read
on stdin), 1 on a timeout, 2 on a pipeline or connection error, 3 when the WHEP POST is refused.

    /usr/bin/python3 gst_whep_viewer.py http://127.0.0.1:8080/whep --codec vp8 --frames 30
"""

from __future__ import annotations

import argparse
import ctypes
import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstVideo", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstVideo, GstWebRTC  # noqa: E402

# Same layout as camcast.stamp (that module needs numpy, which Debian's python may lack).
STAMP_ROWS = 16
STAMP_CELLS = 64

# What the offer says it receives, per codec (the m-line webrtcbin writes comes from these caps).
FEEDBACK = "rtcp-fb-nack=(boolean)true,rtcp-fb-nack-pli=(boolean)true,rtcp-fb-ccm-fir=(boolean)true"
OFFER_CAPS = {
    "h264": ("application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,"
             "packetization-mode=(string)1,profile-level-id=(string)42e01f,"
             f"level-asymmetry-allowed=(string)1,{FEEDBACK}"),
    "vp8": f"application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000,{FEEDBACK}",
}


_SAY = threading.Lock()  # events come from GStreamer's threads too: one whole line at a time


def say(event: str, **fields: object) -> None:
    line = json.dumps({"event": event, **fields}) + "\n"
    with _SAY:
        sys.stdout.write(line)
        sys.stdout.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("url", help="the WHEP endpoint, e.g. http://127.0.0.1:8080/whep")
    parser.add_argument("--codec", choices=sorted(OFFER_CAPS), default="h264", help="the one codec offered")
    parser.add_argument("--frames", type=int, default=30, help="decoded frames before the session ends")
    parser.add_argument("--timeout", type=float, default=20.0, help="s until giving up (exit 1)")
    parser.add_argument("--ice-address", default="127.0.0.1",
                        help="the one local address ICE gathers from ('' keeps libnice's choice)")
    parser.add_argument("--token", default="", help="sent as Authorization: Bearer TOKEN")
    parser.add_argument("--hold", action="store_true",
                        help="after the frames, wait for a line on stdin before the DELETE (the session "
                             "stays up meanwhile, for a look at the server's state)")
    return parser.parse_args(argv)


# -- ICE on one address ----------------------------------------------------------------------------
def restrict_ice_addresses(webrtc: Gst.Element, address: str) -> None:
    """Make webrtcbin's libnice agent gather host candidates on `address` only.

    libnice never gathers loopback addresses on its own while another interface is up, and GStreamer
    1.22's webrtcbin has no setting for it; nice_agent_add_local_address() does it, called through
    ctypes (its typelib, gir1.2-nice-0.1, is another package). The agent is reached with
    g_object_get in C, never wrapped in Python: webrtcbin 1.22 keeps its ICE object floating, and a
    Python wrapper would sink it and free it when the wrapper goes (a crash in webrtcbin later).
    """
    capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    capsule_pointer.restype = ctypes.c_void_p
    capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    gobject = ctypes.CDLL("libgobject-2.0.so.0")
    gobject.g_object_get.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p]
    gobject.g_object_unref.argtypes = [ctypes.c_void_p]
    nice = ctypes.CDLL("libnice.so.10")
    nice.nice_address_new.restype = ctypes.c_void_p
    nice.nice_address_set_from_string.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    nice.nice_address_set_from_string.restype = ctypes.c_int
    nice.nice_agent_add_local_address.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    nice.nice_agent_add_local_address.restype = ctypes.c_int
    nice.nice_address_free.argtypes = [ctypes.c_void_p]

    ice, agent = ctypes.c_void_p(), ctypes.c_void_p()  # each g_object_get gives a reference: dropped below
    gobject.g_object_get(capsule_pointer(webrtc.__gpointer__, None), b"ice-agent", ctypes.byref(ice), None)
    nice_address = nice.nice_address_new()
    try:
        gobject.g_object_get(ice, b"agent", ctypes.byref(agent), None)
        if not nice.nice_address_set_from_string(nice_address, address.encode()):
            raise SystemExit(f"--ice-address {address}: not an IP address")
        if not nice.nice_agent_add_local_address(agent, nice_address):
            raise SystemExit(f"libnice refused the local address {address}")
    finally:
        nice.nice_address_free(nice_address)
        if agent:
            gobject.g_object_unref(agent)
        gobject.g_object_unref(ice)


# -- the frame stamp -------------------------------------------------------------------------------
def read_stamp(luma: bytes, stride: int, width: int) -> int:
    """camcast.stamp.read_stamp on the Y plane: the capture time in µs since the epoch."""
    rows = range(STAMP_ROWS // 4, STAMP_ROWS * 3 // 4)
    cell = width / STAMP_CELLS
    value = 0
    for i in range(STAMP_CELLS):
        x0 = int(i * cell + cell / 4)
        x1 = max(x0 + 1, int((i + 1) * cell - cell / 4))
        total = sum(sum(luma[row * stride + x0 : row * stride + x1]) for row in rows)
        if total > 128 * len(rows) * (x1 - x0):
            value |= 1 << (63 - i)
    return value


# -- the viewer ------------------------------------------------------------------------------------
class WhepViewer:
    """One WHEP session in one pipeline: webrtcbin, then decodebin ! videoconvert ! appsink per track."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = GLib.MainLoop()
        self.exit_code = 1
        self.frames = 0
        self.location: str | None = None
        self.finishing = False
        self._finish_lock = threading.Lock()  # endings come from GStreamer's threads and the main loop
        self.pipeline = Gst.Pipeline.new("viewer")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self.pipeline.add(self.webrtc)
        if args.ice_address:
            restrict_ice_addresses(self.webrtc, args.ice_address)
        self.webrtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.webrtc.connect("pad-added", self.on_pad_added)
        for what in ("ice-gathering-state", "ice-connection-state", "connection-state"):
            self.webrtc.connect(f"notify::{what}", self.on_state, what)
        caps = Gst.Caps.from_string(OFFER_CAPS[args.codec])
        self.webrtc.emit("add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY, caps)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)

    def run(self) -> int:
        GLib.timeout_add(int(self.args.timeout * 1000), self.on_timeout)
        for signum in (signal.SIGINT, signal.SIGTERM):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, self.on_signal)
        self.pipeline.set_state(Gst.State.PLAYING)
        self.loop.run()
        self.pipeline.set_state(Gst.State.NULL)
        return self.exit_code

    def finish(self, code: int) -> None:
        """End the session (DELETE, when there is one) off the main loop, then quit with `code`."""
        with self._finish_lock:
            if self.finishing:
                return
            self.finishing = True
        self.exit_code = code

        def end() -> None:
            if self.args.hold and code == 0:
                sys.stdin.readline()
            if self.location is not None:
                self.delete_session()
            GLib.idle_add(self.loop.quit)

        threading.Thread(target=end, daemon=True).start()

    # negotiation ---------------------------------------------------------------------------------
    def on_negotiation_needed(self, webrtc: Gst.Element) -> None:
        promise = Gst.Promise.new_with_change_func(self.on_offer_created, None)
        webrtc.emit("create-offer", None, promise)

    def on_offer_created(self, promise: Gst.Promise, _data: object) -> None:
        promise.wait()
        reply = promise.get_reply()  # held while the offer is used: get_value() does not copy it
        offer = reply.get_value("offer")
        self.webrtc.emit("set-local-description", offer, None)

    def on_state(self, webrtc: Gst.Element, _spec: object, what: str) -> None:
        state = webrtc.get_property(what)
        say("state", what=what.removesuffix("-state"), state=state.value_nick)
        if what == "ice-gathering-state" and state == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            offer = webrtc.get_property("local-description").sdp.as_text()
            threading.Thread(target=self.post_offer, args=(offer,), daemon=True).start()
        elif what in ("connection-state", "ice-connection-state") and state.value_nick == "failed":
            say("error", message=f"{what} failed")
            self.finish(2)

    def request(self, method: str, url: str, body: bytes | None = None) -> tuple[int, dict[str, str], str]:
        headers = {"Content-Type": "application/sdp"} if body is not None else {}
        if self.args.token:
            headers["Authorization"] = f"Bearer {self.args.token}"
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers), exc.read().decode(errors="replace")

    def post_offer(self, offer: str) -> None:
        say("offer", candidates=[line for line in offer.splitlines() if line.startswith("a=candidate")])
        try:
            status, headers, text = self.request("POST", self.args.url, offer.encode())
        except OSError as exc:
            say("error", message=f"POST {self.args.url}: {exc}")
            self.finish(3)
            return
        self.location = headers.get("Location")
        say("posted", status=status, location=self.location)
        if status != 201:
            say("error", message=f"WHEP POST answered {status}: {text.strip()}")
            self.finish(3)
            return
        ok, message = GstSdp.SDPMessage.new_from_text(text)
        if ok != GstSdp.SDPResult.OK:
            say("error", message="the answer is not SDP")
            self.finish(3)
            return
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        self.webrtc.emit("set-remote-description", answer, None)

    def delete_session(self) -> None:
        url = urllib.parse.urljoin(self.args.url, self.location)
        try:
            status, _, _ = self.request("DELETE", url)
        except OSError as exc:
            say("error", message=f"DELETE {url}: {exc}")
            return
        say("deleted", status=status, url=url)

    # media ---------------------------------------------------------------------------------------
    def on_pad_added(self, _webrtc: Gst.Element, pad: Gst.Pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        decode = Gst.ElementFactory.make("decodebin")
        convert = Gst.ElementFactory.make("videoconvert")
        sink = Gst.ElementFactory.make("appsink")
        sink.set_property("caps", Gst.Caps.from_string("video/x-raw,format=I420"))
        sink.set_property("emit-signals", True)
        sink.set_property("sync", False)
        sink.connect("new-sample", self.on_sample)
        decode.connect("pad-added", lambda _d, p: p.link(convert.get_static_pad("sink")))
        for element in (decode, convert, sink):
            self.pipeline.add(element)
            element.sync_state_with_parent()
        convert.link(sink)
        pad.link(decode.get_static_pad("sink"))
        say("track", caps=pad.get_current_caps().to_string() if pad.get_current_caps() else "")

    def on_sample(self, sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        info = GstVideo.VideoInfo.new_from_caps(sample.get_caps())
        buffer = sample.get_buffer()
        self.frames += 1
        fields: dict[str, object] = {"n": self.frames, "width": info.width, "height": info.height}
        if info.width >= STAMP_CELLS and info.height > STAMP_ROWS:
            ok, mapped = buffer.map(Gst.MapFlags.READ)
            if ok:
                try:
                    stride, offset = info.stride[0], info.offset[0]
                    luma = bytes(mapped.data[offset : offset + stride * STAMP_ROWS])
                finally:
                    buffer.unmap(mapped)
                stamp = read_stamp(luma, stride, info.width)
                fields.update(stamp_us=stamp, latency_ms=round(time.time() * 1000 - stamp / 1000, 1))
        say("frame", **fields)
        if self.frames == self.args.frames:
            say("done", frames=self.frames)
            self.finish(0)
        return Gst.FlowReturn.OK

    # endings -------------------------------------------------------------------------------------
    def on_error(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        error, debug = message.parse_error()
        say("error", message=error.message, source=message.src.get_path_string(), debug=debug or "")
        self.finish(2)

    def on_timeout(self) -> bool:
        say("error", message=f"timed out after {self.args.timeout:g} s with {self.frames} frames")
        self.finish(1)
        return False

    def on_signal(self) -> bool:
        if self.finishing:  # a second ending (or one during --hold): stop now
            self.loop.quit()
        self.finish(1)
        return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Gst.init(None)
    missing = [e for e in ("webrtcbin", "decodebin", "videoconvert", "appsink")
               if Gst.ElementFactory.find(e) is None]
    if missing:
        say("error", message=f"GStreamer elements missing: {' '.join(missing)}")
        return 2
    return WhepViewer(args).run()


if __name__ == "__main__":
    sys.exit(main())
