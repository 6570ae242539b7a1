// The checks a WebRTC attempt must pass before the player puts it on screen: a first decoded
// frame in time and, when it would replace a picture that plays already, a short trial showing
// that frames keep coming.

const TRIAL_STEP_MS = 250;
const TRIAL_GAP_MS = 1000; // no new decoded frame for this long fails the trial
const TRIAL_MIN_FPS = 5;

export function timeout(ms, message) {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(message)), Math.max(0, ms)));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Watches the <video> for a decoded frame to show: `promise` resolves then; `cancel()` stops the
// watch (its poll timer and listeners) when the attempt is given up. onWatching(+1/-1) counts
// the watches still running, so a leak would show.
export function firstFrame(video, onWatching) {
  let stop = () => {};
  const promise = new Promise((resolve) => {
    const ready = () => video.videoWidth > 0 && video.readyState >= 2;
    if (ready()) {
      resolve();
      return;
    }
    let frameCallback = null;
    const check = () => {
      if (ready()) done();
    };
    const poll = setInterval(check, 200);
    stop = () => {
      stop = () => {};
      clearInterval(poll);
      if (frameCallback !== null) video.cancelVideoFrameCallback(frameCallback);
      video.removeEventListener("loadeddata", check);
      video.removeEventListener("resize", check);
      onWatching(-1);
    };
    const done = () => {
      stop();
      resolve();
    };
    onWatching(1);
    if ("requestVideoFrameCallback" in video) frameCallback = video.requestVideoFrameCallback(() => done());
    video.addEventListener("loadeddata", check);
    video.addEventListener("resize", check);
  });
  return { promise, cancel: () => stop() };
}

// Resolves when `session` has decoded frames steadily for `ms` (from getStats, so it works while
// the video is covered by the MJPEG picture); rejects on a gap or when the session closes.
export async function keepsPlaying(session, ms) {
  const first = await session.readStats();
  if (!first) throw new Error("closed during the trial");
  const started = performance.now();
  let decoded = first.framesDecoded;
  let grewAt = started;
  while (performance.now() - started < ms) {
    await sleep(TRIAL_STEP_MS);
    const stats = await session.readStats();
    if (!stats) throw new Error("closed during the trial");
    const now = performance.now();
    if (stats.framesDecoded > decoded) {
      decoded = stats.framesDecoded;
      grewAt = now;
    } else if (now - grewAt > TRIAL_GAP_MS) {
      throw new Error("video stalled during the trial");
    }
  }
  if (decoded - first.framesDecoded < (TRIAL_MIN_FPS * ms) / 1000) throw new Error("too few frames during the trial");
}
