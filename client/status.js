// The status line under the player, from GET /api/status.

import { cameraPath } from "/client/api.js";
import { formatUptime } from "/client/format.js";

const POLL_MS = 3000;

function describeViewers(viewers) {
  if (!viewers || typeof viewers !== "object") return "";
  const parts = Object.entries(viewers).map(([kind, count]) => {
    const name = kind === "webrtc" ? "WebRTC" : kind === "mjpeg" ? "MJPEG" : kind;
    return `${Number(count) || 0} ${name}`;
  });
  return parts.length ? `viewers ${parts.join(", ")}` : "";
}

export class StatusLine {
  constructor(element, api, onStatus = () => {}) {
    this.element = element;
    this.api = api;
    this.onStatus = onStatus;
    this.timer = null;
  }

  start() {
    this.refresh();
    this.timer = setInterval(() => {
      if (document.visibilityState === "visible") this.refresh();
    }, POLL_MS);
  }

  async refresh() {
    try {
      const status = await this.api.json(cameraPath("/api/status"));
      this.element.classList.remove("status-error");
      const parts = [
        status.source ? String(status.source) : "",
        status.size ? String(status.size) : "",
        status.fps != null ? `${Number(status.fps).toFixed(1)} fps` : "",
        describeViewers(status.viewers),
        status.uptime != null ? `up ${formatUptime(Number(status.uptime))}` : "",
      ];
      if (status.source_up === false) parts.unshift("no signal");
      this.element.textContent = parts.filter(Boolean).join(" · ");
      this.onStatus(status);
    } catch (error) {
      this.element.classList.add("status-error");
      this.element.textContent = error.status === 401 ? "access token required" : "server unreachable";
    }
  }
}
