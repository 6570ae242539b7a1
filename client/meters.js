// Rolling measurements over a short window: frames per second and the median latency.

const WINDOW_MS = 1000;

export class FpsMeter {
  constructor(windowMs = 2000) {
    this.windowMs = windowMs;
    this.times = [];
  }

  tick(now = performance.now(), frames = 1) {
    for (let i = 0; i < frames; i += 1) this.times.push(now);
    this.prune(now);
  }

  prune(now) {
    while (this.times.length && now - this.times[0] > this.windowMs) this.times.shift();
  }

  fps(now = performance.now()) {
    this.prune(now);
    const n = this.times.length;
    if (n < 2) return 0;
    const span = Math.max(now - this.times[0], this.times[n - 1] - this.times[0]);
    return span > 0 ? ((n - 1) * 1000) / span : 0;
  }

  reset() {
    this.times = [];
  }
}

export class LatencyMeter {
  constructor(windowMs = WINDOW_MS) {
    this.windowMs = windowMs;
    this.samples = []; // [time, ms]
  }

  add(ms, now = performance.now()) {
    this.samples.push([now, ms]);
    this.prune(now);
  }

  prune(now) {
    while (this.samples.length && now - this.samples[0][0] > this.windowMs) this.samples.shift();
  }

  values(now = performance.now()) {
    this.prune(now);
    return this.samples.map(([, ms]) => Math.round(ms * 10) / 10);
  }

  median(now = performance.now()) {
    const values = this.values(now).sort((a, b) => a - b);
    if (!values.length) return null;
    const mid = values.length >> 1;
    return values.length % 2 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
  }

  reset() {
    this.samples = [];
  }
}
