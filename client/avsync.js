// The A/V offset a browser plays with, from getStats(): each inbound-rtp stream's
// estimatedPlayoutTimestamp is the sender's NTP time (ms) of what plays out now, and the server
// stamps both tracks' RTCP sender reports from one clock, so picture minus sound is how far the
// sound trails the picture (+: sound late, −: sound early). Chromium updates the picture's figure a
// frame at a time, so the overlay shows the median of the last few readings.

const WINDOW = 7; // readings (the player reads its stats every second or so)

function playoutTimes(report) {
  let audio = null;
  let video = null;
  report.forEach((entry) => {
    if (entry.type !== "inbound-rtp" || !entry.estimatedPlayoutTimestamp) return;
    const kind = entry.kind || entry.mediaType;
    if (kind === "audio") audio = entry.estimatedPlayoutTimestamp;
    if (kind === "video") video = entry.estimatedPlayoutTimestamp;
  });
  return { audio, video };
}

// One reading (ms, + = sound late), or null while the stream has no sound playing out.
export function playoutOffsetMs(report) {
  const { audio, video } = playoutTimes(report);
  return audio != null && video != null ? video - audio : null;
}

export class AvOffsetMeter {
  constructor(size = WINDOW) {
    this.size = size;
    this.readings = [];
  }

  // Adds the report's reading; the median of the recent ones (null once the sound is gone).
  update(report) {
    const offset = playoutOffsetMs(report);
    if (offset == null) {
      this.readings = [];
      return null;
    }
    this.readings.push(offset);
    if (this.readings.length > this.size) this.readings.shift();
    const sorted = [...this.readings].sort((a, b) => a - b);
    const middle = sorted.length >> 1;
    return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  }
}

// "A/V +12 ms": the sign always shown, so a glance tells which one trails.
export function formatAvOffset(ms) {
  if (ms == null || !Number.isFinite(ms)) return "";
  const rounded = Math.round(ms);
  const sign = rounded > 0 ? "+" : rounded < 0 ? "−" : "±";
  return `A/V ${sign}${Math.abs(rounded)} ms`;
}
