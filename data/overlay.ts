/**
 * Mask overlays for the report: the image with a label map blended on top, encoded by sharp.
 *
 * - colours: the dataset's class palette (data/palette.ts classPalette), the same as in the
 *   pseudo-mask PNGs and the report's legend. The background class is left untinted.
 * - ignore (255): the image greyed and darkened with a diagonal hatch, so "refine was unsure"
 *   stands out from every class.
 * - outlines: pixels whose right or lower neighbour has another label are drawn white, so
 *   adjacent regions of similar colours stay apart.
 */
import sharp from 'sharp';
import { classPalette } from './palette.js';
import { TagsegError } from '../pipeline/errors.js';
/** Label maps' ignore value (a pseudo mask's unsure pixels, void in ground truth). */
const IGNORE = 255;

/** Blend share of the class colour over the image. */
const ALPHA = 0.5;

/**
 * RGB [H, W, 3] of `labels` [H, W] over `pixels` [H, W, 3] (see the file comment). `background`
 * (a class index or null) stays untinted.
 */
export function overlayRgb(pixels: Uint8Array, labels: Uint8Array, H: number, W: number, background: number | null): Uint8Array {
  if (pixels.length !== H * W * 3 || labels.length !== H * W) {
    throw new TagsegError(`overlayRgb: ${pixels.length / 3} pixels and ${labels.length} labels for ${H} x ${W}`);
  }
  const pal = classPalette(background);
  const out = new Uint8Array(H * W * 3);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const p = y * W + x;
      const l = labels[p];
      const r = pixels[3 * p];
      const g = pixels[3 * p + 1];
      const b = pixels[3 * p + 2];
      const outline = (x < W - 1 && labels[p + 1] !== l) || (y < H - 1 && labels[p + W] !== l);
      // Three locals, not a tuple per pixel: the allocations were most of this loop's time.
      let o0: number, o1: number, o2: number;
      if (outline) o0 = o1 = o2 = 255;
      else if (l === IGNORE) {
        const lum = 0.45 * (0.299 * r + 0.587 * g + 0.114 * b);
        o0 = o1 = o2 = (x + y) % 8 < 2 ? 200 : lum;
      } else if (l === background) {
        o0 = r;
        o1 = g;
        o2 = b;
      } else {
        o0 = r + (pal[3 * l] - r) * ALPHA;
        o1 = g + (pal[3 * l + 1] - g) * ALPHA;
        o2 = b + (pal[3 * l + 2] - b) * ALPHA;
      }
      out[3 * p] = o0;
      out[3 * p + 1] = o1;
      out[3 * p + 2] = o2;
    }
  }
  return out;
}

/** The heat ramp's stops for values 0, 1/3, 2/3, 1: dark blue -> cyan -> yellow -> red (a perceptually ordered ramp). */
const HEAT_STOPS: readonly (readonly [number, number, number])[] = [[20, 30, 140], [0, 200, 230], [250, 230, 40], [220, 20, 20]];

/**
 * RGB [H, W, 3] of one class's CAM `map` [H, W] over the darkened image: the map divided by its
 * maximum (CAMs are compared within a class, not across), blended in proportion to its value so
 * cold regions keep the photo visible.
 */
export function heatmapRgb(pixels: Uint8Array, map: Float32Array, H: number, W: number): Uint8Array {
  if (pixels.length !== H * W * 3 || map.length !== H * W) throw new TagsegError(`heatmapRgb: ${pixels.length / 3} pixels and ${map.length} values for ${H} x ${W}`);
  let max = 0;
  for (const v of map) if (v > max) max = v;
  const out = new Uint8Array(H * W * 3);
  for (let p = 0; p < H * W; p++) {
    const v = max > 0 ? Math.max(0, map[p]) / max : 0;
    const a = 0.25 + 0.5 * v;
    // The heat colour: linear between the two stops around v (no allocation per pixel).
    const x = Math.min(1, Math.max(0, v)) * (HEAT_STOPS.length - 1);
    const i = Math.min(HEAT_STOPS.length - 2, Math.floor(x));
    const t = x - i;
    const lo = HEAT_STOPS[i];
    const hi = HEAT_STOPS[i + 1];
    for (let j = 0; j < 3; j++) out[3 * p + j] = 0.8 * pixels[3 * p + j] * (1 - a) + (lo[j] + (hi[j] - lo[j]) * t) * a;
  }
  return out;
}

/** JPEG of an RGB buffer, resized so its long side is at most `longSide` (0 = as is). */
export async function encodeJpeg(rgb: Uint8Array, H: number, W: number, longSide: number, quality = 80): Promise<Buffer> {
  let img = sharp(Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength), { raw: { width: W, height: H, channels: 3 } });
  if (longSide > 0 && Math.max(H, W) > longSide) {
    const s = longSide / Math.max(H, W);
    img = img.resize({ width: Math.max(1, Math.round(W * s)), height: Math.max(1, Math.round(H * s)), fit: 'fill', kernel: 'lanczos3' });
  }
  return img.jpeg({ quality, mozjpeg: false }).toBuffer();
}
