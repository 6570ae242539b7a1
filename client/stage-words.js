// The words on the picture: the notice in its middle (what is happening when it does not simply
// play) and the standing note in its corner while the picture is lighter than the camera's own.

// state: the player's readings (window.camcast). declined: the user cancelled the token form;
// forcedWebRtc: ?transport=webrtc (no MJPEG to switch to).
export function noticeText(state, { declined, forcedWebRtc }) {
  const weak = forcedWebRtc ? "weak connection — reconnecting…" : "weak connection — switching…";
  if (state.state !== "playing" && declined) return "access token needed: press Token…";
  if (state.link === "weak") return weak;
  if (state.degraded && state.transport === "mjpeg" && state.state !== "playing") return weak;
  if (state.state === "connecting") return "connecting…";
  if (state.state === "reconnecting") return state.degrades ? "weak connection — reconnecting…" : "reconnecting…";
  if (state.state === "stalled") return "waiting for video…";
  return "";
}

// overPicture: a (frozen, most often) picture lies under the words, which then need a backing.
export function showNotice(element, text, overPicture) {
  if (element.textContent !== text) {
    const words = document.createElement("span");
    words.textContent = text;
    element.replaceChildren(words);
  }
  element.hidden = !text;
  element.classList.toggle("over-picture", overPicture);
}

// A lighter MJPEG variant, or a WebRTC rendition below the top one (`top`, its name).
export function isLighter(state, top) {
  if (state.transport === "mjpeg") return state.mjpegLevel > 0;
  return state.transport === "webrtc" && state.rendition != null && top != null && state.rendition !== top;
}
