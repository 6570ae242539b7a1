// One WebRTC receive session: offer/answer over POST /offer (of the page's camera), a recvonly video
// transceiver and the "control" data channel. It reports a lost connection; retrying is the
// player's decision. Closing it also ends it on the server (DELETE /whep/<id>), which frees the
// slot at once. The helpers below are shared with the wall's session.

import { HttpError, cameraPath } from "/client/api.js";
import { AvOffsetMeter } from "/client/avsync.js";

const GATHER_TIMEOUT_MS = 1000;
// A relay candidate takes a round trip or two to the TURN server; without it in the offer (no
// trickle) a viewer behind another NAT never connects.
const GATHER_WITH_SERVERS_MS = 3000;
const DISCONNECT_GRACE_MS = 2000;
const END_PATIENCE_MS = 1000; // how long a closing session waits for the server's goodbye

export function webrtcSupported() {
  return typeof RTCPeerConnection === "function";
}

// H.264 first (constrained baseline, packetization-mode 1 first), then VP8, then the rest.
function codecRank(codec) {
  const mime = codec.mimeType.toLowerCase();
  const fmtp = (codec.sdpFmtpLine || "").toLowerCase();
  if (mime === "video/h264") {
    return (fmtp.includes("packetization-mode=1") ? 0 : 2) + (fmtp.includes("profile-level-id=42e0") ? 0 : 1);
  }
  if (mime === "video/vp8") return 10;
  if (/\/(rtx|red|ulpfec|flexfec-03)$/.test(mime)) return 20;
  return 30;
}

export function preferCodecs(transceiver) {
  if (typeof transceiver.setCodecPreferences !== "function") return;
  const caps = typeof RTCRtpReceiver.getCapabilities === "function" && RTCRtpReceiver.getCapabilities("video");
  if (!caps || !caps.codecs || !caps.codecs.length) return;
  const codecs = [...caps.codecs].sort((a, b) => codecRank(a) - codecRank(b));
  try {
    transceiver.setCodecPreferences(codecs);
  } catch (error) {
    console.warn("camcast: codec preferences not applied", error);
  }
}

// Ask for the smallest playout delay the browser allows.
export function lowLatencyReceiver(receiver) {
  try {
    if ("jitterBufferTarget" in receiver) receiver.jitterBufferTarget = 0;
  } catch {
    // older browsers: property missing or read-only
  }
  try {
    receiver.playoutDelayHint = 0;
  } catch {
    // non-standard; absent in most browsers
  }
}

// The STUN/TURN servers the server gives its pages (GET /api/ice-servers: TURN credentials are
// minted per request and expire, so each connection asks anew). [] when that fails: on one network
// the session connects without them.
export async function fetchIceServers(api, signal) {
  try {
    const response = await api.fetch("/api/ice-servers", { signal, cache: "no-store" });
    if (!response.ok) return [];
    const body = await response.json();
    return body && Array.isArray(body.iceServers) ? body.iceServers : [];
  } catch {
    return [];
  }
}

// A connection with these servers; without them if the browser rejects one (a malformed entry
// must not cost the picture).
export function peerConnectionWith(iceServers, config = {}) {
  try {
    return new RTCPeerConnection({ ...config, iceServers });
  } catch (error) {
    console.warn("camcast: ICE servers not usable, connecting without them", error);
    return new RTCPeerConnection({ ...config, iceServers: [] });
  }
}

export function gatherTimeoutMs(iceServers) {
  return iceServers.length ? GATHER_WITH_SERVERS_MS : GATHER_TIMEOUT_MS;
}

export function gatheringComplete(pc, timeoutMs) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

export class WebRtcSession {
  // onLost(reason) is called at most once, when an established session drops.
  // iceServers: null asks the server (GET /api/ice-servers) on connect.
  constructor({ api, iceServers = null, onLost = () => {} }) {
    this.api = api;
    this.iceServers = iceServers;
    this.onLost = onLost;
    this.pc = null;
    this.channel = null;
    this.stream = null;
    this.id = null; // the server's session id, from the answer
    this.closed = false;
    this.lostReported = false;
    this.disconnectTimer = null;
    this.abort = new AbortController(); // an abandoned session sends no late offer
    this.avOffset = new AvOffsetMeter();
  }

  // Resolves with the remote MediaStream once the answer is applied and the track has arrived.
  async connect() {
    const iceServers = this.iceServers ?? (await fetchIceServers(this.api, this.abort.signal));
    if (this.closed) throw new Error("closed");
    const pc = peerConnectionWith(iceServers);
    this.pc = pc;
    const transceiver = pc.addTransceiver("video", { direction: "recvonly" });
    preferCodecs(transceiver);
    lowLatencyReceiver(transceiver.receiver);
    // The camera's sound, when it has some (the server answers the m-line inactive otherwise).
    pc.addTransceiver("audio", { direction: "recvonly" });
    // The channel must exist before the offer so the offer carries an SCTP section.
    this.channel = pc.createDataChannel("control", { ordered: true });
    // The server closes the channel when it ends the session; the ICE timeout would take longer.
    this.channel.addEventListener("open", () => {
      this.channel.addEventListener("close", () => this.reportLost("server closed the session"));
    });
    pc.addEventListener("connectionstatechange", () => this.onConnectionState());

    const trackArrived = new Promise((resolve) => {
      // One stream for the picture and the sound, whichever streams the server put them in.
      this.stream = new MediaStream();
      pc.addEventListener("track", (event) => {
        lowLatencyReceiver(event.receiver);
        this.stream.addTrack(event.track);
        if (event.track.kind === "video") resolve(this.stream);
      });
    });

    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc, gatherTimeoutMs(iceServers));
    if (this.closed) throw new Error("closed");
    const offer = pc.localDescription;
    // ?rendition=high|medium|low on the page holds the viewer on that rendition (a quality chosen by
    // hand); without it the server moves the viewer with its link.
    const rendition = new URLSearchParams(location.search).get("rendition");
    const query = rendition ? `?rendition=${encodeURIComponent(rendition)}` : "";
    const response = await this.api.fetch(cameraPath("/offer") + query, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: offer.sdp, type: offer.type }),
      signal: this.abort.signal,
    });
    if (!response.ok) throw new HttpError(response.status, `offer rejected: ${response.status}`);
    const answer = await response.json();
    if (answer && typeof answer.id === "string") this.id = answer.id;
    if (this.closed) {
      this.endOnServer(); // closed while the answer was on its way
      throw new Error("closed");
    }
    if (!answer || typeof answer.sdp !== "string" || answer.type !== "answer") throw new Error("bad answer");
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    return trackArrived;
  }

  onConnectionState() {
    followConnectionState(this);
  }

  reportLost(reason) {
    reportSessionLost(this, reason);
  }

  // Codec, decoded frames, resolution and timings of the video, from getStats().
  async readStats() {
    if (!this.pc || this.closed) return null;
    const report = await this.pc.getStats();
    let inbound = null;
    let pair = null;
    report.forEach((entry) => {
      if (entry.type === "inbound-rtp" && (entry.kind === "video" || entry.mediaType === "video")) inbound = entry;
      if (entry.type === "candidate-pair" && entry.nominated && entry.state === "succeeded") pair = entry;
    });
    if (!inbound) return null;
    const codec = inbound.codecId ? report.get(inbound.codecId) : null;
    const emitted = inbound.jitterBufferEmittedCount || 0;
    return {
      codec: codec ? codec.mimeType : null,
      framesDecoded: inbound.framesDecoded || 0,
      framesDropped: inbound.framesDropped || 0,
      packetsLost: inbound.packetsLost || 0,
      width: inbound.frameWidth || 0,
      height: inbound.frameHeight || 0,
      jitterBufferMs: emitted ? (inbound.jitterBufferDelay / emitted) * 1000 : null,
      rttMs: pair && pair.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null,
      avOffsetMs: this.avOffset.update(report),
    };
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
    clearTimeout(this.disconnectTimer);
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    // The server ends a session whose channel closes, so a DELETE sent after the close would
    // find nothing (a 404 in the console): ask first, then hang up.
    const ended = this.endOnServer();
    if (!ended) {
      this.hangUp();
      return;
    }
    const patience = new Promise((resolve) => setTimeout(resolve, END_PATIENCE_MS));
    Promise.race([ended, patience]).then(() => this.hangUp());
  }

  hangUp() {
    try {
      if (this.channel) this.channel.close();
    } catch {
      // already closed
    }
    if (this.pc) this.pc.close();
  }

  // The DELETE's promise, or null when the server never gave this session an id.
  endOnServer() {
    if (!this.id) return null;
    const ended = endSession(this.api, cameraPath(`/whep/${encodeURIComponent(this.id)}`));
    this.id = null;
    return ended;
  }
}

// Without this the server holds a session until ICE fails or times out. keepalive: the request
// outlives the page when it closes on pagehide. A 404 (already gone) is fine. Resolves when the
// server has answered (or cannot be reached).
export function endSession(api, path) {
  return fetch(path, api.withAuth({ method: "DELETE", keepalive: true })).then(() => {}, () => {
    // the server is gone: nothing left to end
  });
}

// The connection-state rules every session shares (the player's and the wall's): `session` has
// `pc`, `closed`, `disconnectTimer`, `lostReported` and `onLost(reason)`.
export function followConnectionState(session) {
  if (!session.pc || session.closed) return;
  const state = session.pc.connectionState;
  if (state === "connected") {
    clearTimeout(session.disconnectTimer);
    session.disconnectTimer = null;
  } else if (state === "failed" || state === "closed") {
    reportSessionLost(session, `connection ${state}`);
  } else if (state === "disconnected" && !session.disconnectTimer) {
    // A short disconnect often heals by itself (ICE consent); only a lasting one counts.
    session.disconnectTimer = setTimeout(() => {
      session.disconnectTimer = null;
      if (session.pc && session.pc.connectionState !== "connected") reportSessionLost(session, "connection lost");
    }, DISCONNECT_GRACE_MS);
  }
}

export function reportSessionLost(session, reason) {
  if (session.lostReported || session.closed) return;
  session.lostReported = true;
  session.onLost(reason);
}
