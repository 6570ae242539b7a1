// The "control" data channel: JSON messages with a "type", dispatched to handlers by type.
// Outlives WebRTC sessions: each new session's channel is attached, the handlers stay.

const PING_INTERVAL_MS = 2000;

export class Control {
  constructor() {
    this.handlers = new Map();
    this.openListeners = new Set();
    this.channel = null;
    this.pingTimer = null;
    this.rttMs = null;
    this.on("pong", (message) => {
      const sent = Number(message.t);
      if (Number.isFinite(sent)) this.rttMs = Math.max(0, Date.now() - sent);
    });
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
    channel.addEventListener("message", (event) => this.receive(event.data));
    if (channel.readyState === "open") this.opened(channel);
  }

  detach() {
    const wasOpen = this.isOpen;
    this.channel = null;
    this.stopPing();
    this.rttMs = null;
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
