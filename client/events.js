// The motion events timeline under the picture: newest first, each with its thumbnail, start
// time, duration and peak; a click plays the event's recording from the event's offset, Delete
// removes the event. Shown only while the camera's detector is on. New events come from the
// control channel at once and from GET /api/events?since=… every few seconds.

import { cameraPath } from "/client/api.js";
import { formatDateTime, formatDuration, parseTime } from "/client/format.js";

const REFRESH_MS = 10000;
const FULL_EVERY = 6; // every sixth refresh reloads the whole list (events deleted elsewhere go)
const LIMIT = 100;
const CONFIRM_MS = 4000;

// Only paths on this server are loaded (the page's CSP would refuse others anyway).
function localPath(value) {
  return typeof value === "string" && value.startsWith("/") && !value.startsWith("//") ? value : null;
}

// An event from the server, checked and with its times parsed; null when it is not one.
export function readEvent(raw) {
  if (!raw || typeof raw !== "object" || raw.id == null) return null;
  const startMs = parseTime(raw.start);
  if (startMs == null) return null;
  const recording = raw.recording && typeof raw.recording === "object" && localPath(raw.recording.url)
    ? {
      name: String(raw.recording.name || ""),
      url: raw.recording.url,
      offset: Math.max(0, Number(raw.recording.offset) || 0),
    }
    : null;
  const peak = Number(raw.peak);
  return {
    id: String(raw.id),
    startMs,
    endMs: parseTime(raw.end),
    peak: Number.isFinite(peak) ? peak : null,
    thumbnail: localPath(raw.thumbnail),
    recording,
  };
}

function shortTime(ms) {
  const date = new Date(ms);
  const time = date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (date.toDateString() === new Date().toDateString()) return time;
  return `${date.toLocaleDateString(undefined, { month: "short", day: "numeric" })} ${time}`;
}

function element(tag, className, parent) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (parent) parent.append(node);
  return node;
}

export class EventsTimeline {
  constructor(root, { api, toasts, clips }) {
    this.root = root;
    this.api = api;
    this.toasts = toasts;
    this.clips = clips;
    this.list = root.querySelector(".events-list");
    this.message = root.querySelector(".events-message");
    this.count = root.querySelector(".events-count");
    this.events = new Map(); // id → event (readEvent)
    this.rows = new Map(); // id → its <li>
    this.enabled = false;
    this.loaded = false;
    this.loading = null;
    this.refreshes = 0;
    this.armed = null;
    this.disarmTimer = null;
    this.timer = null;

    clips.onClose = () => this.decorate();
    api.onTokenChange(() => this.enabled && this.refresh(true));
  }

  // From the camera's status: the timeline exists only while its detector is on.
  setEnabled(enabled) {
    if (enabled === this.enabled) return;
    this.enabled = enabled;
    this.root.hidden = !enabled;
    clearInterval(this.timer);
    this.timer = null;
    if (!enabled) {
      this.clips.close();
      return;
    }
    this.refresh(true);
    this.timer = setInterval(() => {
      if (document.visibilityState === "visible") this.refresh(++this.refreshes % FULL_EVERY === 0);
    }, REFRESH_MS);
  }

  // A "motion" message from the control channel carries the event as it is now.
  applyMessage(message) {
    const event = readEvent(message && message.event);
    if (!event) return;
    this.merge([event]);
  }

  // Everything (full) or what started since the oldest open event or the newest one known.
  refresh(full = false) {
    if (this.loading) return this.loading;
    this.loading = this.load(full || !this.loaded).finally(() => {
      this.loading = null;
    });
    return this.loading;
  }

  sinceMs() {
    let since = null;
    for (const event of this.events.values()) {
      // An open event may have ended since: ask again from its start.
      const from = event.endMs == null ? event.startMs : null;
      if (from != null && (since == null || from < since)) since = from;
    }
    if (since != null) return since;
    for (const event of this.events.values()) if (since == null || event.startMs > since) since = event.startMs;
    return since;
  }

  async load(full) {
    const since = full ? null : this.sinceMs();
    const query = new URLSearchParams({ limit: String(LIMIT) });
    // A millisecond early: the newest event comes back too, whether `since` is inclusive or not.
    if (since != null) query.set("since", new Date(since - 1).toISOString());
    try {
      const answer = await this.api.json(cameraPath(`/api/events?${query}`));
      const raw = answer && Array.isArray(answer.events) ? answer.events : null;
      if (!raw) throw new Error("unexpected answer");
      const events = raw.map(readEvent).filter(Boolean);
      if (full) this.replace(events);
      else this.merge(events);
      this.loaded = true;
    } catch (error) {
      if (this.loaded) return; // keep what is shown; the next refresh tries again
      this.showMessage(error.status === 401 ? "Sign in with the access token to see motion events."
        : `Could not load motion events (${error.message}).`);
    }
  }

  replace(events) {
    this.events = new Map(events.map((event) => [event.id, event]));
    this.render();
  }

  merge(events) {
    for (const event of events) this.events.set(event.id, event);
    this.render();
  }

  showMessage(text) {
    this.message.textContent = text;
    this.message.hidden = !text;
  }

  // Rows are kept per event id, so a refresh does not reload thumbnails that did not change.
  render() {
    const events = [...this.events.values()].sort((a, b) => b.startMs - a.startMs).slice(0, LIMIT);
    const shown = new Set(events.map((event) => event.id));
    const atStart = this.list.scrollLeft < 8; // a strip looked at from its start shows a new event
    for (const [id, row] of this.rows) {
      if (shown.has(id)) continue;
      row.remove();
      this.rows.delete(id);
      this.events.delete(id);
    }
    events.forEach((event, index) => {
      let row = this.rows.get(event.id);
      if (!row) {
        row = this.row(event);
        this.rows.set(event.id, row);
      }
      this.fill(row, event);
      if (this.list.children[index] !== row) this.list.insertBefore(row, this.list.children[index] || null);
    });
    if (atStart && this.list.scrollLeft !== 0) this.list.scrollLeft = 0;
    if (this.clips.playing != null && !shown.has(this.clips.playing)) this.clips.close();
    this.count.textContent = events.length ? String(events.length) : "";
    this.showMessage(events.length ? "" : "No motion yet.");
    this.decorate();
  }

  row(event) {
    const li = element("li", "event");
    li.dataset.id = event.id;
    const open = element("button", "event-open", li);
    open.type = "button";
    open.addEventListener("click", () => this.play(li.dataset.id));
    const img = element("img", "event-thumb", open);
    img.alt = "";
    img.decoding = "async";
    img.addEventListener("error", () => li.classList.add("no-thumb"));
    img.addEventListener("load", () => li.classList.remove("no-thumb"));
    element("span", "event-live", open).textContent = "now";
    const info = element("div", "event-info", li);
    element("span", "event-time", info);
    element("span", "event-meta", info);
    const remove = element("button", "event-delete danger", li);
    remove.type = "button";
    remove.addEventListener("click", () => this.confirmDelete(li.dataset.id));
    return li;
  }

  fill(row, event) {
    const when = shortTime(event.startMs);
    const open = event.endMs == null;
    const duration = open ? "ongoing" : formatDuration(Math.max(0, (event.endMs - event.startMs) / 1000));
    const peak = event.peak == null ? "" : `peak ${event.peak < 10 ? event.peak.toFixed(1) : Math.round(event.peak)} %`;
    row.classList.toggle("ongoing", open);
    row.classList.toggle("has-clip", event.recording != null);
    row.querySelector(".event-time").textContent = when;
    row.querySelector(".event-time").title = formatDateTime(event.startMs);
    row.querySelector(".event-meta").textContent = [duration, peak].filter(Boolean).join(" · ");
    // The thumbnail is the picture with the most motion so far: it changes while the event lasts.
    const img = row.querySelector(".event-thumb");
    const src = event.thumbnail ? this.api.url(event.thumbnail, { v: `${event.peak ?? 0}-${event.endMs ?? 0}` }) : "";
    if (!src) row.classList.add("no-thumb");
    else if (img.getAttribute("src") !== src) img.src = src;
    const button = row.querySelector(".event-open");
    button.disabled = event.recording == null;
    button.setAttribute("aria-label", event.recording
      ? `Play the motion at ${when} (${duration})` : `Motion at ${when}: no recording`);
    button.title = event.recording ? `${event.recording.name} from ${formatDuration(event.recording.offset)}` : "no recording";
  }

  decorate() {
    for (const [id, row] of this.rows) {
      row.classList.toggle("playing", id === this.clips.playing);
      const remove = row.querySelector(".event-delete");
      const armed = id === this.armed;
      const when = row.querySelector(".event-time").textContent;
      remove.classList.toggle("confirm", armed);
      remove.textContent = armed ? "Delete?" : "Delete";
      remove.setAttribute("aria-label", armed ? `Click again to delete the motion event at ${when}`
        : `Delete the motion event at ${when}`);
    }
  }

  play(id) {
    const event = this.events.get(id);
    if (!event || !event.recording) return;
    const title = `Motion at ${formatDateTime(event.startMs)} · ${event.recording.name}`;
    this.clips.play(id, this.api.url(event.recording.url), event.recording.offset, title);
    this.decorate();
  }

  // Two clicks, as for recordings: the first arms the button for a few seconds.
  confirmDelete(id) {
    clearTimeout(this.disarmTimer);
    if (this.armed !== id) {
      this.armed = id;
      this.disarmTimer = setTimeout(() => {
        this.armed = null;
        this.decorate();
      }, CONFIRM_MS);
      this.decorate();
      return;
    }
    this.armed = null;
    this.remove(id);
  }

  async remove(id) {
    const row = this.rows.get(id);
    if (row) row.querySelector(".event-delete").disabled = true;
    try {
      await this.api.json(cameraPath(`/api/events/${encodeURIComponent(id)}`), { method: "DELETE" });
    } catch (error) {
      if (error.status !== 404) { // already gone is gone
        if (row) row.querySelector(".event-delete").disabled = false;
        this.toasts.error(`Could not delete the event: ${error.message}`);
        this.decorate();
        return;
      }
    }
    this.events.delete(id);
    this.render();
  }
}
