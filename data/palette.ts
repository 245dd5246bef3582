import { decode as decodePng, encode as encodePng, hasPngSignature } from 'fast-png';
import { TagsegError, messageOf } from '../pipeline/errors.js';

/**
 * Label masks are stored as 8-bit palette PNGs with the PASCAL VOC colour map, the format that
 * VOC, MSRC-v2 and most WSSS code read and write: the pixel value IS the class index, and any
 * image viewer shows the classes in VOC's familiar colours. sharp cannot write a given palette
 * and decodes palette PNGs to RGB (losing the indices), so masks go through fast-png here.
 */

/** Index that marks "ignore this pixel" (object boundaries, unlabelled regions), as in VOC. */
export const VOID_INDEX = 255;

/**
 * VOC colour for index `i`: the bits of `i` are interleaved into the high bits of R, G, B
 * (bit 0 -> R, bit 1 -> G, bit 2 -> B, most significant first), so small indices get
 * well-separated colours: 0 = black, 1 = (128,0,0), 2 = (0,128,0), ..., 255 = (224,224,192).
 */
function vocColour(i: number): [number, number, number] {
  let r = 0;
  let g = 0;
  let b = 0;
  let c = i;
  for (let j = 0; j < 8; j++) {
    r |= ((c >> 0) & 1) << (7 - j);
    g |= ((c >> 1) & 1) << (7 - j);
    b |= ((c >> 2) & 1) << (7 - j);
    c >>= 3;
  }
  return [r, g, b];
}

/** The VOC colour map, `[256, 3]` uint8 (row `i` = RGB of class index `i`). */
export const VOC_PALETTE: Uint8Array = (() => {
  const p = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) p.set(vocColour(i), i * 3);
  return p;
})();

/**
 * VOC's colours shifted by one (class i gets VOC colour i + 1), for datasets whose class 0 is a
 * real object (MSRC-v2's `building`), which VOC would paint black. 255 keeps VOC's void colour;
 * only a 255-class dataset's class 254 gets the leftover black.
 */
const SHIFTED_PALETTE: Uint8Array = (() => {
  const p = new Uint8Array(256 * 3);
  for (let i = 0; i < 255; i++) p.set(vocColour(i === 254 ? 0 : i + 1), i * 3);
  p.set(vocColour(VOID_INDEX), VOID_INDEX * 3);
  return p;
})();

/**
 * THE class palette of a dataset, `[256, 3]` uint8, used by every picture tagseg draws (the
 * pseudo-mask and predicted PNGs, the audit report and its overlays, the review exports): VOC's
 * colours when the background class is index 0 (so VOC masks look as VOC users expect), else the
 * same colours shifted so that no class is black. Pixel values always stay the class indices.
 */
export function classPalette(background: number | null): Uint8Array {
  return background === 0 ? VOC_PALETTE : SHIFTED_PALETTE;
}

/** RGB of class `c` in `palette` (a classPalette). */
export function paletteColour(palette: Uint8Array, c: number): [number, number, number] {
  return [palette[c * 3], palette[c * 3 + 1], palette[c * 3 + 2]];
}

/** `#rrggbb` of class `c` in `palette`. */
export function paletteHex(palette: Uint8Array, c: number): string {
  return `#${paletteColour(palette, c).map((v) => v.toString(16).padStart(2, '0')).join('')}`;
}

/** A palette as fast-png wants it: 256 entries of `[r, g, b]` (no alpha, so no tRNS); cached per table. */
const entriesCache = new WeakMap<Uint8Array, number[][]>();
function paletteEntries(palette: Uint8Array): number[][] {
  if (palette.length !== 256 * 3) throw new RangeError(`palette has ${palette.length} bytes, expected 768`);
  let e = entriesCache.get(palette);
  if (!e) {
    e = Array.from({ length: 256 }, (_, i) => paletteColour(palette, i));
    entriesCache.set(palette, e);
  }
  return e;
}

/**
 * Encode class indices `[height, width]` uint8 as an 8-bit palette PNG with a full 256-entry
 * palette (default VOC's; pass classPalette(background) so every class keeps its tagseg colour,
 * 255 = void VOC's). Deterministic: same indices and palette, same bytes.
 */
export function encodeIndexedPng(indices: Uint8Array, width: number, height: number, palette: Uint8Array = VOC_PALETTE): Uint8Array {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`encodeIndexedPng: bad size ${width}x${height}`);
  }
  if (indices.length !== width * height) {
    throw new RangeError(`encodeIndexedPng: ${indices.length} indices for a ${width}x${height} mask`);
  }
  return encodePng(
    { width, height, data: indices, depth: 8, channels: 1, palette: paletteEntries(palette) },
    { zlib: { level: 6 } },
  );
}

/** Class indices of a decoded mask: `data` is `[height, width]` uint8, row-major. */
export interface IndexedMask {
  data: Uint8Array;
  width: number;
  height: number;
}

/** Unpack 1/2/4-bit samples (rows padded to whole bytes, as PNG stores them) to one byte each. */
function unpackSubByte(packed: ArrayLike<number>, width: number, height: number, depth: number): Uint8Array {
  const out = new Uint8Array(width * height);
  const rowBytes = Math.ceil((width * depth) / 8);
  const perByte = 8 / depth;
  const mask = (1 << depth) - 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const byte = packed[y * rowBytes + Math.floor(x / perByte)];
      const shift = 8 - depth * ((x % perByte) + 1);
      out[y * width + x] = (byte >> shift) & mask;
    }
  }
  return out;
}

/**
 * Decode a label mask PNG to class indices. Accepted: palette PNGs (any bit depth; the palette
 * index is the class, whatever the colours) and 8-bit greyscale PNGs (grey value = class, as
 * written by many tools). RGB masks, alpha, 16-bit grey and non-PNG files are rejected with a
 * TagsegError naming `file`: guessing classes from colours would silently mislabel pixels.
 */
export function decodeIndexedPng(bytes: Uint8Array, file: string): IndexedMask {
  if (!hasPngSignature(bytes)) {
    throw new TagsegError('mask is not a PNG file', {
      file,
      hint: 'label masks must be palette or 8-bit greyscale PNGs whose pixel values are class indices',
    });
  }
  let png: ReturnType<typeof decodePng>;
  try {
    png = decodePng(bytes);
  } catch (err) {
    throw new TagsegError(`cannot decode mask PNG (${messageOf(err)})`, { file, cause: err });
  }
  const { width, height, depth, channels } = png;
  if (png.palette && channels === 1) {
    const data =
      depth === 8 ? toUint8(png.data, width * height, file) : unpackSubByte(png.data, width, height, depth);
    return { data, width, height };
  }
  if (!png.palette && channels === 1 && depth === 8) {
    return { data: toUint8(png.data, width * height, file), width, height };
  }
  const kind = png.palette
    ? 'palette'
    : `${depth}-bit ${['', 'greyscale', 'greyscale+alpha', 'RGB', 'RGBA'][channels] ?? `${channels}-channel`}`;
  throw new TagsegError(`mask is a ${kind} PNG, not a palette or 8-bit greyscale PNG`, {
    file,
    hint: 'convert colour-coded masks to class indices first (pixel value = class index, 255 = void)',
  });
}

function toUint8(data: ArrayLike<number> & { buffer?: ArrayBufferLike }, n: number, file: string): Uint8Array {
  if (data.length !== n) {
    throw new TagsegError(`mask PNG holds ${data.length} pixels, expected ${n}`, { file });
  }
  if (data instanceof Uint8Array) return new Uint8Array(data.buffer, data.byteOffset, data.length);
  return Uint8Array.from(data);
}
