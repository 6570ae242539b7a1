// Follow the frames the page actually shows, on a <video> (requestVideoFrameCallback, else
// requestAnimationFrame) or an MJPEG <img> (requestAnimationFrame), and read each frame's stamp.

import { StampReader, bandRows } from "/client/stamp.js";

const THUMB_W = 24;
const THUMB_H = 18;

export class FrameWatcher {
  // onFrame({ width, height, frames, displayWallMs, stamp, now }) for each newly shown frame.
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.reader = new StampReader();
    this.thumb = document.createElement("canvas");
    this.thumb.width = THUMB_W;
    this.thumb.height = THUMB_H;
    this.thumbCtx = this.thumb.getContext("2d", { willReadFrequently: true, alpha: false });
    this.cancel = null;
    this.captureWidth = 0; // the camera's own width, once known: smaller pictures carry a thinner band
  }

  watch(element) {
    this.stop();
    if (element instanceof HTMLVideoElement) {
      this.cancel = "requestVideoFrameCallback" in element ? this.watchVideo(element) : this.watchPolled(element);
    } else {
      this.cancel = this.watchPolled(element);
    }
  }

  stop() {
    if (this.cancel) this.cancel();
    this.cancel = null;
  }

  watchVideo(video) {
    let stopped = false;
    let handle = 0;
    let lastPresented = null;
    const onVideoFrame = (now, meta) => {
      if (stopped) return;
      const frames = lastPresented == null ? 1 : Math.max(1, meta.presentedFrames - lastPresented);
      lastPresented = meta.presentedFrames;
      const width = video.videoWidth || meta.width;
      const height = video.videoHeight || meta.height;
      // The frame reaches the screen at expectedDisplayTime; count latency to then.
      const displayWallMs = Date.now() + (meta.expectedDisplayTime - performance.now());
      const { stamp } = this.safeRead(video, width, height);
      this.onFrame({ width, height, frames, displayWallMs, stamp, now: performance.now() });
      handle = video.requestVideoFrameCallback(onVideoFrame);
    };
    handle = video.requestVideoFrameCallback(onVideoFrame);
    return () => {
      stopped = true;
      video.cancelVideoFrameCallback(handle);
    };
  }

  // No per-frame callback: look each animation frame and report when the picture changed.
  watchPolled(element) {
    let stopped = false;
    let handle = 0;
    let lastKey = null;
    const isVideo = element instanceof HTMLVideoElement;
    const onAnimationFrame = () => {
      if (stopped) return;
      const width = isVideo ? element.videoWidth : element.naturalWidth;
      const height = isVideo ? element.videoHeight : element.naturalHeight;
      const ready = isVideo ? element.readyState >= 2 : element.complete;
      if (ready && width && height) {
        const { stamp, signature } = this.safeRead(element, width, height);
        const key = stamp != null ? `s${stamp}` : `g${signature}:${this.thumbSignature(element)}`;
        if (key !== lastKey) {
          lastKey = key;
          this.onFrame({ width, height, frames: 1, displayWallMs: Date.now(), stamp, now: performance.now() });
        }
      }
      handle = requestAnimationFrame(onAnimationFrame);
    };
    handle = requestAnimationFrame(onAnimationFrame);
    return () => {
      stopped = true;
      cancelAnimationFrame(handle);
    };
  }

  safeRead(element, width, height) {
    try {
      return this.reader.read(element, width, height, bandRows(width, this.captureWidth));
    } catch {
      return { stamp: null, signature: 0 }; // e.g. a frame not decodable yet
    }
  }

  // A coarse picture fingerprint, to notice new frames of a source without a stamp.
  thumbSignature(element) {
    try {
      this.thumbCtx.drawImage(element, 0, 0, THUMB_W, THUMB_H);
      const data = this.thumbCtx.getImageData(0, 0, THUMB_W, THUMB_H).data;
      let h = 0;
      for (let i = 0; i < data.length; i += 4) h = (h * 31 + data[i] + data[i + 1] * 3 + data[i + 2] * 7) | 0;
      return h;
    } catch {
      return 0;
    }
  }
}
