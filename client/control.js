// The "control" data channel: JSON messages with a "type", dispatched to handlers by type.
// Outlives WebRTC sessions: each new session's channel is attached, the handlers stay.

const PING_INTERVAL_MS = 2000;
const OFFSET_SAMPLES = 10;

export class Control {
  constructor() {
    this.handlers = new Map();
    this.openListeners = new Set();
    this.channel = null;
    this.pingTimer = null;
    this.rttMs = null;
    this.clockSamples = []; // [rtt, offset] from recent pongs
    this.on("pong", (message) => this.onPong(message));
  }

  onPong(message) {
    const sent = Number(message.t);
    if (!Number.isFinite(sent)) return;
    const now = Date.now();
    this.rttMs = Math.max(0, now - sent);
    const serverTime = Number(message.server_time);
    if (!Number.isFinite(serverTime)) return;
    // NTP-style: the server read its clock about half way through the round trip.
    this.clockSamples.push([this.rttMs, serverTime - (sent + now) / 2]);
    if (this.clockSamples.length > OFFSET_SAMPLES) this.clockSamples.shift();
  }

  // How far the server's clock is ahead of this one (ms), from the quickest recent round trip;
  // 0 while that cannot be told apart from no offset (same machine, synchronised clocks).
  get clockOffsetMs() {
    if (!this.clockSamples.length) return 0;
    const [rtt, offset] = this.clockSamples.reduce((best, sample) => (sample[0] < best[0] ? sample : best));
    return Math.abs(offset) > rtt / 2 + 2 ? offset : 0;
  }

  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(handler);
  }

  onOpenChange(listener) {
    this.openListeners.add(listener);
  }

  get isOpen() {
    return this.channel != null && this.channel.readyState === "open";
  }

  attach(channel) {
    this.detach();
    this.channel = channel;
    channel.addEventListener("open", () => this.opened(channel));
    channel.addEventListener("close", () => this.closed(channel));
    channel.addEventListener("message", (event) => {
      if (channel === this.channel) this.receive(event.data);
    });
    if (channel.readyState === "open") this.opened(channel);
  }

  detach() {
    const wasOpen = this.isOpen;
    this.channel = null;
    this.stopPing();
    this.rttMs = null;
    this.clockSamples = [];
    if (wasOpen) this.notifyOpen(false);
  }

  opened(channel) {
    if (channel !== this.channel) return;
    this.stopPing();
    this.ping();
    this.pingTimer = setInterval(() => this.ping(), PING_INTERVAL_MS);
    this.notifyOpen(true);
  }

  closed(channel) {
    if (channel !== this.channel) return;
    this.detach();
  }

  stopPing() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  ping() {
    this.send({ type: "ping", t: Date.now() });
  }

  notifyOpen(open) {
    for (const listener of this.openListeners) listener(open);
  }

  // Returns false when there is no open channel (the caller then uses the REST API).
  send(message) {
    if (!this.isOpen) return false;
    try {
      this.channel.send(JSON.stringify(message));
      return true;
    } catch {
      return false;
    }
  }

  receive(data) {
    let message;
    try {
      message = JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data));
    } catch {
      console.warn("camcast: ignoring a control message that is not JSON");
      return;
    }
    if (!message || typeof message.type !== "string") return;
    const handlers = this.handlers.get(message.type);
    if (!handlers) return; // unknown types are for newer clients
    for (const handler of handlers) {
      try {
        handler(message);
      } catch (error) {
        console.error("camcast: control handler failed", error);
      }
    }
  }
}
