import * as fs from 'node:fs/promises';
import sharp from 'sharp';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import { decodeIndexedPng, type IndexedMask } from './palette.js';

/**
 * Image and mask decoding at a "working size". Images of any kind (grey, grey+alpha, RGBA, CMYK,
 * 16-bit, palette, EXIF-rotated) become one thing the networks can take: 8-bit sRGB RGB,
 * `[height, width, 3]`, long side = `size`. Masks are resized with NEAREST to exactly the same
 * working size, because interpolating class indices would invent classes at boundaries.
 */

export interface DecodedImage {
  /** `[height, width, 3]` uint8 sRGB, row-major, no padding. */
  rgb: Uint8Array;
  /** Working size (after EXIF orientation and resize). */
  width: number;
  height: number;
  /** Size after EXIF orientation, before resize: what the mask must match. */
  origWidth: number;
  origHeight: number;
}

/**
 * Working size for an image of `width x height`: the long side becomes `size` (up or down),
 * the short side is scaled by the same factor and rounded (at least 1 px); `size = 0` keeps the
 * original. Computed here once and passed to sharp as an exact width and height (rather than
 * letting `fit: 'inside'` round on its own) so that image and mask always get the same size.
 */
export function workingSize(width: number, height: number, size: number): { width: number; height: number } {
  if (!Number.isInteger(size) || size < 0) throw new RangeError(`working size must be an integer >= 0, got ${size}`);
  if (size === 0) return { width, height };
  const scale = size / Math.max(width, height);
  return width >= height
    ? { width: size, height: Math.max(1, Math.round(height * scale)) }
    : { width: Math.max(1, Math.round(width * scale)), height: size };
}

/**
 * Largest image decoded, in pixels: sharp's own default `limitInputPixels` (0x3FFF squared), set
 * explicitly so that a decompression bomb (a small file declaring a huge size) is refused from
 * its header, before any pixel is inflated.
 */
export const MAX_INPUT_PIXELS = 0x3fff * 0x3fff;

async function readInput(file: string, what: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // The code, not the message: Node's message repeats the absolute path, which the file field already names.
    const reason =
      code === 'ENOENT'
        ? `${what} file not found`
        : code === 'EISDIR'
          ? `${what} path is a directory`
          : code === 'ELOOP'
            ? `${what} path is a symlink loop`
            : `cannot read ${what} (${code ?? messageOf(err)})`;
    throw new TagsegError(reason, { file, cause: err });
  }
}

/**
 * Decode `file` to 8-bit sRGB RGB at working size `size` (long side; 0 = original).
 * EXIF orientation is applied first, so `origWidth/origHeight` are the displayed size.
 * Alpha is dropped (not composited), as PIL's `convert('RGB')` does, so colours match
 * reference implementations. Resize is bilinear. Unreadable, missing or corrupt files give a
 * TagsegError naming the file.
 */
export async function decodeImage(file: string, size: number): Promise<DecodedImage> {
  const input = await readInput(file, 'image');
  try {
    // Orientation + colour conversion first; metadata of this stage gives the oriented size.
    // sharp's default failOn ('warning') rejects truncated files instead of padding them grey.
    const oriented = sharp(input, { limitInputPixels: MAX_INPUT_PIXELS }).autoOrient();
    // The header alone, without the limit, so an oversized image gets a message saying so.
    const meta = await sharp(input, { limitInputPixels: false }).metadata();
    if ((meta.width ?? 0) * (meta.height ?? 0) > MAX_INPUT_PIXELS) {
      throw new TagsegError(`image declares ${meta.width}x${meta.height} pixels, above the decode limit of ${MAX_INPUT_PIXELS} (a decompression bomb?)`, {
        file,
        hint: 'downscale the image below 268 megapixels or remove it from the dataset',
      });
    }
    const swap = meta.orientation !== undefined && meta.orientation >= 5;
    const origWidth = swap ? meta.height : meta.width;
    const origHeight = swap ? meta.width : meta.height;
    if (!origWidth || !origHeight) throw new Error('image has no size');
    const target = workingSize(origWidth, origHeight, size);
    let pipeline = oriented.removeAlpha().toColourspace('srgb');
    if (target.width !== origWidth || target.height !== origHeight) {
      pipeline = pipeline.resize({ width: target.width, height: target.height, fit: 'fill', kernel: 'linear' });
    }
    const { data, info } = await pipeline.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.channels !== 3 || info.width !== target.width || info.height !== target.height) {
      throw new Error(`decoder returned ${info.width}x${info.height}x${info.channels}, expected ${target.width}x${target.height}x3`);
    }
    return {
      rgb: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      width: info.width,
      height: info.height,
      origWidth,
      origHeight,
    };
  } catch (err) {
    if (err instanceof TagsegError) throw err;
    throw new TagsegError(`cannot decode image (${messageOf(err)})`, {
      file,
      hint: 'the file is corrupt, truncated or not an image; re-export it or remove it from the dataset',
      cause: err,
    });
  }
}

/**
 * Nearest-neighbour resize of `[srcH, srcW]` indices to `[dstH, dstW]`, sampling the source pixel
 * whose centre is nearest each destination pixel centre (no label is ever invented).
 */
export function resizeNearest(src: Uint8Array, srcW: number, srcH: number, dstW: number, dstH: number): Uint8Array {
  if (srcW === dstW && srcH === dstH) return src;
  const out = new Uint8Array(dstW * dstH);
  const xs = new Int32Array(dstW);
  for (let x = 0; x < dstW; x++) xs[x] = Math.min(srcW - 1, Math.floor(((x + 0.5) * srcW) / dstW));
  for (let y = 0; y < dstH; y++) {
    const sy = Math.min(srcH - 1, Math.floor(((y + 0.5) * srcH) / dstH));
    const row = sy * srcW;
    const o = y * dstW;
    for (let x = 0; x < dstW; x++) out[o + x] = src[row + xs[x]];
  }
  return out;
}

/**
 * Read label mask `file` (palette or 8-bit grey PNG, see `decodeIndexedPng`) at full size and
 * check it against its image's oriented size `origWidth x origHeight` (from `decodeImage`): a
 * mask of any other size is an error, not something to stretch, because it means mask and image
 * do not belong together. Returns `[origHeight, origWidth]` uint8 class indices.
 */
export async function readMask(file: string, origWidth: number, origHeight: number): Promise<IndexedMask> {
  const bytes = await readInput(file, 'mask');
  const mask = decodeIndexedPng(bytes, file);
  if (mask.width !== origWidth || mask.height !== origHeight) {
    const rotated = mask.width === origHeight && mask.height === origWidth;
    throw new TagsegError(`mask is ${mask.width}x${mask.height} but image is ${origWidth}x${origHeight}`, {
      file,
      hint: rotated
        ? 'the mask matches the image before EXIF rotation; strip the orientation tag from the image or rotate the mask'
        : 'the mask must have the same size as its image',
    });
  }
  return mask;
}

/**
 * `readMask`, then NEAREST resize to the image's working size for `size` (same rule as
 * `decodeImage`, so mask and image pixels correspond). Returns `[height, width]` uint8 indices.
 */
export async function decodeMask(file: string, origWidth: number, origHeight: number, size: number): Promise<Uint8Array> {
  const mask = await readMask(file, origWidth, origHeight);
  const target = workingSize(origWidth, origHeight, size);
  return resizeNearest(mask.data, mask.width, mask.height, target.width, target.height);
}
