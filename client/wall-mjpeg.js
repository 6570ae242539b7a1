// A wall tile's MJPEG picture: the camera's video.mjpg in an <img>, or its snapshot.jpg reloaded
// once a second when the page already holds enough streams. A browser keeps at most six HTTP/1.1
// connections to one server and every stream holds one for good: past a few, the API polls and
// the other tiles would wait forever. A tile moves up to a stream as soon as one is free.

import { cameraRoot } from "/client/api.js";

const STREAM_SLOTS = 4;
const SNAPSHOT_MS = 1000;
const ERROR_RETRY_MS = 2000;

export class StreamSlots {
  constructor(size = STREAM_SLOTS) {
    this.size = size;
    this.holders = new Set();
    this.waiting = [];
  }

  // True when the feed may stream now; otherwise it is promoted later.
  acquire(feed) {
    if (this.holders.has(feed)) return true;
    if (this.holders.size < this.size) {
      this.holders.add(feed);
      return true;
    }
    if (!this.waiting.includes(feed)) this.waiting.push(feed);
    return false;
  }

  release(feed) {
    this.holders.delete(feed);
    this.waiting = this.waiting.filter((waiting) => waiting !== feed);
    while (this.waiting.length && this.holders.size < this.size) {
      const next = this.waiting.shift();
      this.holders.add(next);
      next.promote();
    }
  }
}

export class TileMjpeg {
  constructor(img, api, slots, name) {
    this.img = img;
    this.api = api;
    this.slots = slots;
    this.root = cameraRoot(name);
    this.active = false;
    this.streaming = false;
    this.loads = 0;
    this.timer = null;
    // A failed load would show a broken-image icon: hide the <img> until a picture arrives.
    img.addEventListener("error", () => {
      img.classList.add("broken");
      if (this.active) this.later(ERROR_RETRY_MS);
    });
    img.addEventListener("load", () => {
      img.classList.remove("broken");
      if (this.active && !this.streaming) this.later(SNAPSHOT_MS);
    });
    api.onTokenChange(() => {
      if (this.active) this.load();
    });
  }

  start() {
    if (this.active) return;
    this.active = true;
    this.streaming = this.slots.acquire(this);
    this.img.classList.add("broken"); // until its first picture
    this.load();
  }

  // A stream slot came free.
  promote() {
    this.streaming = true;
    if (this.active) this.load();
  }

  restart() {
    if (this.active) this.load();
  }

  load() {
    clearTimeout(this.timer);
    this.loads += 1;
    // A fresh URL each time: re-setting the same src would not open a new connection.
    const path = this.root + (this.streaming ? "video.mjpg" : "snapshot.jpg");
    this.img.src = this.api.url(path, this.loads > 1 ? { n: this.loads } : {});
  }

  later(ms) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (this.active) this.load();
    }, ms);
  }

  stop() {
    if (!this.active) return;
    this.active = false;
    this.streaming = false;
    clearTimeout(this.timer);
    // Dropping src closes the endless HTTP response, so the server stops sending.
    this.img.removeAttribute("src");
    this.slots.release(this);
  }
}
