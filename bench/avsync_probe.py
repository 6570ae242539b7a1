"""What the avsync bench runs inside Chromium, next to the bundled player.

The init script (injected through the DevTools protocol, so the player's CSP does not apply) watches
the player's `<video>`: every frame presented (requestVideoFrameCallback) is drawn into a canvas, and
a frame whose bottom-right block is white (the test pattern's flash) is noted with its
`expectedDisplayTime` and its capture stamp (the player's own StampReader). Once started, an
AudioWorklet on the same stream's sound notes the exact sample where each beep begins; the
AudioContext's getOutputTimestamp() maps that sample to the performance.now() clock at which the
output plays it. Both lists are read back by `collect`.
"""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page

BEEP_THRESHOLD = 0.05  # of full scale: the tone is at 0.25
QUIET_SECONDS = 0.5  # a beep's onset follows at least this much quiet

# The AudioWorklet: sample-exact onsets (frame numbers on the context's clock).
WORKLET = f"""
class Onsets extends AudioWorkletProcessor {{
  constructor() {{ super(); this.lastLoud = -1e12; }}
  process(inputs) {{
    const channel = inputs[0] && inputs[0][0];
    if (channel) {{
      for (let i = 0; i < channel.length; i += 1) {{
        if (Math.abs(channel[i]) <= {BEEP_THRESHOLD}) continue;
        const frame = currentFrame + i;
        if (frame - this.lastLoud > {QUIET_SECONDS} * sampleRate) this.port.postMessage(frame);
        this.lastLoud = frame;
      }}
    }}
    return true;
  }}
}}
registerProcessor("avsync-onsets", Onsets);
"""

INIT = """
(() => {
  const bench = { flashes: [], onsets: [], errors: [], audio: null, video: false };
  Object.defineProperty(window, "__avsync", { value: bench });
  const FLASH = 64;

  async function watchVideo(video) {
    const { StampReader } = await import("/client/stamp.js");
    const stamps = new StampReader();
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = FLASH / 2;
    const g = canvas.getContext("2d", { willReadFrequently: true, alpha: false });
    const onFrame = (now, meta) => {
      try {
        const w = meta.width, h = meta.height;
        // The flash block's centre (the top rendition: the pattern's own size).
        const side = FLASH / 2;
        g.drawImage(video, w - side * 1.5, h - side * 1.5, side, side, 0, 0, canvas.width, canvas.height);
        const data = g.getImageData(0, 0, canvas.width, canvas.height).data;
        let sum = 0;
        for (let p = 0; p < data.length; p += 4) sum += data[p + 1];
        if (sum / (data.length / 4) > 200) {
          const read = stamps.read(video, w, h);
          bench.flashes.push({ display: meta.expectedDisplayTime, presented: meta.presentationTime,
                               stamp: read.stamp == null ? null : Number(read.stamp) });
        }
      } catch (error) {
        bench.errors.push(String(error));
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    bench.video = true;
  }

  // Called by the bench once the sound is on (the player's button clicked).
  bench.startAudio = async (workletCode) => {
    const video = document.getElementById("video");
    const context = new AudioContext({ latencyHint: "interactive" });
    const workletUrl = URL.createObjectURL(new Blob([workletCode], { type: "text/javascript" }));
    await context.audioWorklet.addModule(workletUrl);
    const source = context.createMediaStreamSource(video.srcObject);
    const node = new AudioWorkletNode(context, "avsync-onsets");
    node.port.onmessage = (event) => {
      const when = context.getOutputTimestamp();
      const heard = when.performanceTime + (event.data / context.sampleRate - when.contextTime) * 1000;
      bench.onsets.push(heard);
    };
    source.connect(node);
    node.connect(context.destination); // pulls the worklet; it outputs silence
    await context.resume();
    bench.audio = { sampleRate: context.sampleRate, baseLatency: context.baseLatency,
                    outputLatency: context.outputLatency };
  };

  document.addEventListener("DOMContentLoaded", () => {
    const video = document.getElementById("video");
    if (video && "requestVideoFrameCallback" in video) watchVideo(video);
  });
})();
"""

COLLECT = """() => {
  const b = window.__avsync;
  const out = { flashes: b.flashes.splice(0), onsets: b.onsets.splice(0), errors: b.errors.splice(0),
                timeOrigin: performance.timeOrigin, audio: b.audio };
  const stats = window.camcastPlayer && window.camcastPlayer.stats;
  out.overlayAvMs = stats ? stats.avOffsetMs : null;
  out.playerLatencyMs = window.camcast ? window.camcast.latencyMs : null;
  return out;
}"""


async def prepare(page: Page) -> None:
    """Before the player loads (its browser context made with bypass_csp=True, so the worklet's
    module may come from a blob: URL)."""
    await page.add_init_script(INIT)


async def start_audio(page: Page) -> dict[str, Any]:
    await page.evaluate("code => window.__avsync.startAudio(code)", WORKLET)
    return dict(await page.evaluate("() => window.__avsync.audio"))


async def collect(page: Page) -> dict[str, Any]:
    """Everything noted since the last call (flashes and onsets in performance.now() ms)."""
    return dict(await page.evaluate(COLLECT))


def pair_seconds(flashes: list[dict[str, Any]], onsets: list[float], time_origin: float
                 ) -> list[dict[str, float]]:
    """Per whole second of the capture clock with both a flash and a beep: the sound's capture-to-ear
    and the picture's capture-to-display latency (ms) and their difference (+: sound late).

    The beep starts exactly at the second; the flash frame was captured at its stamp (the first
    frame at or after the second), so each latency has its own capture time and the pattern's
    frame lateness drops out. One machine: the epoch is performance.timeOrigin + performance.now().
    """
    video: dict[int, float] = {}
    for flash in flashes:
        if flash.get("stamp") is None:
            continue
        second = int(flash["stamp"] // 1_000_000)
        video.setdefault(second, time_origin + flash["display"] - flash["stamp"] / 1000)
    audio: dict[int, float] = {}
    for heard in onsets:
        epoch_ms = time_origin + heard
        second = int(epoch_ms // 1000)  # the ear's latency is well under a second
        audio.setdefault(second, epoch_ms - second * 1000)
    return [{"second": s, "audio_ms": audio[s], "video_ms": video[s], "offset_ms": audio[s] - video[s]}
            for s in sorted(video.keys() & audio.keys())]
