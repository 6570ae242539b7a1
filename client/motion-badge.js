// The motion badge on the picture: shown while the camera's motion detector reports an event.
// The server pushes {"type":"motion","state":"start"|"end","event":{…}} on the control channel;
// without one (MJPEG) the camera's /api/status `motion` field, polled by the status line, tells.

// A status answer may have left the server before a pushed change: after a push, polls are
// trusted again only this much later.
const PUSH_WINS_MS = 4000;

export class MotionBadge {
  constructor(element, { onChange = () => {} } = {}) {
    this.element = element;
    this.onChange = onChange; // ({enabled, active, event}) after any change
    this.enabled = false;
    this.active = false;
    this.event = null;
    this.endedIds = new Set(); // ended events a late poll must not bring back
    this.pushedAt = -Infinity;
    this.render();
  }

  // A "motion" message from the control channel.
  applyMessage(message) {
    if (!message || (message.state !== "start" && message.state !== "end")) return;
    const event = message.event && typeof message.event === "object" ? message.event : null;
    this.pushedAt = performance.now();
    this.enabled = true; // only a camera with a detector sends these
    if (message.state === "end" && event && event.id != null) this.endedIds.add(String(event.id));
    this.set(message.state === "start", event);
  }

  // The `motion` field of GET /api/status: {enabled, active, event}.
  applyStatus(motion) {
    const enabled = Boolean(motion && motion.enabled === true);
    if (!enabled) {
      this.enabled = false;
      this.set(false, null);
      return;
    }
    this.enabled = true;
    const event = motion.event && typeof motion.event === "object" ? motion.event : null;
    const ended = event && event.id != null && this.endedIds.has(String(event.id));
    if (performance.now() - this.pushedAt < PUSH_WINS_MS || (motion.active === true && ended)) {
      this.render();
      return;
    }
    this.set(motion.active === true, event);
  }

  set(active, event) {
    const changed = active !== this.active || (event && this.event && event.id !== this.event.id);
    this.active = active;
    this.event = active ? event : null;
    this.render();
    if (changed) this.onChange({ enabled: this.enabled, active: this.active, event });
  }

  render() {
    const element = this.element;
    element.hidden = !this.enabled;
    element.dataset.active = String(this.active);
    // The live region announces its text: "Motion" when an event starts, nothing when it ends.
    const text = this.active ? "Motion" : "";
    const label = element.querySelector(".motion-text");
    if (label.textContent !== text) label.textContent = text;
    element.title = this.active ? "motion detected now" : "";
  }
}
