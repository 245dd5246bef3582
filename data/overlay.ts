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
      let o: [number, number, number];
      if (outline) o = [255, 255, 255];
      else if (l === IGNORE) {
        const lum = 0.45 * (0.299 * r + 0.587 * g + 0.114 * b);
        o = (x + y) % 8 < 2 ? [200, 200, 200] : [lum, lum, lum];
      } else if (l === background) o = [r, g, b];
      else {
        o = [r + (pal[3 * l] - r) * ALPHA, g + (pal[3 * l + 1] - g) * ALPHA, b + (pal[3 * l + 2] - b) * ALPHA];
      }
      out[3 * p] = o[0];
      out[3 * p + 1] = o[1];
      out[3 * p + 2] = o[2];
    }
  }
  return out;
}

/** Colour of a heat value in [0, 1]: dark blue -> cyan -> yellow -> red (a perceptually ordered ramp). */
function heatColour(v: number): [number, number, number] {
  const stops: [number, number, number][] = [[20, 30, 140], [0, 200, 230], [250, 230, 40], [220, 20, 20]];
  const x = Math.min(1, Math.max(0, v)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const t = x - i;
  return [0, 1, 2].map((j) => stops[i][j] + (stops[i + 1][j] - stops[i][j]) * t) as [number, number, number];
}

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
    const c = heatColour(v);
    const a = 0.25 + 0.5 * v;
    for (let j = 0; j < 3; j++) out[3 * p + j] = 0.8 * pixels[3 * p + j] * (1 - a) + c[j] * a;
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
