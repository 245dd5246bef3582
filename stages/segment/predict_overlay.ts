/**
 * `tagseg predict --overlay DIR`: something a person can look at next to the index PNGs. Each
 * image gets `<DIR>/<id>.png`: the photo at its original size with the predicted classes blended
 * on top (the audit report's overlay, data/overlay.ts, so the colours are the dataset's
 * class palette of data/palette.ts, the same as in the index PNGs; background untinted, white
 * outlines between regions) and, to its right, a legend of the classes present (colour swatch,
 * name, share of the pixels), largest first. PNG, so the colours are exact.
 */
import sharp from 'sharp';
import { classPalette, paletteHex } from '../../data/palette.js';
import { overlayRgb } from '../../data/overlay.js';

const ROW = 22;
const PAD = 8;
const SWATCH = 16;
const LEGEND_WIDTH = 200;
/** Canvas behind the legend (and below a photo shorter than the legend). */
export const LEGEND_BACKGROUND = { r: 32, g: 32, b: 32 };

const xmlEscape = (s: string) => s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** Classes of `labels` other than background and void, largest first, with their pixel share. */
export function legendEntries(labels: Uint8Array, classes: readonly string[], background: number | null): { c: number; share: number }[] {
  const counts = new Float64Array(256);
  for (const l of labels) counts[l]++;
  const out: { c: number; share: number }[] = [];
  for (let c = 0; c < classes.length; c++) if (c !== background && counts[c] > 0) out.push({ c, share: counts[c] / labels.length });
  return out.sort((a, b) => b.share - a.share || a.c - b.c);
}

/** The legend panel as SVG: one row per entry, a swatch in the class's palette colour and its name. */
function legendSvg(entries: { c: number; share: number }[], classes: readonly string[], palette: Uint8Array, height: number): string {
  const rows = entries.map((e, i) => {
    const y = PAD + i * ROW;
    const label = `${xmlEscape(classes[e.c])} ${(100 * e.share).toFixed(1)}%`;
    return `<rect x="${PAD}" y="${y}" width="${SWATCH}" height="${SWATCH}" fill="${paletteHex(palette, e.c)}"/>` +
      `<text x="${PAD + SWATCH + 6}" y="${y + SWATCH - 3}" font-family="sans-serif" font-size="13" fill="white">${label}</text>`;
  });
  if (entries.length === 0) rows.push(`<text x="${PAD}" y="${PAD + SWATCH - 3}" font-family="sans-serif" font-size="13" fill="white">background only</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${LEGEND_WIDTH}" height="${height}">${rows.join('')}</svg>`;
}

/**
 * PNG of the overlay of `labels` [H, W] on `rgb` [H, W, 3] (both at the original size) with the
 * legend to its right; the canvas is as tall as the taller of the two.
 */
export async function overlayWithLegend(rgb: Uint8Array, labels: Uint8Array, H: number, W: number, classes: readonly string[], background: number | null): Promise<Buffer> {
  const palette = classPalette(background);
  const entries = legendEntries(labels, classes, background);
  const height = Math.max(H, 2 * PAD + Math.max(1, entries.length) * ROW);
  const over = overlayRgb(rgb, labels, H, W, background);
  return sharp({ create: { width: W + LEGEND_WIDTH, height, channels: 3, background: LEGEND_BACKGROUND } })
    .composite([
      { input: Buffer.from(over.buffer, over.byteOffset, over.byteLength), raw: { width: W, height: H, channels: 3 }, left: 0, top: 0 },
      { input: Buffer.from(legendSvg(entries, classes, palette, height)), left: W, top: 0 },
    ])
    .png({ compressionLevel: 6 })
    .toBuffer();
}
