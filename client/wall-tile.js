// One camera on the wall: its picture (a <video> for WebRTC, an <img> for MJPEG above it), its
// name, state and record dot, and a link to its own player. The wall decides the transport; the
// tile shows it and counts the frames it shows.

import { cameraRoot } from "/client/api.js";
import { FrameWatcher } from "/client/framewatch.js";
import { TileMjpeg } from "/client/wall-mjpeg.js";

const STATES = { up: "up", idle: "idle", down: "down" };

function element(tag, className, parent) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (parent) parent.append(node);
  return node;
}

export class Tile {
  constructor(camera, { api, slots }) {
    this.name = camera.name;
    this.camera = camera;
    this.aspect = 4 / 3; // until the camera's frame size is known

    this.el = element("a", "tile");
    this.el.dataset.camera = this.name;
    this.el.dataset.transport = "";
    this.stage = element("div", "tile-stage", this.el);
    this.video = element("video", "", this.stage);
    this.video.muted = true; // muted autoplay needs no user gesture
    this.video.playsInline = true;
    this.video.autoplay = true;
    this.video.disablePictureInPicture = true;
    this.img = element("img", "broken", this.stage);
    this.img.alt = `${this.name} (MJPEG)`;
    this.img.hidden = true;
    this.notice = element("div", "tile-notice", this.stage);
    const label = element("div", "tile-label", this.el);
    this.nameEl = element("span", "tile-name", label);
    this.nameEl.textContent = this.name;
    this.rec = element("span", "tile-rec", label);
    this.rec.title = "recording";
    element("span", "rec-dot", this.rec);
    element("span", "tile-rec-text", this.rec).textContent = "REC";
    // Marked from /api/cameras (`motion.active`): the wall's session carries no per-camera messages.
    this.motionTag = element("span", "tile-motion", label);
    this.motionTag.textContent = "motion";
    element("span", "tile-spacer", label);
    this.transportEl = element("span", "tile-transport", label);
    this.stateEl = element("span", "tile-state", label);

    // Transport bookkeeping, driven by the wall.
    this.transport = null; // "webrtc" | "mjpeg" | null while the first attempt runs
    this.session = null; // the WallSession on screen
    this.attempt = null; // a WallSession being tried underneath
    this.attemptDeadline = 0;
    this.failures = 0;
    this.retryAt = 0;
    this.lastError = null;
    this.rtcFrames = 0; // the lane's framesDecoded, from its stats
    this.videoFrames = 0; // frames the <video> presented
    this.lastVideoFrameAt = 0;
    this.mjpegFrames = 0; // pictures the <img> showed since MJPEG took over
    this.lastImageAt = 0;
    this.sawStamp = false;
    this.videoCallback = null;

    this.mjpeg = new TileMjpeg(this.img, api, slots, this.name);
    this.watcher = new FrameWatcher((frame) => {
      this.mjpegFrames += frame.frames;
      this.lastImageAt = frame.now;
      if (frame.stamp != null) this.sawStamp = true;
      this.setAspect(frame.width, frame.height);
    });
    this.video.addEventListener("resize", () => this.setAspect(this.video.videoWidth, this.video.videoHeight));
    this.update(camera);
  }

  update(camera) {
    this.camera = camera;
    // Smaller renditions carry a thinner stamp band: the watcher reads it at the camera's scale.
    this.watcher.captureWidth = Number(camera.width) || 0;
    this.el.href = typeof camera.url === "string" && camera.url.startsWith("/") ? camera.url : cameraRoot(this.name);
    const state = STATES[camera.state] || "down";
    this.el.dataset.state = state;
    this.stateEl.textContent = state;
    this.rec.hidden = camera.recording !== true;
    this.el.classList.toggle("recording", camera.recording === true);
    const motion = Boolean(camera.motion && camera.motion.active === true);
    this.motionTag.hidden = !motion;
    this.el.classList.toggle("motion", motion);
    this.el.title = `${this.name}: ${state}${camera.recording === true ? ", recording" : ""}${motion ? ", motion" : ""}`
      + `${camera.source ? ` (${camera.source})` : ""}: open its player`;
    // The server's frame size shapes the tile before the first frame: no jump later.
    if (!this.lastVideoFrameAt && !this.lastImageAt) this.setAspect(camera.width, camera.height);
  }

  setAspect(width, height) {
    if (!(width > 0 && height > 0)) return;
    this.aspect = width / height;
    const aspect = String(Math.round(this.aspect * 10000) / 10000);
    if (this.stage.style.getPropertyValue("--aspect") !== aspect) this.stage.style.setProperty("--aspect", aspect);
  }

  get isUp() {
    return this.camera.state === "up";
  }

  // --- the <video>: a lane of a WallSession -------------------------------------------------

  // Plays the track underneath whatever shows now, to see whether frames come.
  standby(track) {
    this.rtcFrames = 0;
    this.videoFrames = 0;
    this.lastVideoFrameAt = 0;
    this.video.srcObject = new MediaStream([track]);
    this.video.play().catch(() => {
      // autoplay refusals show up as no first frame
    });
    this.watchVideo();
  }

  hasVideoFrame() {
    return this.videoFrames > 0 || (this.video.videoWidth > 0 && this.video.readyState >= 2);
  }

  watchVideo() {
    if (!("requestVideoFrameCallback" in this.video) || this.videoCallback !== null) return;
    const onFrame = () => {
      this.videoFrames += 1;
      this.lastVideoFrameAt = performance.now();
      this.videoCallback = this.video.requestVideoFrameCallback(onFrame);
    };
    this.videoCallback = this.video.requestVideoFrameCallback(onFrame);
  }

  // The lane's decoder moved on (read from its stats): progress even where nothing is painted.
  noteDecoded(frames) {
    if (frames > this.rtcFrames) this.lastVideoFrameAt = performance.now();
    this.rtcFrames = frames;
  }

  dropVideo() {
    if (this.videoCallback !== null) this.video.cancelVideoFrameCallback(this.videoCallback);
    this.videoCallback = null;
    this.video.srcObject = null;
    this.rtcFrames = 0;
    this.videoFrames = 0;
  }

  showWebRtc() {
    this.setTransport("webrtc");
    this.lastVideoFrameAt = performance.now();
    this.watcher.stop();
    this.mjpeg.stop();
    this.img.hidden = true;
  }

  // --- the <img> ---------------------------------------------------------------------------

  showMjpeg() {
    if (this.transport === "mjpeg") return;
    this.setTransport("mjpeg");
    this.mjpegFrames = 0;
    this.lastImageAt = performance.now();
    this.sawStamp = false;
    this.img.hidden = false;
    this.mjpeg.start();
    this.watcher.watch(this.img);
  }

  restartMjpeg() {
    this.lastImageAt = performance.now();
    this.mjpeg.restart();
  }

  setTransport(transport) {
    this.transport = transport;
    this.el.dataset.transport = transport;
    this.transportEl.textContent = transport === "webrtc" ? "WebRTC" : "MJPEG";
  }

  // Frames shown on the current transport.
  hasPicture() {
    return this.transport === "webrtc" ? this.rtcFrames > 0 || this.videoFrames > 0 : this.mjpegFrames > 0;
  }

  render(declined) {
    let text = "";
    if (!this.hasPicture()) {
      if (declined) text = "access token needed";
      else if (this.camera.state === "down") text = "camera down";
      else text = "connecting…";
    }
    if (this.notice.textContent !== text) this.notice.textContent = text;
    this.notice.hidden = !text;
    const title = this.lastError && this.transport === "mjpeg" ? `WebRTC: ${this.lastError}` : "";
    if (this.transportEl.title !== title) this.transportEl.title = title;
  }

  remove() {
    this.watcher.stop();
    this.mjpeg.stop();
    this.dropVideo();
    this.el.remove();
  }
}
