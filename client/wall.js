// The wall: every camera of the server live at once. One WebRTC session carries every tile (one
// transceiver per camera); a tile whose lane is refused, shows no frame in time or stalls falls
// back to MJPEG alone, and is retried over WebRTC in the background with backoff, as the player
// does. ?transport=mjpeg shows every tile over MJPEG.

import { Api } from "/client/api.js";
import { TokenForm } from "/client/auth.js";
import { WallLayout } from "/client/wall-layout.js";
import { StreamSlots } from "/client/wall-mjpeg.js";
import { WallSession } from "/client/wall-session.js";
import { Tile } from "/client/wall-tile.js";
import { webrtcSupported } from "/client/webrtc.js";

const FIRST_FRAME_MS = 4000; // a tile's WebRTC must show a frame this soon, or MJPEG takes over
const BACKGROUND_ATTEMPT_MS = 8000; // a retry while MJPEG plays may take longer: nobody waits on it
const RETRY_MS = 12000; // first wait between WebRTC attempts while on MJPEG, doubled on each failure
const MAX_RETRY_MS = 120000; // ... up to this
const QUICK_RETRY_MS = 2000; // first retry after a dropped connection or a stall
const STALL_MS = 4000; // no new frame for this long: the transport is stuck
const UNSTAMPED_STALL_MS = 30000; // a still scene without a stamp may really not change
const POLL_MS = 2000; // GET /api/cameras
const TICK_MS = 250;
const STATS_MS = 1000;

function transportMode() {
  return new URLSearchParams(location.search).get("transport") === "mjpeg" ? "mjpeg" : "auto";
}

function timeout(ms, message) {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(message)), Math.max(0, ms)));
}

function backoff(failures) {
  return Math.min(RETRY_MS * 2 ** Math.max(0, failures - 1), MAX_RETRY_MS);
}

function validCameras(list) {
  if (!Array.isArray(list)) return null;
  return list.filter((camera) => camera && typeof camera.name === "string" && camera.name);
}

class Wall {
  constructor({ grid, summary, signIn, api }) {
    this.grid = grid;
    this.summary = summary;
    this.signIn = signIn;
    this.api = api;
    this.mode = transportMode();
    this.slots = new StreamSlots();
    this.layout = new WallLayout(grid.parentElement, grid);
    this.tiles = new Map(); // name → Tile, in the server's order
    this.attempting = false;
    this.pollTimer = null;

    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState !== "visible") return;
      // Frames are not painted while hidden; do not take that for a stall.
      const now = performance.now();
      for (const tile of this.tiles.values()) {
        tile.lastVideoFrameAt = now;
        tile.lastImageAt = now;
      }
      this.schedulePoll(0);
    });
    // Leaving the page: end the sessions now, not at the server's timeout.
    window.addEventListener("pagehide", () => {
      for (const tile of this.tiles.values()) {
        for (const session of [tile.session, tile.attempt]) if (session) session.close();
        tile.mjpeg.stop();
      }
    });
    // Back from the back/forward cache with its connections closed: start afresh.
    window.addEventListener("pageshow", (event) => {
      if (event.persisted) location.reload();
    });
    api.onTokenChange(() => {
      this.schedulePoll(0);
      for (const tile of this.tiles.values()) if (!tile.session && !tile.attempt) tile.retryAt = 0;
    });
  }

  start() {
    this.schedulePoll(0);
    setInterval(() => this.tick(), TICK_MS);
    setInterval(() => this.pollStats(), STATS_MS);
  }

  // --- the camera list ------------------------------------------------------------------------

  schedulePoll(delayMs) {
    clearTimeout(this.pollTimer);
    this.pollTimer = setTimeout(async () => {
      if (document.visibilityState === "visible" || !this.tiles.size) await this.poll();
      this.schedulePoll(POLL_MS);
    }, delayMs);
  }

  async poll() {
    try {
      const cameras = validCameras(await this.api.json("/api/cameras"));
      if (!cameras) throw new Error("unexpected answer");
      this.applyCameras(cameras);
      this.summary.classList.remove("error");
      this.summary.textContent = describe(cameras);
    } catch (error) {
      this.summary.classList.add("error");
      this.summary.textContent = error.status === 401 ? "access token required" : "server unreachable";
    }
  }

  applyCameras(cameras) {
    const names = new Set(cameras.map((camera) => camera.name));
    for (const [name, tile] of this.tiles) {
      if (names.has(name)) continue;
      this.leave(tile);
      tile.remove();
      this.tiles.delete(name);
    }
    for (const camera of cameras) {
      const tile = this.tiles.get(camera.name);
      if (tile) {
        tile.update(camera);
      } else {
        const added = new Tile(camera, { api: this.api, slots: this.slots });
        if (this.mode === "mjpeg" || !webrtcSupported()) added.showMjpeg();
        this.tiles.set(camera.name, added);
      }
    }
    // The server's order, moving only what is out of place (a moved <video> would hiccup).
    const wanted = cameras.map((camera) => this.tiles.get(camera.name).el);
    wanted.forEach((el, index) => {
      if (this.grid.children[index] !== el) this.grid.insertBefore(el, this.grid.children[index] || null);
    });
    this.layout.update([...this.tiles.values()].map((tile) => tile.aspect));
  }

  // --- WebRTC ---------------------------------------------------------------------------------

  // One session for every tile due a try; each tile then plays, or falls back on its own.
  async attempt(tiles) {
    this.attempting = true;
    const within = tiles.every((tile) => tile.transport === "mjpeg") ? BACKGROUND_ATTEMPT_MS : FIRST_FRAME_MS;
    const session = new WallSession({
      api: this.api,
      cameras: tiles.map((tile) => tile.name),
      onLost: (reason) => this.onSessionLost(session, reason),
    });
    for (const tile of tiles) {
      tile.attempt = session;
      tile.attemptDeadline = performance.now() + within;
    }
    const connecting = session.connect();
    connecting.catch(() => {}); // after a timeout its own failure is no news
    try {
      await Promise.race([connecting, timeout(within, "no answer in time")]);
      for (const tile of tiles) {
        if (tile.attempt !== session) continue;
        const track = session.track(tile.name);
        if (track) tile.standby(track);
        else this.laneFailed(tile, session.lanes.get(tile.name).error);
      }
    } catch (error) {
      for (const tile of tiles) if (tile.attempt === session) this.laneFailed(tile, error.message);
      session.close();
    } finally {
      this.attempting = false;
    }
  }

  // The tile's first frame arrived: it leaves MJPEG for this lane.
  adopt(tile) {
    tile.session = tile.attempt;
    tile.attempt = null;
    tile.failures = 0;
    tile.lastError = null;
    tile.showWebRtc();
  }

  laneFailed(tile, reason) {
    const session = tile.attempt;
    tile.attempt = null;
    if (session) session.release(tile.name);
    tile.dropVideo();
    tile.failures += 1;
    tile.lastError = reason;
    console.info(`camcast: ${tile.name}: WebRTC not playing (${reason})`);
    this.fallBack(tile, backoff(tile.failures));
  }

  fallBack(tile, retryInMs) {
    tile.showMjpeg();
    tile.retryAt = performance.now() + retryInMs;
  }

  // A tile that played over WebRTC stops using its session (stalled, or the camera went away).
  leave(tile) {
    for (const session of [tile.session, tile.attempt]) if (session) session.release(tile.name);
    tile.session = null;
    tile.attempt = null;
    tile.dropVideo();
  }

  onSessionLost(session, reason) {
    console.info(`camcast: wall WebRTC dropped (${reason})`);
    for (const tile of this.tiles.values()) {
      if (tile.attempt === session) {
        this.laneFailed(tile, reason);
      } else if (tile.session === session) {
        tile.session = null;
        tile.dropVideo();
        tile.lastError = reason;
        this.fallBack(tile, QUICK_RETRY_MS);
      }
    }
    session.close();
  }

  // --- the clock ------------------------------------------------------------------------------

  tick() {
    const now = performance.now();
    const visible = document.visibilityState === "visible";
    const due = [];
    for (const tile of this.tiles.values()) {
      if (tile.attempt) {
        if (tile.hasVideoFrame()) this.adopt(tile);
        else if (now > tile.attemptDeadline) this.laneFailed(tile, "no video frame in time");
      } else if (tile.transport === "webrtc" && tile.session) {
        // A camera that is down stalls every transport alike: only an "up" one's stall counts.
        if (visible && tile.isUp && now - tile.lastVideoFrameAt > STALL_MS) {
          console.info(`camcast: ${tile.name}: WebRTC frames stopped`);
          this.leave(tile);
          tile.lastError = "no frames";
          this.fallBack(tile, QUICK_RETRY_MS);
        }
      } else if (tile.transport === "mjpeg" && visible
        && now - tile.lastImageAt > (tile.sawStamp ? STALL_MS : UNSTAMPED_STALL_MS)) {
        tile.restartMjpeg();
      }
      if (this.mode !== "mjpeg" && !tile.session && !tile.attempt && now >= tile.retryAt && webrtcSupported()) {
        due.push(tile);
      }
      tile.render(this.api.declined);
    }
    if (due.length && !this.attempting) this.attempt(due);
    this.signIn.hidden = !this.api.declined;
    this.layout.update([...this.tiles.values()].map((tile) => tile.aspect));
  }

  async pollStats() {
    await Promise.all([...this.tiles.values()].map(async (tile) => {
      const session = tile.session || tile.attempt;
      if (!session) return;
      try {
        const frames = await session.framesDecoded(tile.name);
        if (frames != null && (tile.session === session || tile.attempt === session)) tile.noteDecoded(frames);
      } catch {
        // the session is closing; the next tick notices
      }
    }));
  }

  // {name: {transport, framesDecoded}}: WebRTC tiles from their lane's inbound-rtp stats,
  // MJPEG tiles the pictures their <img> showed.
  async stats() {
    const result = {};
    await Promise.all([...this.tiles.values()].map(async (tile) => {
      let frames = 0;
      if (tile.transport === "webrtc" && tile.session) {
        try {
          frames = (await tile.session.framesDecoded(tile.name)) ?? 0;
        } catch {
          frames = tile.rtcFrames;
        }
      } else if (tile.transport === "mjpeg") {
        frames = tile.mjpegFrames;
      }
      result[tile.name] = { transport: tile.transport, framesDecoded: frames };
    }));
    return result;
  }
}

function describe(cameras) {
  const count = `${cameras.length} camera${cameras.length === 1 ? "" : "s"}`;
  const recording = cameras.filter((camera) => camera.recording === true).length;
  const down = cameras.filter((camera) => camera.state === "down").length;
  const motion = cameras.filter((camera) => camera.motion && camera.motion.active === true).length;
  return [count, down ? `${down} down` : "", recording ? `${recording} recording` : "",
    motion ? `motion on ${motion}` : ""].filter(Boolean).join(" · ");
}

function main() {
  const $ = (id) => document.getElementById(id);
  const api = new Api(new TokenForm($("token-dialog")));
  const wall = new Wall({ grid: $("wall"), summary: $("wall-summary"), signIn: $("sign-in"), api });
  $("sign-in").addEventListener("click", () => api.promptToken());
  window.camcastWall = { stats: () => wall.stats(), mode: wall.mode };
  wall.start();
}

main();
