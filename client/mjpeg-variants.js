// The MJPEG fallback's ladder of lighter variants (?width=&quality=, see the README) and the rule
// that moves along it: down when frames arrive late, back up slowly once they are on time again.

// Top to bottom. The server snaps widths to 160/240/320/480/640… and qualities to steps of 10;
// the floor also caps the frame rate (?fps=), for links too slow even for thumbnails at full rate.
export const VARIANTS = [
  { width: null, quality: null, fps: null }, // the camera's own stream
  { width: 480, quality: 60, fps: null },
  { width: 320, quality: 50, fps: null },
  { width: 240, quality: 40, fps: null },
  { width: 160, quality: 30, fps: null },
  { width: 160, quality: 30, fps: 10 },
];
export const LIGHT = 2; // where a WebRTC stream too weak to play lands

const SETTLE_MS = 3000; // a new variant's first seconds say little (a fresh connection, empty buffers)
const LATE_FOR_MS = 3000; // late this long in a row: step down
const LATE_MS = 1000; // stamp latency above this is late
const FAR_LATE_MS = 3000; // ... and above this, two steps at once
// Frame rates are averaged over a window, as a share of the camera's rate, and only counted when
// every frame differs (a stamped source). Below SLOW_FPS the server is skipping frames the link
// cannot take in time.
const SLOW_FPS = 0.4;
const ON_TIME_MS = 400;
const ON_TIME_FPS = 0.6;
const UP_AFTER_MS = 15000; // on time this long: one step up ...
const MAX_UP_AFTER_MS = 120000; // ... doubled after each step up that had to be taken back
const FAILED_UP_MS = 30000; // a step down this soon after a step up takes it back
const FORGIVE_MS = 120000; // this long without stepping down clears the doubling

export function variantParams(level) {
  const variant = VARIANTS[level] || VARIANTS[0];
  const params = {};
  if (variant.width) params.width = variant.width;
  if (variant.quality) params.quality = variant.quality;
  if (variant.fps) params.fps = variant.fps;
  return params;
}

// "320 px · q50", "160 px · q30 · 10 fps", or "" for the camera's own stream.
export function describeVariant(level) {
  const variant = VARIANTS[level];
  if (!variant || !variant.width) return "";
  return `${variant.width} px · q${variant.quality}` + (variant.fps ? ` · ${variant.fps} fps` : "");
}

export class MjpegAdapter {
  constructor() {
    this.level = 0;
    this.failedUps = 0;
    this.lastUpAt = -Infinity;
    this.lastDownAt = -Infinity;
    this.begin(0, 0);
  }

  // A variant (re)starts at `level`: the clock for its readings starts again.
  begin(level, now) {
    this.level = Math.max(0, Math.min(level, VARIANTS.length - 1));
    this.startedAt = now;
    this.lateSince = null;
    this.onTimeSince = null;
    this.counts = []; // [time, frames shown so far]
  }

  // Readings of the MJPEG picture now: { latencyMs (median or null), frames (a running count of
  // the frames shown), expectedFps (the camera's rate, or null), stamped (every frame differs),
  // playing }. Returns the level to switch to, or null to stay.
  update(now, { latencyMs, frames, expectedFps, stamped, playing }) {
    if (now - this.lastDownAt > FORGIVE_MS) this.failedUps = 0;
    if (!playing || now - this.startedAt < SETTLE_MS) {
      // Nothing to judge yet, or a stall (the player restarts the stream): count afresh after it.
      this.lateSince = null;
      this.onTimeSince = null;
      this.counts = [];
      return null;
    }
    this.counts.push([now, frames]);
    while (this.counts.length > 2 && now - this.counts[1][0] > MAX_UP_AFTER_MS) this.counts.shift();
    const cap = VARIANTS[this.level].fps;
    const expected = cap && expectedFps > 0 ? Math.min(cap, expectedFps) : expectedFps;
    const fpsKnown = stamped && expected > 0;

    if (latencyMs != null && latencyMs > LATE_MS) {
      if (this.lateSince == null) this.lateSince = now;
    } else {
      this.lateSince = null;
    }
    const lateLong = this.lateSince != null && now - this.lateSince >= LATE_FOR_MS;
    const slow = fpsKnown && this.rateSince(now - LATE_FOR_MS, now) < SLOW_FPS * expected;
    if ((lateLong || slow) && this.level < VARIANTS.length - 1) {
      if (now - this.lastUpAt < FAILED_UP_MS) this.failedUps += 1;
      this.lastDownAt = now;
      const steps = latencyMs != null && latencyMs > FAR_LATE_MS ? 2 : 1;
      return Math.min(this.level + steps, VARIANTS.length - 1);
    }

    const timely = latencyMs == null ? fpsKnown : latencyMs < ON_TIME_MS;
    if (!timely || this.level === 0) {
      this.onTimeSince = null;
      return null;
    }
    if (this.onTimeSince == null) this.onTimeSince = now;
    const hold = this.upAfterMs();
    if (now - this.onTimeSince < hold) return null;
    if (fpsKnown && this.rateSince(now - hold, now) < ON_TIME_FPS * expected) return null;
    this.lastUpAt = now;
    return this.level - 1;
  }

  // Frames a second shown from `since` to `now`; Infinity while the window is not filled yet.
  rateSince(since, now) {
    const first = this.counts[0];
    if (!first || first[0] > since) return Infinity;
    let from = first;
    for (const count of this.counts) {
      if (count[0] > since) break;
      from = count;
    }
    const last = this.counts[this.counts.length - 1];
    return now > from[0] ? ((last[1] - from[1]) * 1000) / (now - from[0]) : Infinity;
  }

  upAfterMs() {
    return Math.min(UP_AFTER_MS * 2 ** this.failedUps, MAX_UP_AFTER_MS);
  }
}
