// A panel with a <video> that plays one recorded file from a given second: the events timeline
// opens a motion event's recording at the event's offset in it.

export class ClipPlayer {
  constructor(root, toasts) {
    this.root = root;
    this.toasts = toasts;
    this.video = root.querySelector("video");
    this.title = root.querySelector(".recording-player-name");
    this.playing = null; // a key of the caller's choosing (an event id), or null
    this.startAt = 0;
    this.onClose = () => {};

    root.querySelector("[data-action=close]").addEventListener("click", () => this.close());
    // The offset can only be set once the file's length is known.
    this.video.addEventListener("loadedmetadata", () => this.seekToStart());
    this.video.addEventListener("error", () => {
      if (this.playing != null) this.toasts.error(`Cannot play ${this.title.textContent}`);
    });
  }

  play(key, url, offsetSeconds, title) {
    this.playing = key;
    this.startAt = Number.isFinite(offsetSeconds) && offsetSeconds > 0 ? offsetSeconds : 0;
    this.title.textContent = title;
    this.root.hidden = false;
    this.video.src = url;
    this.video.play().catch(() => {
      // autoplay may be refused; the controls are there
    });
    this.root.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  seekToStart() {
    const duration = this.video.duration;
    // A file still being written may not reach the offset yet: start at its end then.
    const limit = Number.isFinite(duration) && duration > 0 ? Math.max(0, duration - 0.1) : this.startAt;
    const at = Math.min(this.startAt, limit);
    if (at > 0) this.video.currentTime = at;
  }

  close() {
    const was = this.playing;
    this.playing = null;
    this.video.pause();
    this.video.removeAttribute("src");
    this.video.load(); // let go of the file's HTTP connection
    this.root.hidden = true;
    if (was != null) this.onClose(was);
  }
}
