// The stats overlay in a corner of the picture: transport, codec, size, fps, the WebRTC rendition
// (and the server's estimate of the link) or the MJPEG variant, latency, RTT, and with sound the
// A/V offset the browser plays with.

import { formatAvOffset } from "/client/avsync.js";
import { formatBitrate } from "/client/rendition.js";

const STORAGE_KEY = "camcast.overlay";
const TRANSPORT_NAMES = { webrtc: "WebRTC", mjpeg: "MJPEG" };

function shortCodec(mime) {
  if (!mime) return "";
  return mime.replace(/^video\//i, "").replace(/^H264$/i, "H.264");
}

function readVisible() {
  try {
    return localStorage.getItem(STORAGE_KEY) !== "off";
  } catch {
    return true;
  }
}

// Why the picture has the size it has: "rendition medium → low · est 420 kbit/s", "variant 320 px · q50".
function describeLevel(state) {
  if (state.transport === "webrtc" && state.rendition) {
    const moving = state.switchingTo && state.switchingTo !== state.rendition ? ` → ${state.switchingTo}` : "";
    const estimate = formatBitrate(state.estimateBps);
    return `rendition ${state.rendition}${moving}` + (estimate ? ` · est ${estimate}` : "");
  }
  if (state.transport === "mjpeg" && state.mjpegVariant) return `variant ${state.mjpegVariant}`;
  return "";
}

export class Overlay {
  constructor(element, toggleButton) {
    this.element = element;
    this.toggleButton = toggleButton;
    this.lines = [];
    for (let i = 0; i < 6; i += 1) {
      const line = document.createElement("div");
      this.element.append(line);
      this.lines.push(line);
    }
    this.setVisible(readVisible());
    toggleButton.addEventListener("click", () => this.setVisible(this.element.hidden));
  }

  setVisible(visible) {
    this.element.hidden = !visible;
    this.toggleButton.setAttribute("aria-pressed", String(visible));
    try {
      localStorage.setItem(STORAGE_KEY, visible ? "on" : "off");
    } catch {
      // storage off: the choice lasts for this page only
    }
  }

  render(state, extra) {
    if (this.element.hidden) return;
    const transport = TRANSPORT_NAMES[state.transport] || "–";
    const codec = shortCodec(state.codec);
    const size = state.width && state.height ? `${state.width}×${state.height}` : "";
    const fps = state.fps ? `${state.fps.toFixed(1)} fps` : "";
    const latency = state.latencyMs != null ? `${Math.round(state.latencyMs)} ms` : "–";
    const rtt = extra.rttMs != null ? `rtt ${Math.round(extra.rttMs)} ms` : "";
    const jitter = extra.jitterBufferMs != null ? `buffer ${Math.round(extra.jitterBufferMs)} ms` : "";
    this.set(0, codec && codec !== transport ? `${transport} · ${codec}` : transport);
    this.set(1, [size, fps].filter(Boolean).join(" · "));
    this.set(2, describeLevel(state));
    this.set(3, `latency ${latency}`);
    this.set(4, [rtt, jitter].filter(Boolean).join(" · "));
    this.set(5, formatAvOffset(extra.avOffsetMs));
    this.lines[5].title = "sound behind the picture (+) or ahead of it (−)";
  }

  set(index, text) {
    const line = this.lines[index];
    if (line.textContent !== text) line.textContent = text;
    line.hidden = !text;
  }
}
