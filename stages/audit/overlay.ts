/**
 * Mask overlays for the report: the image with a label map blended on top, encoded by sharp.
 *
 * - colours: a fixed categorical palette (PALETTE, cycled), chosen for contrast on photos; the
 *   VOC palette of the exported PNGs starts with black, which hides class 0 of datasets without a
 *   background class (MSRC). The background class is left untinted.
 * - ignore (255): the image greyed and darkened with a diagonal hatch, so "refine was unsure"
 *   stands out from every class.
 * - outlines: pixels whose right or lower neighbour has another label are drawn white, so
 *   adjacent regions of similar colours stay apart.
 */
import sharp from 'sharp';
import { TagsegError } from '../../pipeline/errors.js';
import { IGNORE } from './measures.js';

/** 24 well-separated colours (Kelly's list, minus white and black), RGB. */
export const PALETTE: readonly [number, number, number][] = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
  [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195],
  [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128], [255, 99, 71], [106, 90, 205], [154, 205, 50], [218, 112, 214],
];

export const classColour = (c: number): [number, number, number] => PALETTE[c % PALETTE.length];

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
        const c = classColour(l);
        o = [r + (c[0] - r) * ALPHA, g + (c[1] - g) * ALPHA, b + (c[2] - b) * ALPHA];
      }
      out[3 * p] = o[0];
      out[3 * p + 1] = o[1];
      out[3 * p + 2] = o[2];
    }
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
