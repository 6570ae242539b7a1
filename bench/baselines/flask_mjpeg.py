"""The classic Flask MJPEG tutorial design: a camera thread keeps the newest frame, and every
client's generator JPEG-encodes that frame itself (one encode per client per frame), served by
Werkzeug's threaded server.

It uses camcast's test pattern and frame stamp at the same size and fps, so fps and latency
compare directly. Run: python -m bench.baselines.flask_mjpeg --port 0 --size 640x480 --fps 30
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Iterator

import cv2
import numpy as np
from flask import Flask, Response
from werkzeug.serving import make_server

from camcast.frames import now_us
from camcast.sources.testpattern import TestPattern
from camcast.stamp import write_stamp


class Camera:
    """One capture thread; generators wait for the next frame (the kindest form of the tutorial loop)."""

    def __init__(self, width: int, height: int, fps: float) -> None:
        self._pattern = TestPattern(width, height, fps)
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._seq = 0
        self._stop = threading.Event()

    def run(self) -> None:
        self._pattern.open()
        while not self._stop.is_set():
            image = self._pattern.read()
            if image is None:
                break
            write_stamp(image, now_us())
            with self._cond:
                self._frame, self._seq = image, self._seq + 1
                self._cond.notify_all()

    def next_frame(self, after: int) -> tuple[int, np.ndarray | None]:
        with self._cond:
            self._cond.wait_for(lambda: self._seq != after or self._stop.is_set(), timeout=2.0)
            return self._seq, self._frame

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()


def create_app(camera: Camera, quality: int) -> Flask:
    app = Flask(__name__)

    @app.route("/video.mjpg")
    def video() -> Response:
        def generate() -> Iterator[bytes]:
            seq = 0
            while True:
                seq, frame = camera.next_frame(seq)
                if frame is None:
                    return
                _ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
                data = jpeg.tobytes()
                yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data)
                       + data + b"\r\n")

        return Response(generate(), mimetype="multipart/x-mixed-replace; boundary=frame")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--quality", type=int, default=80)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop by itself after this long")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request

    camera = Camera(width, height, args.fps)
    server = make_server("127.0.0.1", args.port, create_app(camera, args.quality), threaded=True)
    threading.Thread(target=camera.run, name="camera", daemon=True).start()

    def stop(*_: object) -> None:
        camera.stop()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = threading.Timer(args.max_seconds, stop)
    deadline.daemon = True  # never keeps the process alive after the server stops
    deadline.start()
    print(f"flask-mjpeg: serving {args.size}@{args.fps:g} at http://127.0.0.1:{server.server_port}/",
          flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
