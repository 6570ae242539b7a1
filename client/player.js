// The player: plays WebRTC at once, falls back to MJPEG by itself, and wires up the overlay,
// control channel, record button, recordings panel and status line.
// ?transport=mjpeg forces MJPEG; ?transport=webrtc forces WebRTC with no fallback.

import { Api, cameraPath, pageCamera } from "/client/api.js";
import { TokenForm } from "/client/auth.js";
import { Control } from "/client/control.js";
import { FrameWatcher } from "/client/framewatch.js";
import { FpsMeter, LatencyMeter } from "/client/meters.js";
import { MjpegView } from "/client/mjpeg.js";
import { Overlay } from "/client/overlay.js";
import { RecorderUi } from "/client/recorder-ui.js";
import { RecordingsPanel } from "/client/recordings.js";
import { latencyFromStamp } from "/client/stamp.js";
import { StatusLine } from "/client/status.js";
import { Toasts } from "/client/toast.js";
import { WebRtcSession, webrtcSupported } from "/client/webrtc.js";

const FIRST_FRAME_MS = 4000; // WebRTC must show a frame this soon, or MJPEG takes over
const BACKGROUND_ATTEMPT_MS = 8000; // a retry while MJPEG plays may take longer: nobody waits on it
const RETRY_MS = 12000; // first wait between WebRTC attempts while on MJPEG, doubled on each failure
const MAX_RETRY_MS = 120000; // ... up to this
const QUICK_RETRY_MS = 2000; // first retry after a dropped connection
const FORCED_RETRY_MS = 5000; // ?transport=webrtc keeps trying at this pace
const STALL_MS = 4000; // no new frame for this long: the transport is stuck
const UNSTAMPED_STALL_MS = 30000; // a still scene without a stamp may really not change
const PLAYING_MS = 3000; // a frame within this long means "playing"
const TICK_MS = 250;
const REPORT_MS = 2000; // latency reports to the server (its /metrics histogram)
const STATS_MS = 1000;

function transportMode() {
  const wanted = new URLSearchParams(location.search).get("transport");
  return wanted === "mjpeg" || wanted === "webrtc" ? wanted : "auto";
}

function timeout(ms, message) {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(message)), Math.max(0, ms)));
}

// Watches the <video> for a decoded frame to show: `promise` resolves then; `cancel()` stops the
// watch (its poll timer and listeners) when the attempt is given up. onWatching(+1/-1) counts
// the watches still running, so a leak would show.
function firstFrame(video, onWatching) {
  let stop = () => {};
  const promise = new Promise((resolve) => {
    const ready = () => video.videoWidth > 0 && video.readyState >= 2;
    if (ready()) {
      resolve();
      return;
    }
    let frameCallback = null;
    const check = () => {
      if (ready()) done();
    };
    const poll = setInterval(check, 200);
    stop = () => {
      stop = () => {};
      clearInterval(poll);
      if (frameCallback !== null) video.cancelVideoFrameCallback(frameCallback);
      video.removeEventListener("loadeddata", check);
      video.removeEventListener("resize", check);
      onWatching(-1);
    };
    const done = () => {
      stop();
      resolve();
    };
    onWatching(1);
    if ("requestVideoFrameCallback" in video) frameCallback = video.requestVideoFrameCallback(() => done());
    video.addEventListener("loadeddata", check);
    video.addEventListener("resize", check);
  });
  return { promise, cancel: () => stop() };
}

class Player {
  constructor(elements, { api, control, toasts, overlay }) {
    this.el = elements;
    this.api = api;
    this.control = control;
    this.toasts = toasts;
    this.overlay = overlay;
    this.mode = transportMode();
    this.state = {
      transport: null,
      codec: null,
      latencyMs: null,
      latencySamples: [],
      fps: 0,
      width: 0,
      height: 0,
      framesDecoded: 0,
      state: "connecting",
      rttMs: null,
      recording: false,
      clockOffsetMs: 0,
      mode: this.mode,
      camera: pageCamera, // null on the page at /, which shows the first camera
      lastError: null,
      frameWatchers: 0, // first-frame watches running (0 or 1; more would be a leak)
    };
    this.active = null; // the WebRTC session on screen
    this.attempt = null; // a WebRTC session being set up
    this.retryTimer = null;
    this.mjpegErrorTimer = null;
    this.failures = 0;
    this.clockOffsetMs = 0; // server clock minus this clock, when the control channel can tell
    this.lastFrameAt = 0;
    this.sawStamp = false;
    this.mjpegFrames = 0;
    this.framesSeen = 0; // on the current transport
    this.stats = null;
    this.fps = new FpsMeter();
    this.latency = new LatencyMeter();
    this.watcher = new FrameWatcher((frame) => this.onFrame(frame));
    this.mjpeg = new MjpegView(elements.img, api, { onError: () => this.onMjpegError() });

    elements.video.muted = true; // muted autoplay needs no user gesture
    document.addEventListener("visibilitychange", () => {
      // Frames are not painted while hidden; do not take that for a stall.
      if (document.visibilityState === "visible") this.lastFrameAt = performance.now();
    });
    // Leaving the page: say goodbye so the server frees this viewer now, not at its timeout.
    window.addEventListener("pagehide", () => {
      for (const session of [this.active, this.attempt]) if (session) session.close();
      this.mjpeg.stop();
    });
    // Back from the back/forward cache with its connections closed: start afresh.
    window.addEventListener("pageshow", (event) => {
      if (event.persisted) location.reload();
    });
    api.onTokenChange(() => {
      if (!this.active && this.mode !== "mjpeg") this.scheduleRetry(0);
    });
  }

  start() {
    if (this.mode === "mjpeg") this.showMjpeg();
    else this.attemptWebRtc(FIRST_FRAME_MS);
    setInterval(() => this.tick(), TICK_MS);
    setInterval(() => this.pollStats(), STATS_MS);
    setInterval(() => this.reportLatency(), REPORT_MS);
  }

  reportLatency() {
    const ms = this.state.latencyMs;
    if (ms != null && this.state.transport === "webrtc") this.control.send({ type: "latency", ms });
  }

  // --- WebRTC -------------------------------------------------------------------------------

  async attemptWebRtc(withinMs) {
    if (this.attempt || this.active) return;
    if (!webrtcSupported()) {
      this.webrtcFailed(new Error("this browser has no WebRTC"));
      return;
    }
    let lostReject = null;
    const lost = new Promise((_, reject) => {
      lostReject = reject;
    });
    lost.catch(() => {});
    const session = new WebRtcSession({
      api: this.api,
      onLost: (reason) => {
        if (this.active === session) this.onActiveLost(session, reason);
        else lostReject(new Error(reason));
      },
    });
    this.attempt = session;
    const deadline = performance.now() + withinMs;
    const video = this.el.video;
    let watch = null;
    try {
      const stream = await Promise.race([session.connect(), lost, timeout(withinMs, "no answer in time")]);
      video.srcObject = stream;
      video.play().catch(() => {
        // autoplay refusals surface as no first frame below
      });
      watch = firstFrame(video, (delta) => {
        this.state.frameWatchers += delta;
      });
      await Promise.race([watch.promise, lost,
        timeout(deadline - performance.now(), "no video frame in time")]);
      if (this.attempt !== session) {
        session.close(); // abandoned meanwhile (the page is going away)
        return;
      }
      this.attempt = null;
      this.showWebRtc(session);
    } catch (error) {
      if (this.attempt === session) this.attempt = null;
      session.close();
      if (!this.active) video.srcObject = null;
      this.webrtcFailed(error);
    } finally {
      if (watch) watch.cancel(); // a lost race leaves the watch running otherwise
    }
  }

  showWebRtc(session) {
    clearTimeout(this.retryTimer);
    this.failures = 0;
    this.active = session;
    this.state.lastError = null;
    this.setTransport("webrtc");
    this.control.attach(session.channel);
    this.mjpeg.stop();
    this.el.img.hidden = true;
    this.el.video.hidden = false;
    this.watcher.watch(this.el.video);
  }

  webrtcFailed(error) {
    this.failures += 1;
    this.state.lastError = `WebRTC: ${error.message}`;
    console.info(`camcast: WebRTC not playing (${error.message})`);
    if (this.mode === "webrtc") {
      this.state.state = "reconnecting";
      this.scheduleRetry(this.failures > 1 ? FORCED_RETRY_MS : QUICK_RETRY_MS);
    } else {
      this.showMjpeg();
      // Each attempt holds a server slot while it lasts: back off while WebRTC keeps failing.
      this.scheduleRetry(Math.min(RETRY_MS * 2 ** (this.failures - 1), MAX_RETRY_MS));
    }
  }

  onActiveLost(session, reason) {
    if (this.active !== session) return;
    console.info(`camcast: WebRTC dropped (${reason})`);
    this.state.lastError = `WebRTC: ${reason}`;
    this.active = null;
    this.control.detach();
    session.close();
    this.watcher.stop();
    this.el.video.srcObject = null;
    this.stats = null;
    if (this.mode === "webrtc") {
      this.state.state = "reconnecting";
      this.state.transport = null;
    } else {
      this.showMjpeg();
    }
    this.scheduleRetry(QUICK_RETRY_MS);
  }

  scheduleRetry(delayMs) {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      // While MJPEG plays, a retry may take its time; otherwise the viewer is waiting.
      const within = this.state.transport === "mjpeg" ? BACKGROUND_ATTEMPT_MS : FIRST_FRAME_MS * 2;
      this.attemptWebRtc(within);
    }, delayMs);
  }

  // --- MJPEG --------------------------------------------------------------------------------

  showMjpeg() {
    if (this.state.transport === "mjpeg") return;
    this.setTransport("mjpeg");
    this.state.codec = "MJPEG";
    this.mjpegFrames = 0;
    this.el.img.hidden = false;
    this.mjpeg.start();
    this.watcher.watch(this.el.img);
  }

  onMjpegError() {
    if (this.mjpegErrorTimer) return;
    this.mjpegErrorTimer = setTimeout(async () => {
      this.mjpegErrorTimer = null;
      if (!this.mjpeg.active) return;
      try {
        await this.api.json(cameraPath("/api/status")); // asks for a token if that was the problem
      } catch {
        // still down: try the stream again anyway, its error brings us back here
      }
      if (this.mjpeg.active) this.mjpeg.restart();
    }, QUICK_RETRY_MS);
  }

  // --- readings -----------------------------------------------------------------------------

  setTransport(transport) {
    this.state.transport = transport;
    this.state.codec = null;
    this.state.state = "connecting";
    this.state.framesDecoded = 0;
    this.fps.reset();
    this.latency.reset();
    this.sawStamp = false;
    this.framesSeen = 0;
    this.lastFrameAt = performance.now();
    this.el.stage.dataset.transport = transport;
  }

  onFrame(frame) {
    this.lastFrameAt = frame.now;
    this.framesSeen += frame.frames;
    this.fps.tick(frame.now, frame.frames);
    if (frame.stamp != null) this.sawStamp = true;
    // Stamps are in the server's clock: compare them with the server's time of display.
    const ms = latencyFromStamp(frame.stamp, frame.displayWallMs + this.clockOffsetMs);
    if (ms != null) this.latency.add(ms, frame.now);
    if (this.state.transport === "mjpeg") this.mjpegFrames += frame.frames;
    if (frame.width !== this.state.width || frame.height !== this.state.height) {
      this.state.width = frame.width;
      this.state.height = frame.height;
      this.setAspect(frame.width, frame.height);
    }
  }

  setAspect(width, height) {
    if (width > 0 && height > 0) this.el.stage.style.setProperty("--aspect", String(width / height));
  }

  onStatus(status) {
    // Size the stage from the server's frame size before the first frame: no jump later.
    if (!this.state.width && status && status.width && status.height) this.setAspect(status.width, status.height);
  }

  async pollStats() {
    if (!this.active) return;
    const session = this.active;
    try {
      const stats = await session.readStats();
      if (this.active !== session || !stats) return;
      this.stats = stats;
      this.state.codec = stats.codec;
      this.state.framesDecoded = stats.framesDecoded;
    } catch {
      // the session is closing; the next tick notices
    }
  }

  tick() {
    const now = performance.now();
    const state = this.state;
    state.fps = Math.round(this.fps.fps(now) * 10) / 10;
    state.latencySamples = this.latency.values(now);
    const median = this.latency.median(now);
    state.latencyMs = median == null ? null : Math.round(median * 10) / 10;
    state.rttMs = this.control.rttMs ?? (this.stats ? this.stats.rttMs : null);
    // Kept across a switch to MJPEG: the clocks do not change with the transport.
    if (this.control.isOpen) this.clockOffsetMs = this.control.clockOffsetMs;
    state.clockOffsetMs = Math.round(this.clockOffsetMs);
    if (state.transport === "mjpeg") state.framesDecoded = this.mjpegFrames;

    const sinceFrame = now - this.lastFrameAt;
    if (state.transport && state.state !== "reconnecting") {
      const hadFrames = this.framesSeen > 0 || state.transport === "webrtc";
      state.state = sinceFrame < PLAYING_MS && hadFrames ? "playing" : hadFrames ? "stalled" : "connecting";
    }
    if (document.visibilityState === "visible") this.checkStall(sinceFrame);

    this.renderNotice();
    this.overlay.render(state, {
      rttMs: state.rttMs,
      jitterBufferMs: state.transport === "webrtc" && this.stats ? this.stats.jitterBufferMs : null,
    });
    this.el.transportBadge.textContent = state.transport === "webrtc" ? "WebRTC"
      : state.transport === "mjpeg" ? "MJPEG" : "–";
    this.el.transportBadge.title = state.lastError || "";
    this.el.signIn.hidden = !this.api.declined;
  }

  checkStall(sinceFrame) {
    if (this.state.transport === "webrtc" && this.active && sinceFrame > STALL_MS) {
      this.onActiveLost(this.active, "no frames");
    } else if (this.state.transport === "mjpeg" && this.mjpeg.active
      && sinceFrame > (this.sawStamp ? STALL_MS : UNSTAMPED_STALL_MS)) {
      this.lastFrameAt = performance.now();
      this.mjpeg.restart();
    }
  }

  renderNotice() {
    const state = this.state.state;
    let text = "";
    if (state !== "playing" && this.api.declined) text = "access token needed: press Token…";
    else if (state === "connecting") text = "connecting…";
    else if (state === "reconnecting") text = "reconnecting…";
    else if (state === "stalled") text = "waiting for video…";
    if (this.el.notice.textContent !== text) this.el.notice.textContent = text;
    this.el.notice.hidden = !text;
  }
}

function setUpFullscreen(button, stage, video) {
  const canStage = typeof stage.requestFullscreen === "function";
  if (!canStage && typeof video.webkitEnterFullscreen !== "function") {
    button.hidden = true;
    return;
  }
  button.addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else if (canStage) stage.requestFullscreen().catch(() => {});
    else video.webkitEnterFullscreen(); // iPhone Safari: only the video can go full screen
  });
}

// On /cameras/<name>/ the page names its camera, and links back to the wall when there is one.
// The single-camera page at / stays as it always was.
function showCamera(api, head, name, allCameras) {
  if (pageCamera === null) return;
  document.title = `${pageCamera} · camcast`;
  name.textContent = pageCamera;
  head.hidden = false;
  document.documentElement.classList.add("with-camera-head");
  api.json("/api/cameras").then((cameras) => {
    allCameras.hidden = !(Array.isArray(cameras) && cameras.length > 1);
  }).catch(() => {
    // an older server without the list: no wall to go back to
  });
}

function main() {
  const $ = (id) => document.getElementById(id);
  const elements = {
    stage: $("stage"),
    video: $("video"),
    img: $("mjpeg"),
    notice: $("notice"),
    transportBadge: $("transport"),
    signIn: $("sign-in"),
  };
  const toasts = new Toasts($("toasts"));
  const api = new Api(new TokenForm($("token-dialog")));
  const control = new Control();
  const overlay = new Overlay($("overlay"), $("overlay-toggle"));
  const player = new Player(elements, { api, control, toasts, overlay });
  const recordings = new RecordingsPanel($("recordings"), api, toasts);
  const status = new StatusLine($("status"), api, (s) => player.onStatus(s));

  control.on("error", (message) => toasts.error(String(message.message || "server error")));
  const recorder = new RecorderUi({
    button: $("record"),
    badge: $("rec-badge"),
    badgeTime: $("rec-time"),
    api,
    control,
    toasts,
    onChange: ({ recording, name, stoppedName }) => {
      player.state.recording = recording;
      recordings.setActive(recording ? name : null);
      // The file is finished a moment after the stop: look twice.
      const delays = recording ? [1000] : [300, 2500];
      for (const delay of delays) setTimeout(() => recordings.refresh(), delay);
      if (stoppedName) toasts.info(`Saved ${stoppedName}`);
    },
  });

  showCamera(api, $("camera-head"), $("camera-name"), $("all-cameras"));
  elements.signIn.addEventListener("click", () => api.promptToken());
  setUpFullscreen($("fullscreen"), elements.stage, elements.video);

  window.camcast = player.state;
  player.start();
  status.start();
  recorder.start();
  recordings.refresh();
}

main();
