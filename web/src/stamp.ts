// The frame stamp of docs/protocol.md#measuring-latency-the-frame-stamp, read back from decoded pixels.
//
// 64 cells of width floor(W/64) across the first 16 rows: the 32-bit frame
// counter, then the capture time in ms of the device clock (mod 2^32), most
// significant bit first. A 1 cell is luma 235, a 0 cell luma 16, grey. After
// the browser's YUV-to-RGB conversion that is about 255 and 0. Like the
// daemon's reader (src/media/stamp.rs), only the middle of each cell counts
// (rows 4..12, centre half of the width), away from compression ringing,
// and a cell nowhere near either level means "no stamp".

export const BAND_ROWS = 16;
export const CELLS = 64;
export const MIN_WIDTH = 256;

/** RGB brightness at or above this reads as a 1. */
const THRESHOLD = 128;
/** Averages strictly between these are neither: no stamp. */
const AMBIGUOUS_LOW = 93;
const AMBIGUOUS_HIGH = 163;

export interface Stamp {
  counter: number;
  ms: number;
}

/**
 * Reads the stamp from RGBA pixels (a canvas ImageData of the band: at
 * least 16 rows of `width` pixels). Null when there is none.
 */
export function readStamp(rgba: Uint8ClampedArray | Uint8Array, width: number, height: number): Stamp | null {
  if (width < MIN_WIDTH || height < BAND_ROWS || rgba.length < width * BAND_ROWS * 4) return null;
  const cw = Math.floor(width / CELLS);
  const x0 = Math.floor(cw / 4);
  const x1 = Math.max(cw - Math.floor(cw / 4), x0 + 1);
  let hi = 0;
  let lo = 0;
  for (let cell = 0; cell < CELLS; cell++) {
    let sum = 0;
    let n = 0;
    for (let row = 4; row < 12; row++) {
      const base = (row * width + cell * cw) * 4;
      for (let x = x0; x < x1; x++) {
        const i = base + x * 4;
        // Rec. 601 weights; the band is grey, so any weighting works.
        sum += 0.299 * rgba[i] + 0.587 * rgba[i + 1] + 0.114 * rgba[i + 2];
        n++;
      }
    }
    const mean = sum / Math.max(n, 1);
    if (mean > AMBIGUOUS_LOW && mean < AMBIGUOUS_HIGH) return null;
    const bit = mean >= THRESHOLD ? 1 : 0;
    if (cell < 32) hi = hi * 2 + bit;
    else lo = lo * 2 + bit;
  }
  return { counter: hi, ms: lo };
}

const TWO32 = 4294967296;

/** `a - b` for two millisecond values mod 2^32, as a signed difference. */
export function diffMod32(a: number, b: number): number {
  let d = (((a - b) % TWO32) + TWO32) % TWO32;
  if (d >= TWO32 / 2) d -= TWO32;
  return d;
}
