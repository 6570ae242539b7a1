// Plays the WHEP endpoint given as ?whep=URL with the third-party WHEPClient; the test reads
// window.player (state, error, the peer connection) and calls window.player.stop().
import { WHEPClient } from "./whep.js";

const video = document.getElementById("video");
const endpoint = new URLSearchParams(location.search).get("whep");
const pc = new RTCPeerConnection();
const whep = new WHEPClient();
const player = window.player = { pc, whep, state: "starting", error: null, resource: null };

pc.addTransceiver("video", { direction: "recvonly" });
pc.addTransceiver("audio", { direction: "recvonly" });
pc.ontrack = (event) => {
  if (event.track.kind === "video") video.srcObject = event.streams[0] || new MediaStream([event.track]);
};

player.stop = async () => {
  await whep.stop();  // closes the peer connection and DELETEs the session
  player.state = "stopped";
};

player.stats = async () => {
  const out = { connection: pc.connectionState, framesDecoded: 0, codec: null };
  if (pc.connectionState === "closed") return out;
  const stats = await pc.getStats();
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      out.framesDecoded = s.framesDecoded || 0;
      out.frameWidth = s.frameWidth;
      out.frameHeight = s.frameHeight;
      if (s.codecId && stats.get(s.codecId)) out.codec = stats.get(s.codecId).mimeType;
    }
  });
  const quality = video.getVideoPlaybackQuality();
  out.videoFrames = quality.totalVideoFrames;
  out.videoWidth = video.videoWidth;
  return out;
};

try {
  await whep.view(pc, endpoint);
  player.resource = whep.resourceURL && whep.resourceURL.href;
  player.state = "viewing";
} catch (error) {
  player.state = "failed";
  player.error = String(error);
}
