// One WebRTC session for many cameras: a single RTCPeerConnection with one recvonly video
// transceiver per camera (bundled on one transport), offered to POST /wall/offer. The server
// answers each camera on its own: a camera it cannot serve gets its m-line answered inactive and
// ok:false, the others play. Tiles leave the session one by one; the last one out ends it.

import { HttpError } from "/client/api.js";
import {
  endSession, fetchIceServers, followConnectionState, gatherTimeoutMs, gatheringComplete, lowLatencyReceiver,
  peerConnectionWith, preferCodecs, reportSessionLost,
} from "/client/webrtc.js";

export class WallSession {
  // onLost(reason) is called at most once, when the whole connection drops.
  constructor({ api, cameras, onLost = () => {} }) {
    this.api = api;
    this.cameras = [...cameras];
    this.onLost = onLost;
    this.pc = null;
    this.id = null; // the server's session id, from the answer
    this.lanes = new Map(); // camera name → { transceiver, ok, error }
    this.users = new Set(this.cameras); // cameras still shown (or waited for) from this session
    this.closed = false;
    this.lostReported = false;
    this.disconnectTimer = null;
    this.abort = new AbortController(); // an abandoned session sends no late offer
  }

  // Resolves with this.lanes once the answer is applied; each ok lane's receiver.track then
  // carries that camera's video (its frames start once the connection is up).
  async connect() {
    const iceServers = await fetchIceServers(this.api, this.abort.signal);
    if (this.closed) throw new Error("closed");
    const pc = peerConnectionWith(iceServers, { bundlePolicy: "max-bundle" });
    this.pc = pc;
    for (const name of this.cameras) {
      const transceiver = pc.addTransceiver("video", { direction: "recvonly" });
      preferCodecs(transceiver);
      lowLatencyReceiver(transceiver.receiver);
      this.lanes.set(name, { transceiver, ok: false, error: "no answer yet" });
    }
    pc.addEventListener("connectionstatechange", () => this.onConnectionState());

    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc, gatherTimeoutMs(iceServers));
    if (this.closed) throw new Error("closed");
    const offer = pc.localDescription;
    const response = await this.api.fetch("/wall/offer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: offer.sdp, type: offer.type, cameras: this.cameras }),
      signal: this.abort.signal,
    });
    if (!response.ok) throw new HttpError(response.status, await rejection(response));
    const answer = await response.json();
    if (answer && typeof answer.id === "string") this.id = answer.id;
    if (this.closed) {
      this.endOnServer(); // closed while the answer was on its way
      throw new Error("closed");
    }
    if (!answer || typeof answer.sdp !== "string" || answer.type !== "answer") throw new Error("bad answer");
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    this.applyVerdicts(answer.cameras);
    return this.lanes;
  }

  // A lane plays when the server said ok (or said nothing) and its m-line was answered with video.
  applyVerdicts(verdicts) {
    const byName = new Map();
    if (Array.isArray(verdicts)) {
      for (const verdict of verdicts) if (verdict && typeof verdict.name === "string") byName.set(verdict.name, verdict);
    }
    for (const [name, lane] of this.lanes) {
      const verdict = byName.get(name);
      const direction = lane.transceiver.currentDirection;
      if (verdict && verdict.ok === false) {
        lane.ok = false;
        lane.error = String(verdict.error || "refused by the server");
      } else if (direction !== "recvonly" && direction !== "sendrecv") {
        lane.ok = false;
        lane.error = "answered inactive";
      } else {
        lane.ok = true;
        lane.error = null;
      }
    }
  }

  track(name) {
    const lane = this.lanes.get(name);
    return lane && lane.ok ? lane.transceiver.receiver.track : null;
  }

  // Frames this camera's lane has decoded so far (its inbound-rtp entry), or null.
  async framesDecoded(name) {
    const lane = this.lanes.get(name);
    if (!lane || !lane.ok || this.closed) return null;
    const report = await lane.transceiver.receiver.getStats();
    let frames = null;
    report.forEach((entry) => {
      if (entry.type === "inbound-rtp" && (entry.kind === "video" || entry.mediaType === "video")) {
        frames = entry.framesDecoded || 0;
      }
    });
    return frames;
  }

  // A tile no longer shows this camera from here; with nobody left the session ends.
  release(name) {
    this.users.delete(name);
    if (!this.users.size) this.close();
  }

  onConnectionState() {
    followConnectionState(this);
  }

  reportLost(reason) {
    reportSessionLost(this, reason);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
    clearTimeout(this.disconnectTimer);
    for (const lane of this.lanes.values()) lane.transceiver.receiver.track.stop();
    if (this.pc) this.pc.close();
    this.endOnServer();
  }

  endOnServer() {
    if (!this.id) return;
    endSession(this.api, `/whep/${encodeURIComponent(this.id)}`);
    this.id = null;
  }
}

async function rejection(response) {
  let detail = "";
  try {
    detail = (await response.text()).trim().slice(0, 200);
  } catch {
    // no body
  }
  return `offer rejected: ${response.status}${detail ? ` ${detail}` : ""}`;
}
