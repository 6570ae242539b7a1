// The unmute button and a level meter. Browsers start media muted (autoplay), so the player shows
// a "Sound off" button as soon as the stream carries an audio track; a click turns the sound on
// (a user gesture, which browsers require) and the meter then moves with the sound's level.

const POLL_MS = 500;

export class SoundControl {
  constructor(button, video) {
    this.button = button;
    this.video = video;
    this.bar = button.querySelector(".level span");
    this.label = button.querySelector(".label");
    this.context = null;
    this.analyser = null;
    this.source = null;
    this.sourceStream = null;
    this.samples = null;
    button.addEventListener("click", () => this.toggle());
  }

  start() {
    setInterval(() => this.refresh(), POLL_MS);
    const frame = () => {
      this.drawLevel();
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  }

  get audioTracks() {
    const stream = this.video.srcObject;
    return stream && stream.getAudioTracks ? stream.getAudioTracks() : [];
  }

  refresh() {
    const hasSound = this.audioTracks.length > 0;
    this.button.hidden = !hasSound;
    const on = hasSound && !this.video.muted;
    this.button.setAttribute("aria-pressed", String(on));
    this.label.textContent = on ? "Sound on" : "Sound off";
  }

  toggle() {
    this.video.muted = !this.video.muted;
    if (!this.video.muted) {
      this.video.play().catch(() => {});
      this.listen();
    }
    this.refresh();
  }

  // The meter reads the same stream the <video> plays, through WebAudio (created on the click).
  listen() {
    const stream = this.video.srcObject;
    if (!stream || this.audioTracks.length === 0) return;
    if (!this.context) this.context = new AudioContext();
    this.context.resume().catch(() => {});
    if (this.sourceStream === stream) return;
    if (this.source) this.source.disconnect();
    this.source = this.context.createMediaStreamSource(stream);
    this.analyser = this.context.createAnalyser();
    this.analyser.fftSize = 1024;
    this.samples = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser); // not to the destination: the <video> plays the sound
    this.sourceStream = stream;
  }

  drawLevel() {
    if (!this.bar) return;
    if (!this.analyser || this.video.muted || this.video.srcObject !== this.sourceStream) {
      this.bar.style.width = "0%";
      return;
    }
    this.analyser.getFloatTimeDomainData(this.samples);
    let peak = 0;
    for (const sample of this.samples) peak = Math.max(peak, Math.abs(sample));
    this.bar.style.width = `${Math.min(100, Math.round(peak * 200))}%`;
    if (window.camcast) window.camcast.soundLevel = peak;
  }
}
