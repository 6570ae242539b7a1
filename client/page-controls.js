// The page around the picture: the full-screen button, and on a camera's own page its name and
// the way back to all cameras.

import { pageCamera } from "/client/api.js";

export function setUpFullscreen(button, stage, video) {
  const canStage = typeof stage.requestFullscreen === "function";
  if (!canStage && typeof video.webkitEnterFullscreen !== "function") {
    button.hidden = true;
    return;
  }
  button.addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else if (canStage) stage.requestFullscreen().catch(() => {});
    else video.webkitEnterFullscreen(); // iPhone Safari: only the video can go full screen
  });
}

// On /cameras/<name>/ the page names its camera, and links back to the wall when there is one.
// The single-camera page at / stays as it always was.
export function showCamera(api, head, name, allCameras) {
  if (pageCamera === null) return;
  document.title = `${pageCamera} · camcast`;
  name.textContent = pageCamera;
  head.hidden = false;
  document.documentElement.classList.add("with-camera-head");
  api.json("/api/cameras").then((cameras) => {
    allCameras.hidden = !(Array.isArray(cameras) && cameras.length > 1);
  }).catch(() => {
    // an older server without the list: no wall to go back to
  });
}
