// The player: plays WebRTC at once, falls back to MJPEG by itself, and wires up the overlay,
// control channel, record button, recordings panel and status line. It watches its own picture:
// a WebRTC stream that stalls or falls behind is said so on screen at once and, if it does not
// recover, replaced by a light MJPEG variant while WebRTC is retried in the background.
// ?transport=mjpeg forces MJPEG; ?transport=webrtc forces WebRTC with no fallback.

import { Api, cameraPath, pageCamera } from "/client/api.js";
import { firstFrame, keepsPlaying, timeout } from "/client/attempt.js";
import { TokenForm } from "/client/auth.js";
import { ClipPlayer } from "/client/clip-player.js";
import { Control } from "/client/control.js";
import { EventsTimeline } from "/client/events.js";
import { FrameWatcher } from "/client/framewatch.js";
import { LinkHealth } from "/client/health.js";
import { FpsMeter, LatencyMeter } from "/client/meters.js";
import { MjpegView } from "/client/mjpeg.js";
import { MotionBadge } from "/client/motion-badge.js";
import { setUpFullscreen, showCamera } from "/client/page-controls.js";
import { LIGHT, MjpegAdapter, VARIANTS, describeVariant, variantParams } from "/client/mjpeg-variants.js";
import { Overlay } from "/client/overlay.js";
import { RecorderUi } from "/client/recorder-ui.js";
import { RecordingsPanel } from "/client/recordings.js";
import { renditionOfWidth, sessionOf } from "/client/rendition.js";
import { latencyFromStamp } from "/client/stamp.js";
import { isLighter, noticeText, showNotice } from "/client/stage-words.js";
import { SoundControl } from "/client/sound.js";
import { StatusLine } from "/client/status.js";
import { Toasts } from "/client/toast.js";
import { WebRtcSession, webrtcSupported } from "/client/webrtc.js";

const FIRST_FRAME_MS = 4000; // WebRTC must show a frame this soon, or MJPEG takes over
const BACKGROUND_ATTEMPT_MS = 8000; // a retry while MJPEG plays may take longer: nobody waits on it
const TRIAL_MS = 2000; // ... but must then play steadily this long before it replaces MJPEG
const RETRY_MS = 12000; // first wait between WebRTC attempts while on MJPEG, doubled on each failure
const MAX_RETRY_MS = 120000; // ... up to this
const QUICK_RETRY_MS = 2000; // first retry after a dropped connection
const FORCED_RETRY_MS = 5000; // ?transport=webrtc keeps trying at this pace
// A weak WebRTC picture that lasts this long is given up (the server needs about 3 s to move a
// viewer whose link failed to a lighter rendition: that should have its chance) ...
const WEAK_FOR_MS = 5000;
const DEGRADED_RETRY_MS = 5000; // ... and WebRTC tried again after this, doubled each time ...
const STABLE_MS = 60000; // ... until it has played this long without trouble
const MJPEG_STALL_MS = 4000; // no new MJPEG frame for this long: the connection is stuck
const UNSTAMPED_STALL_MS = 30000; // a still scene without a stamp may really not change
const PLAYING_MS = 3000; // a frame within this long means "playing"
const TICK_MS = 250;
const REPORT_MS = 2000; // latency reports to the server (its /metrics histogram)
const STATS_MS = 1000;

function transportMode() {
  const wanted = new URLSearchParams(location.search).get("transport");
  return wanted === "mjpeg" || wanted === "webrtc" ? wanted : "auto";
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
      link: "ok", // "weak" while the WebRTC picture stalls or falls behind
      weakReason: null,
      degraded: false, // on MJPEG because WebRTC was too weak to play
      degrades: 0, // in a row, each followed by a longer wait before WebRTC is tried again
      mjpegLevel: null, // the MJPEG variant's place on the ladder (0: the camera's own stream)
      mjpegVariant: null, // e.g. "320 px · q50"
      rendition: null, // the WebRTC rendition on screen (high, medium, low)
      switchingTo: null, // the rendition the server is moving this viewer to
      estimateBps: null, // the server's estimate of this viewer's link
    };
    this.active = null; // the WebRTC session on screen
    this.attempt = null; // a WebRTC session being set up
    this.retryTimer = null;
    this.mjpegErrorTimer = null;
    this.failures = 0;
    this.clockOffsetMs = 0; // server clock minus this clock, when the control channel can tell
    this.lastFrameAt = 0;
    this.sawStamp = false;
    this.stamped = false; // the source stamps its frames: every frame differs, so fps counts frames
    this.mjpegFrames = 0;
    this.framesSeen = 0; // on the current transport
    this.stats = null;
    this.health = new LinkHealth();
    this.healthySince = 0;
    this.adapter = new MjpegAdapter();
    this.camera = { width: 0, ladder: null, fps: null }; // from the last /api/status
    this.sessionStatus = null; // the active session's entry there
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
    if (this.mode === "mjpeg") this.showMjpeg(0);
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
      // Replacing a picture that plays: only for one that keeps playing, or the two would swap
      // back and forth on a link that carries a first frame and little more.
      if (this.state.transport === "mjpeg" && this.state.state === "playing") {
        await Promise.race([keepsPlaying(session, TRIAL_MS), lost]);
      }
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
    this.state.degraded = false;
    this.setTransport("webrtc");
    this.healthySince = performance.now();
    this.control.attach(session.channel);
    this.mjpeg.stop();
    this.state.mjpegLevel = null;
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
      this.showMjpeg(0);
      // Each attempt holds a server slot while it lasts: back off while WebRTC keeps failing.
      this.scheduleRetry(Math.min(RETRY_MS * 2 ** (this.failures - 1), MAX_RETRY_MS));
    }
  }

  // Ends the session on screen (closing it on the server too).
  dropActive(reason) {
    const session = this.active;
    this.state.lastError = `WebRTC: ${reason}`;
    this.active = null;
    this.sessionStatus = null;
    this.control.detach();
    session.close();
    this.watcher.stop();
    this.el.video.srcObject = null;
    this.stats = null;
    this.health.reset();
    this.state.link = "ok";
    this.state.weakReason = null;
  }

  onActiveLost(session, reason) {
    if (this.active !== session) return;
    console.info(`camcast: WebRTC dropped (${reason})`);
    this.dropActive(reason);
    if (this.mode === "webrtc") {
      this.state.state = "reconnecting";
      this.state.transport = null;
    } else {
      this.showMjpeg(0);
    }
    this.scheduleRetry(QUICK_RETRY_MS);
  }

  // The WebRTC picture stayed weak: a light MJPEG variant takes over, and WebRTC is tried again
  // later, each time a little later while it keeps failing this way.
  degrade(reason) {
    console.info(`camcast: WebRTC too weak to play (${reason})`);
    this.dropActive(reason);
    const state = this.state;
    state.degrades += 1;
    if (this.mode === "webrtc") {
      state.state = "reconnecting";
      state.transport = null;
      this.scheduleRetry(QUICK_RETRY_MS);
      return;
    }
    state.degraded = true;
    this.showMjpeg(LIGHT);
    this.scheduleRetry(Math.min(DEGRADED_RETRY_MS * 2 ** (state.degrades - 1), MAX_RETRY_MS));
  }

  scheduleRetry(delayMs) {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      // While MJPEG plays, a retry may take its time; otherwise the viewer is waiting.
      const within = this.state.transport === "mjpeg" ? BACKGROUND_ATTEMPT_MS : FIRST_FRAME_MS * 2;
      this.attemptWebRtc(within);
    }, delayMs);
  }

  // Called each tick while WebRTC is on screen and the page visible.
  watchWebRtc(now, sinceFrame) {
    const state = this.state;
    const weak = this.health.update(now, sinceFrame, this.latency.median(now));
    if (weak && state.link !== "weak") console.info(`camcast: weak connection (${weak.reason})`);
    state.link = weak ? "weak" : "ok";
    state.weakReason = weak ? weak.reason : null;
    if (!weak) {
      if (now - this.healthySince > STABLE_MS) state.degrades = 0;
      return;
    }
    this.healthySince = now;
    if (now - weak.since >= WEAK_FOR_MS) this.degrade(weak.reason);
  }

  // --- MJPEG --------------------------------------------------------------------------------

  showMjpeg(level) {
    if (this.state.transport === "mjpeg") {
      if (level > this.adapter.level) this.setMjpegLevel(level);
      return;
    }
    this.setTransport("mjpeg");
    this.state.codec = "MJPEG";
    this.mjpegFrames = 0;
    this.el.img.hidden = false;
    this.adapter.begin(level, performance.now());
    this.noteMjpegLevel();
    this.mjpeg.start(variantParams(this.adapter.level));
    this.watcher.watch(this.el.img);
  }

  setMjpegLevel(level) {
    const before = this.adapter.level;
    this.adapter.begin(level, performance.now());
    this.noteMjpegLevel();
    this.lastFrameAt = performance.now();
    if (before !== this.adapter.level) {
      const what = describeVariant(this.adapter.level) || "full size";
      console.info(`camcast: MJPEG ${this.adapter.level > before ? "down" : "up"} to ${what}`);
    }
    this.mjpeg.switchTo(variantParams(this.adapter.level));
  }

  noteMjpegLevel() {
    this.state.mjpegLevel = this.adapter.level;
    this.state.mjpegVariant = describeVariant(this.adapter.level) || null;
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

  // Called each tick while MJPEG is on screen and the page visible.
  watchMjpeg(now, sinceFrame) {
    if (!this.mjpeg.active) return;
    const state = this.state;
    // The camera's rate is what an on-time stream delivers; unknown while its source is down.
    const expectedFps = this.camera.fps;
    if (sinceFrame > (this.sawStamp ? MJPEG_STALL_MS : UNSTAMPED_STALL_MS)) {
      // Stuck: a fresh connection, and a lighter one when frames should be coming.
      const late = this.stamped && expectedFps > 0;
      this.setMjpegLevel(Math.min(this.adapter.level + (late ? 1 : 0), VARIANTS.length - 1));
      return;
    }
    const level = this.adapter.update(now, {
      latencyMs: this.latency.median(now),
      frames: this.mjpegFrames,
      expectedFps,
      stamped: this.stamped,
      playing: state.state === "playing" && this.framesSeen > 0,
    });
    if (level != null) this.setMjpegLevel(level);
  }

  // --- readings -----------------------------------------------------------------------------

  setTransport(transport) {
    this.state.transport = transport;
    this.state.codec = null;
    this.state.state = "connecting";
    this.state.framesDecoded = 0;
    // Until the new transport's first frame: the old one's size would name the wrong rendition.
    this.state.width = 0;
    this.state.height = 0;
    this.fps.reset();
    this.latency.reset();
    this.health.reset();
    this.state.link = "ok";
    this.state.weakReason = null;
    this.sawStamp = false;
    this.framesSeen = 0;
    this.lastFrameAt = performance.now();
    this.el.stage.dataset.transport = transport;
  }

  onFrame(frame) {
    this.lastFrameAt = frame.now;
    this.framesSeen += frame.frames;
    this.fps.tick(frame.now, frame.frames);
    if (frame.stamp != null) {
      this.sawStamp = true;
      this.stamped = true;
    }
    // Stamps are in the server's clock: compare them with the server's time of display.
    const ms = latencyFromStamp(frame.stamp, frame.displayWallMs + this.clockOffsetMs);
    if (ms != null) this.latency.add(ms, frame.now);
    if (this.state.transport === "mjpeg") this.mjpegFrames += frame.frames;
    if (frame.width !== this.state.width || frame.height !== this.state.height) {
      if (this.state.transport === "webrtc") this.health.postpone(frame.now);
      this.state.width = frame.width;
      this.state.height = frame.height;
      this.setAspect(frame.width, frame.height);
    }
  }

  setAspect(width, height) {
    if (width > 0 && height > 0) this.el.stage.style.setProperty("--aspect", String(width / height));
  }

  onStatus(status) {
    if (!status) return;
    // Size the stage from the server's frame size before the first frame: no jump later.
    if (!this.state.width && status.width && status.height) this.setAspect(status.width, status.height);
    const up = status.state === "up" || (status.state === undefined && status.source_up !== false);
    this.watcher.captureWidth = Number(status.width) || 0;
    this.camera = {
      width: Number(status.width) || 0,
      ladder: Array.isArray(status.renditions) ? status.renditions : null,
      fps: up && Number(status.fps) > 0 ? Number(status.fps) : null,
    };
    this.sessionStatus = this.active ? sessionOf(status, this.active.id) : null;
  }

  // The rendition on screen: named from the decoded size at once, the server's view added when
  // its status arrives (it also knows where the viewer is headed, and why).
  describeRendition() {
    const state = this.state;
    const session = state.transport === "webrtc" ? this.sessionStatus : null;
    const fromSize = renditionOfWidth(state.width, this.camera.width, this.camera.ladder);
    state.rendition = state.transport === "webrtc" ? fromSize || (session && session.rendition) || null : null;
    state.switchingTo = session && session.switching_to ? String(session.switching_to) : null;
    state.estimateBps = session && Number.isFinite(session.estimate_bps) ? session.estimate_bps : null;
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
    if (document.visibilityState !== "visible") {
      this.health.reset();
    } else if (state.transport === "webrtc" && this.active) {
      this.watchWebRtc(now, sinceFrame);
    } else if (state.transport === "mjpeg") {
      this.watchMjpeg(now, sinceFrame);
    }

    this.describeRendition();
    this.renderWords();
    this.overlay.render(state, {
      rttMs: state.rttMs,
      jitterBufferMs: state.transport === "webrtc" && this.stats ? this.stats.jitterBufferMs : null,
      avOffsetMs: state.transport === "webrtc" && this.stats ? this.stats.avOffsetMs : null,
    });
    this.el.transportBadge.textContent = state.transport === "webrtc" ? "WebRTC"
      : state.transport === "mjpeg" ? "MJPEG" : "–";
    this.el.transportBadge.title = state.lastError || "";
    this.el.signIn.hidden = !this.api.declined;
  }

  renderWords() {
    const s = this.state;
    const text = noticeText(s, { declined: this.api.declined, forcedWebRtc: this.mode === "webrtc" });
    showNotice(this.el.notice, text, s.framesDecoded > 0 || this.framesSeen > 0);
    const top = this.camera.ladder && this.camera.ladder.length ? String(this.camera.ladder[0].name) : null;
    const note = this.el.linkNote;
    const lighter = isLighter(s, top);
    if (note.hidden === lighter) note.hidden = !lighter;
  }
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
    linkNote: $("link-note"),
  };
  const toasts = new Toasts($("toasts"));
  const api = new Api(new TokenForm($("token-dialog")));
  const control = new Control();
  const overlay = new Overlay($("overlay"), $("overlay-toggle"));
  const player = new Player(elements, { api, control, toasts, overlay });
  const recordings = new RecordingsPanel($("recordings"), api, toasts);
  const clips = new ClipPlayer(document.querySelector("#events .event-player"), toasts);
  const events = new EventsTimeline($("events"), { api, toasts, clips });
  const motion = new MotionBadge($("motion-badge"));
  // Pushed on the control channel while WebRTC plays; the status poll tells otherwise.
  control.on("motion", (message) => {
    motion.applyMessage(message);
    events.setEnabled(motion.enabled);
    events.applyMessage(message);
  });
  const status = new StatusLine($("status"), api, (s) => {
    player.onStatus(s);
    motion.applyStatus(s && s.motion);
    events.setEnabled(motion.enabled);
  });

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
  new SoundControl($("sound"), elements.video).start();

  window.camcast = player.state;
  window.camcastPlayer = player; // for a look from the console (and the tests) at its sessions
  player.start();
  status.start();
  recorder.start();
  recordings.refresh();
}

main();
