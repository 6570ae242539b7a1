// The MJPEG fallback: the page's <img id="mjpeg"> pointed at the camera's video.mjpg (with ?token=
// if needed), at the camera's own size or a lighter variant (?width=&quality=).

import { cameraPath } from "/client/api.js";

export class MjpegView {
  constructor(img, api, { onError = () => {} } = {}) {
    this.img = img;
    this.api = api;
    this.active = false;
    this.loads = 0;
    this.params = {}; // the variant's query parameters; none for the camera's own stream
    // A failed load would show a broken-image icon and the alt text: hide the <img> until a frame.
    img.addEventListener("error", () => {
      img.classList.add("broken");
      if (this.active) onError();
    });
    img.addEventListener("load", () => img.classList.remove("broken"));
    // A new token must reach the <img> URL too.
    api.onTokenChange(() => {
      if (this.active) this.restart();
    });
  }

  start(params = this.params) {
    this.active = true;
    this.params = params;
    this.img.classList.add("broken"); // until its first frame
    this.load();
  }

  // Another variant: the picture on screen stays until the new stream's first frame replaces it.
  switchTo(params) {
    this.params = params;
    if (this.active) this.load();
  }

  load() {
    this.loads += 1;
    // A fresh URL each time: re-setting the same src would not open a new connection.
    const extra = this.loads > 1 ? { ...this.params, n: this.loads } : { ...this.params };
    this.img.src = this.api.url(cameraPath("/video.mjpg"), extra);
  }

  restart() {
    this.img.removeAttribute("src");
    this.start();
  }

  stop() {
    this.active = false;
    // Dropping src closes the endless HTTP response, so the server stops sending.
    this.img.removeAttribute("src");
  }
}
