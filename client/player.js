const img = document.getElementById("mjpeg");
const statusLine = document.getElementById("status");
img.src = "/video.mjpg";

async function refreshStatus() {
  try {
    const r = await fetch("/api/status");
    const s = await r.json();
    statusLine.textContent = `${s.source} ${s.size} ${s.fps} fps · viewers ${JSON.stringify(s.viewers)}`;
  } catch (e) {
    statusLine.textContent = "server unreachable";
  }
}
refreshStatus();
setInterval(refreshStatus, 2000);
