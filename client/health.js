// Is the WebRTC picture on screen still live? Two signs that it is not: no new frame for a while
// (a stall), or the stamp latency running away (frames still come, but later and later). Either
// makes the link "weak"; the player says so at once and acts if it lasts.

const STALL_MS = 2000;
const BEHIND_MS = 1500; // latency above this and still growing: falling behind
const FAR_BEHIND_MS = 3000; // above this, growing or not
const GROWTH_WINDOW_MS = 2000; // growing = higher than this long ago ...
const GROWTH_MS = 150; // ... by at least this much
const CAUGHT_UP_MS = 1000; // once behind, latency must fall below this to count as caught up
const HISTORY_MS = 4000;

export class LinkHealth {
  constructor() {
    this.reset();
  }

  reset() {
    this.history = []; // [time, median latency ms]
    this.weak = null; // { reason, since, behind } while weak
  }

  // sinceFrameMs: time since the last new frame; latencyMs: the median stamp latency or null.
  // Returns the weakness ({ reason, since }) or null when the picture is live.
  update(now, sinceFrameMs, latencyMs) {
    if (latencyMs != null) this.history.push([now, latencyMs]);
    while (this.history.length && now - this.history[0][0] > HISTORY_MS) this.history.shift();
    const problem = this.problem(now, sinceFrameMs, latencyMs);
    if (!problem) this.weak = null;
    else if (!this.weak) this.weak = { ...problem, since: now };
    else Object.assign(this.weak, problem);
    return this.weak;
  }

  problem(now, sinceFrameMs, latencyMs) {
    if (sinceFrameMs > STALL_MS) {
      return { reason: `no new frame for ${(sinceFrameMs / 1000).toFixed(1)} s`, behind: false };
    }
    const wasBehind = this.weak != null && this.weak.behind;
    // No reading (no stamped frame in the last second) is no sign of having caught up.
    if (latencyMs == null) return wasBehind ? { reason: this.weak.reason, behind: true } : null;
    const seconds = (latencyMs / 1000).toFixed(1);
    if (latencyMs > FAR_BEHIND_MS || (wasBehind && latencyMs > CAUGHT_UP_MS)) {
      return { reason: `${seconds} s behind`, behind: true };
    }
    const before = this.latencyAt(now - GROWTH_WINDOW_MS);
    if (latencyMs > BEHIND_MS && before != null && latencyMs - before > GROWTH_MS) {
      return { reason: `${seconds} s behind and falling further`, behind: true };
    }
    return null;
  }

  // The server has just moved this viewer to another rendition: give the new one its time to
  // catch up before the weakness counts as lasting (once per weak spell, so it cannot go on).
  postpone(now) {
    if (!this.weak || this.weak.postponed) return;
    this.weak.since = now;
    this.weak.postponed = true;
  }

  // The reading nearest to `time` (not after it), if the history reaches back that far.
  latencyAt(time) {
    let found = null;
    for (const [at, ms] of this.history) {
      if (at > time) break;
      found = ms;
    }
    return found;
  }
}
