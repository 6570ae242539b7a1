// The record button and the REC badge. Any viewer may start or stop the one recording; the
// state comes from the server: pushed on the control channel, or polled while on MJPEG.

import { cameraPath } from "/client/api.js";
import { formatDuration, parseTime } from "/client/format.js";

const POLL_MS = 2000;
const POLL_UNAVAILABLE_MS = 30000; // the server has no recorder (404): look again now and then
const ACTION_TIMEOUT_MS = 5000;

export class RecorderUi {
  constructor({ button, badge, badgeTime, api, control, toasts, onChange = () => {} }) {
    this.button = button;
    this.badge = badge;
    this.badgeTime = badgeTime;
    this.api = api;
    this.control = control;
    this.toasts = toasts;
    this.onChange = onChange;
    this.recording = false;
    this.name = null;
    this.startedMs = null;
    this.available = null;
    this.lastError = undefined; // undefined until the first state: an old error is no news
    this.busyTimer = null;
    this.pollTimer = null;

    button.addEventListener("click", () => this.toggle());
    control.on("record", (message) => this.apply(message));
    control.onOpenChange(() => this.schedulePoll(0));
    setInterval(() => this.tick(), 500);
    this.render();
  }

  start() {
    this.schedulePoll(0);
  }

  // A record-state message from the server (channel push, REST answer or poll).
  apply(message) {
    if (!message || typeof message.state !== "string") return;
    this.available = true;
    this.noteError(message.error ?? null);
    const wasRecording = this.recording;
    const previousName = this.name;
    this.recording = message.state === "recording";
    if (this.recording) {
      this.name = message.name || this.name;
      const started = parseTime(message.started);
      this.startedMs = started ?? (wasRecording ? this.startedMs : Date.now());
    } else {
      this.startedMs = null;
      this.name = message.name || previousName;
    }
    this.setBusy(false);
    this.render();
    if (wasRecording !== this.recording) {
      this.onChange({ recording: this.recording, name: this.name, stoppedName: wasRecording ? previousName : null });
    }
  }

  // Over the control channel the server also sends an "error" message: only say it once.
  noteError(error) {
    const isNew = this.lastError !== undefined && error && error !== this.lastError;
    this.lastError = error;
    if (isNew && !this.control.isOpen) this.toasts.error(`Recording: ${error}`);
  }

  async toggle() {
    const action = this.recording ? "stop" : "start";
    this.setBusy(true);
    if (this.control.send({ type: "record", action })) return; // the answer arrives as a push
    try {
      const state = await this.api.postJson(cameraPath(`/api/record/${action}`));
      if (state && typeof state.state === "string") this.apply(state);
      else await this.poll();
    } catch (error) {
      this.setBusy(false);
      if (error.status === 404) this.markUnavailable();
      else this.toasts.error(`Could not ${action} recording: ${error.message}`);
    }
  }

  setBusy(busy) {
    clearTimeout(this.busyTimer);
    this.button.classList.toggle("busy", busy);
    this.button.disabled = busy || this.available === false;
    if (busy) this.busyTimer = setTimeout(() => this.setBusy(false), ACTION_TIMEOUT_MS);
  }

  markUnavailable() {
    this.available = false;
    this.button.disabled = true;
    this.button.title = "This server does not record";
  }

  schedulePoll(delayMs) {
    clearTimeout(this.pollTimer);
    this.pollTimer = setTimeout(async () => {
      // With an open control channel the server pushes every change: no polling needed.
      if (this.control.isOpen) return;
      if (document.visibilityState === "visible") await this.poll();
      this.schedulePoll(this.available === false ? POLL_UNAVAILABLE_MS : POLL_MS);
    }, delayMs);
  }

  async poll() {
    try {
      this.apply(await this.api.json(cameraPath("/api/record")));
      this.button.title = "";
    } catch (error) {
      if (error.status === 404) this.markUnavailable();
    }
  }

  tick() {
    if (this.recording) this.renderTime();
  }

  elapsedText() {
    if (!this.startedMs) return "0:00";
    return formatDuration(Math.max(0, (Date.now() - this.startedMs) / 1000));
  }

  renderTime() {
    const text = this.elapsedText();
    if (this.badgeTime.textContent !== text) this.badgeTime.textContent = text;
  }

  render() {
    this.badge.hidden = !this.recording;
    this.button.classList.toggle("recording", this.recording);
    this.button.setAttribute("aria-pressed", String(this.recording));
    this.button.querySelector(".label").textContent = this.recording ? "Stop" : "Record";
    this.badge.title = this.recording && this.name ? `recording ${this.name}` : "";
    if (this.available !== false) this.button.disabled = this.button.classList.contains("busy");
    if (this.recording) this.renderTime();
  }
}
