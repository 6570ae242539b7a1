// The recordings panel: list from GET /api/recordings, play in a <video>, download, delete.

import { cameraPath } from "/client/api.js";
import { formatBytes, formatDateTime, formatDuration, parseTime } from "/client/format.js";

const CONFIRM_MS = 4000;

function recordingUrl(api, name) {
  return api.url(cameraPath(`/recordings/${encodeURIComponent(name)}`));
}

function normalise(list) {
  const items = Array.isArray(list) ? list : list && Array.isArray(list.recordings) ? list.recordings : null;
  if (!items) return null;
  return items
    .filter((item) => item && typeof item.name === "string" && item.name)
    .map((item) => ({
      name: item.name,
      bytes: Number.isFinite(Number(item.bytes)) ? Number(item.bytes) : null,
      duration: item.duration == null || !Number.isFinite(Number(item.duration)) ? null : Number(item.duration),
      startedMs: parseTime(item.started),
      recording: item.recording === true,
    }))
    .sort((a, b) => (b.startedMs ?? 0) - (a.startedMs ?? 0) || b.name.localeCompare(a.name));
}

export class RecordingsPanel {
  constructor(root, api, toasts) {
    this.api = api;
    this.toasts = toasts;
    this.list = root.querySelector(".recordings-list");
    this.message = root.querySelector(".recordings-message");
    this.refreshButton = root.querySelector("[data-action=refresh]");
    this.player = root.querySelector(".recording-player");
    this.video = this.player.querySelector("video");
    this.playerName = this.player.querySelector(".recording-player-name");
    this.activeName = null; // being written now: not playable or deletable yet
    this.playing = null;
    this.armed = null; // the recording whose Delete was clicked once: a second click deletes it
    this.disarmTimer = null;
    this.loading = false;
    this.again = false;

    this.refreshButton.addEventListener("click", () => this.refresh());
    this.player.querySelector("[data-action=close]").addEventListener("click", () => this.closePlayer());
    this.video.addEventListener("error", () => {
      if (this.playing) this.toasts.error(`Cannot play ${this.playing}`);
    });
    api.onTokenChange(() => this.refresh());
  }

  setActive(name) {
    this.activeName = name || null;
    for (const row of this.list.children) this.decorateRow(row);
  }

  async refresh() {
    if (this.loading) {
      this.again = true; // one more pass once this one is done, to catch the newest file
      return;
    }
    this.loading = true;
    this.refreshButton.disabled = true;
    try {
      const items = normalise(await this.api.json(cameraPath("/api/recordings")));
      if (!items) throw new Error("unexpected answer");
      this.render(items);
    } catch (error) {
      this.list.replaceChildren();
      this.showMessage(error.status === 404 ? "This server does not keep recordings."
        : error.status === 401 ? "Sign in with the access token to see recordings."
          : `Could not load recordings (${error.message}).`);
    } finally {
      this.loading = false;
      this.refreshButton.disabled = false;
      if (this.again) {
        this.again = false;
        this.refresh();
      }
    }
  }

  showMessage(text) {
    this.message.textContent = text;
    this.message.hidden = !text;
  }

  render(items) {
    this.showMessage(items.length ? "" : "No recordings yet. Press Record to make one.");
    this.list.replaceChildren(...items.map((item) => this.row(item)));
    if (this.playing && !items.some((item) => item.name === this.playing)) this.closePlayer();
  }

  row(item) {
    const li = document.createElement("li");
    li.className = "recording-row";
    li.dataset.name = item.name;
    if (item.recording) li.dataset.recording = "true";

    const info = document.createElement("div");
    info.className = "recording-info";
    const name = document.createElement("span");
    name.className = "recording-name";
    name.textContent = item.name;
    const meta = document.createElement("span");
    meta.className = "recording-meta";
    meta.textContent = [formatDateTime(item.startedMs), formatDuration(item.duration), formatBytes(item.bytes)]
      .filter((part) => part && part !== "–").join(" · ");
    info.append(name, meta);

    const actions = document.createElement("div");
    actions.className = "recording-actions";
    const play = document.createElement("button");
    play.type = "button";
    play.dataset.action = "play";
    play.textContent = "Play";
    play.addEventListener("click", () => this.play(item.name));
    const download = document.createElement("a");
    download.className = "button";
    download.dataset.action = "download";
    download.href = recordingUrl(this.api, item.name);
    download.download = item.name;
    download.textContent = "Download";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "danger";
    remove.dataset.action = "delete";
    remove.textContent = "Delete";
    remove.addEventListener("click", () => this.confirmDelete(remove, item.name));
    actions.append(play, download, remove);

    li.append(info, actions);
    this.decorateRow(li);
    return li;
  }

  decorateRow(row) {
    const active = row.dataset.name === this.activeName || row.dataset.recording === "true";
    row.classList.toggle("active", active);
    row.classList.toggle("playing", row.dataset.name === this.playing);
    for (const control of row.querySelectorAll("button")) control.disabled = active;
    const download = row.querySelector("[data-action=download]");
    if (download) download.classList.toggle("disabled", active);
    const remove = row.querySelector("[data-action=delete]");
    if (remove) {
      const armed = row.dataset.name === this.armed;
      remove.classList.toggle("confirm", armed);
      remove.textContent = armed ? "Delete?" : "Delete";
      remove.title = armed ? `Click again to delete ${row.dataset.name}` : "";
    }
  }

  play(name) {
    this.playing = name;
    this.playerName.textContent = name;
    this.player.hidden = false;
    this.video.src = recordingUrl(this.api, name);
    this.video.play().catch(() => {
      // autoplay with sound may be refused; the controls are there
    });
    for (const row of this.list.children) this.decorateRow(row);
    this.player.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  closePlayer() {
    this.playing = null;
    this.video.pause();
    this.video.removeAttribute("src");
    this.video.load(); // let go of the file's HTTP connection
    this.player.hidden = true;
    for (const row of this.list.children) this.decorateRow(row);
  }

  // Two clicks: the first arms the button for a few seconds, the second deletes. The arming
  // belongs to the recording, not the button, so a refresh of the list in between keeps it.
  confirmDelete(button, name) {
    clearTimeout(this.disarmTimer);
    if (this.armed !== name) {
      this.armed = name;
      this.disarmTimer = setTimeout(() => {
        this.armed = null;
        for (const row of this.list.children) this.decorateRow(row);
      }, CONFIRM_MS);
      for (const row of this.list.children) this.decorateRow(row);
      return;
    }
    this.armed = null;
    this.remove(name, button);
  }

  async remove(name, button) {
    button.disabled = true;
    try {
      await this.api.json(cameraPath(`/api/recordings/${encodeURIComponent(name)}`), { method: "DELETE" });
      if (this.playing === name) this.closePlayer();
      this.toasts.info(`Deleted ${name}`);
    } catch (error) {
      if (error.status === 404) {
        if (this.playing === name) this.closePlayer(); // already gone: the refresh shows it
      } else {
        this.toasts.error(`Could not delete ${name}: ${error.message}`);
      }
    }
    await this.refresh();
  }
}
