// Which of the camera's renditions a WebRTC viewer is watching: from the decoded picture's width
// against the ladder in /api/status (`renditions`, scales of the capture width), and the server's
// own account of this session (`webrtc.sessions[]`: rendition, switching_to, estimate_bps).

const SIZE_TOLERANCE = 0.1; // encoders round sizes to even numbers (or to macroblocks)

// The rendition whose width is nearest to `width`, or null when none is close (or no ladder).
export function renditionOfWidth(width, captureWidth, ladder) {
  if (!width || !captureWidth || !Array.isArray(ladder) || !ladder.length) return null;
  let best = null;
  let bestError = Infinity;
  for (const rendition of ladder) {
    const expected = captureWidth * Number(rendition.scale);
    const error = Math.abs(width - expected) / expected;
    if (error < bestError) {
      best = rendition;
      bestError = error;
    }
  }
  return best && bestError <= SIZE_TOLERANCE ? String(best.name) : null;
}

// This session's entry in a camera's /api/status, by the id the answer carried.
export function sessionOf(status, id) {
  const sessions = status && status.webrtc && Array.isArray(status.webrtc.sessions) ? status.webrtc.sessions : [];
  return id ? sessions.find((session) => session && session.id === id) || null : null;
}

export function formatBitrate(bps) {
  if (bps == null || !Number.isFinite(Number(bps)) || bps <= 0) return "";
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mbit/s` : `${Math.round(bps / 1000)} kbit/s`;
}
