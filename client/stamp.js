// Read the frame stamp (README, "Frame stamp"): the top 16 rows hold 64 equal cells across the full width;
// cell i is white where bit 63-i of the capture time (µs since the epoch) is 1. A scaled-down
// picture (a smaller WebRTC rendition, an MJPEG variant) carries the band scaled with it.

const STAMP_ROWS = 16;
const MIN_ROWS = 2; // a band scaled below this is too thin to read
const CELLS = 64;
const CELL_PX = 8; // canvas pixels per cell: room to average a centre patch, away from the edges
const BAND_PX = 8; // canvas rows for the 16-row band
const UNSURE_LOW = 48;
const UNSURE_HIGH = 208;
const MAX_UNSURE = 3; // a few blurred cells are tolerated; more means there is no stamp here

export class StampReader {
  constructor() {
    this.canvas = document.createElement("canvas");
    this.canvas.width = CELLS * CELL_PX;
    this.canvas.height = BAND_PX;
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true, alpha: false });
  }

  // Returns { stamp: BigInt µs | null, signature: number } for the picture now shown by `source`
  // (a <video> or <img>), whose band is `rows` high. The signature changes whenever the band
  // changes, stamp or not.
  read(source, width, height, rows = STAMP_ROWS) {
    if (!width || height < rows) return { stamp: null, signature: 0 };
    this.ctx.drawImage(source, 0, 0, width, rows, 0, 0, this.canvas.width, BAND_PX);
    const data = this.ctx.getImageData(0, 0, this.canvas.width, BAND_PX).data;
    let hi = 0;
    let lo = 0;
    let unsure = 0;
    let signature = 0;
    for (let i = 0; i < CELLS; i += 1) {
      let sum = 0;
      let count = 0;
      for (let y = 2; y < BAND_PX - 2; y += 1) {
        for (let x = i * CELL_PX + 2; x < (i + 1) * CELL_PX - 2; x += 1) {
          const p = (y * this.canvas.width + x) * 4;
          sum += 0.299 * data[p] + 0.587 * data[p + 1] + 0.114 * data[p + 2];
          count += 1;
        }
      }
      const luma = sum / count;
      signature = (signature * 31 + Math.round(luma)) | 0;
      if (luma > UNSURE_LOW && luma < UNSURE_HIGH) unsure += 1;
      if (luma > 128) {
        if (i < 32) hi |= 1 << (31 - i);
        else lo |= 1 << (63 - i);
      }
    }
    if (unsure > MAX_UNSURE) return { stamp: null, signature };
    const stamp = (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
    return { stamp, signature };
  }
}

// The band's height in a picture `width` wide of a camera capturing `captureWidth` wide (0 when
// not known yet: taken as full size).
export function bandRows(width, captureWidth) {
  if (!captureWidth || !width || width >= captureWidth) return STAMP_ROWS;
  return Math.max(MIN_ROWS, Math.round((STAMP_ROWS * width) / captureWidth));
}

// Capture-to-display latency in ms from a stamp, or null when the stamp is implausible.
export function latencyFromStamp(stamp, displayWallMs, maxMs = 10_000) {
  if (stamp == null || stamp === 0n) return null;
  const ms = displayWallMs - Number(stamp) / 1000;
  if (!Number.isFinite(ms) || ms < 0 || ms > maxMs) return null;
  return ms;
}
