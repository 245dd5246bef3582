import { encode as encodePng } from 'fast-png';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeImage, decodeMask, resizeNearest, workingSize } from '../../data/decode.js';
import { encodeIndexedPng } from '../../data/palette.js';
import { expectTagsegError, makeTemp, rmTemp, writeRgb } from './helpers.js';

let dir: string;
beforeAll(async () => {
  dir = await makeTemp();
});
afterAll(async () => {
  await rmTemp(dir);
});

/** Raw pixels `[h, w, c]` filled with one value per channel. */
function fill(w: number, h: number, px: number[]): Buffer {
  const b = Buffer.alloc(w * h * px.length);
  for (let i = 0; i < w * h; i++) b.set(px, i * px.length);
  return b;
}

const pixel = (rgb: Uint8Array, w: number, x: number, y: number) => Array.from(rgb.subarray((y * w + x) * 3, (y * w + x) * 3 + 3));

describe('workingSize', () => {
  it('sets the long side to size, keeps aspect, 0 keeps original', () => {
    expect(workingSize(40, 20, 20)).toEqual({ width: 20, height: 10 });
    expect(workingSize(20, 40, 10)).toEqual({ width: 5, height: 10 });
    expect(workingSize(8, 4, 16)).toEqual({ width: 16, height: 8 });
    expect(workingSize(33, 10, 16)).toEqual({ width: 16, height: 5 });
    expect(workingSize(1000, 1, 10)).toEqual({ width: 10, height: 1 });
    expect(workingSize(40, 20, 0)).toEqual({ width: 40, height: 20 });
    expect(() => workingSize(4, 4, -1)).toThrow(RangeError);
  });
});

describe('decodeImage: every input kind becomes 8-bit sRGB RGB', () => {
  it('greyscale PNG', async () => {
    const f = path.join(dir, 'grey.png');
    // fast-png, because sharp writes single-channel raw input as RGB.
    await fs.writeFile(f, encodePng({ width: 6, height: 4, data: new Uint8Array(24).fill(100), channels: 1, depth: 8 }));
    expect((await sharp(f).metadata()).channels).toBe(1);
    const im = await decodeImage(f, 0);
    expect([im.width, im.height, im.origWidth, im.origHeight]).toEqual([6, 4, 6, 4]);
    expect(im.rgb.length).toBe(6 * 4 * 3);
    expect(Array.from(new Set(im.rgb))).toEqual([100]);
  });

  it('greyscale + alpha PNG (alpha dropped)', async () => {
    const f = path.join(dir, 'ga.png');
    await fs.writeFile(f, encodePng({ width: 2, height: 2, data: new Uint8Array([50, 0, 50, 255, 50, 128, 50, 255]), channels: 2, depth: 8 }));
    expect((await sharp(f).metadata()).channels).toBe(2);
    const im = await decodeImage(f, 0);
    expect(Array.from(im.rgb)).toEqual(new Array(12).fill(50));
  });

  it('RGBA PNG (alpha dropped, colours kept)', async () => {
    const f = path.join(dir, 'rgba.png');
    await sharp(fill(3, 2, [10, 20, 30, 0]), { raw: { width: 3, height: 2, channels: 4 } }).png().toFile(f);
    const im = await decodeImage(f, 0);
    expect(pixel(im.rgb, 3, 2, 1)).toEqual([10, 20, 30]);
    expect(im.rgb.length).toBe(18);
  });

  it('CMYK JPEG', async () => {
    const f = path.join(dir, 'cmyk.jpg');
    await sharp(fill(16, 16, [200, 40, 30]), { raw: { width: 16, height: 16, channels: 3 } })
      .toColourspace('cmyk')
      .jpeg({ quality: 100 })
      .toFile(f);
    expect((await sharp(f).metadata()).space).toBe('cmyk');
    const im = await decodeImage(f, 0);
    expect(im.rgb.length).toBe(16 * 16 * 3);
    const [r, g, b] = pixel(im.rgb, 16, 8, 8);
    expect(r).toBeGreaterThan(160);
    expect(g).toBeLessThan(80);
    expect(b).toBeLessThan(80);
  });

  it('16-bit RGB PNG is scaled to 8 bits', async () => {
    const f = path.join(dir, 'rgb16.png');
    const data = new Uint16Array(2 * 2 * 3);
    for (let i = 0; i < 4; i++) data.set([200 * 257, 50 * 257, 30 * 257], i * 3);
    await fs.writeFile(f, encodePng({ width: 2, height: 2, data, channels: 3, depth: 16 }));
    expect((await sharp(f).metadata()).depth).toBe('ushort');
    const im = await decodeImage(f, 0);
    expect(pixel(im.rgb, 2, 1, 1)).toEqual([200, 50, 30]);
  });

  it('palette PNG gives palette colours', async () => {
    const f = path.join(dir, 'pal.png');
    await fs.writeFile(f, encodeIndexedPng(new Uint8Array([1, 2, 0, 255]), 2, 2));
    const im = await decodeImage(f, 0);
    expect(Array.from(im.rgb)).toEqual([128, 0, 0, 0, 128, 0, 0, 0, 0, 224, 224, 192]);
  });

  it('applies EXIF orientation 6 (90 degrees clockwise): width and height swap', async () => {
    const f = path.join(dir, 'exif6.png');
    const raw = fill(4, 2, [0, 0, 0]);
    raw.set([255, 0, 0], 0); // top-left red
    raw.set([0, 255, 0], 3 * 3); // top-right green
    await sharp(raw, { raw: { width: 4, height: 2, channels: 3 } }).png().withMetadata({ orientation: 6 }).toFile(f);
    expect((await sharp(f).metadata()).orientation).toBe(6);
    const im = await decodeImage(f, 0);
    expect([im.width, im.height, im.origWidth, im.origHeight]).toEqual([2, 4, 2, 4]);
    expect(pixel(im.rgb, 2, 1, 0)).toEqual([255, 0, 0]); // clockwise: top-left -> top-right
    expect(pixel(im.rgb, 2, 1, 3)).toEqual([0, 255, 0]); // top-right -> bottom-right
  });

  it('resizes so the long side equals size, up or down', async () => {
    const f = path.join(dir, 'wide.png');
    await writeRgb(f, 40, 20, (x) => (x < 20 ? [255, 0, 0] : [0, 0, 255]));
    const down = await decodeImage(f, 20);
    expect([down.width, down.height, down.origWidth, down.origHeight]).toEqual([20, 10, 40, 20]);
    expect(down.rgb.length).toBe(20 * 10 * 3);
    expect(pixel(down.rgb, 20, 2, 5)).toEqual([255, 0, 0]);
    expect(pixel(down.rgb, 20, 17, 5)).toEqual([0, 0, 255]);
    const up = await decodeImage(f, 80);
    expect([up.width, up.height]).toEqual([80, 40]);
    const same = await decodeImage(f, 0);
    expect([same.width, same.height]).toEqual([40, 20]);
  });

  it('missing, corrupt and truncated files: TagsegError naming the file', async () => {
    const missing = path.join(dir, 'nope.jpg');
    await expectTagsegError(decodeImage(missing, 0), missing, /not found/);
    const junk = path.join(dir, 'junk.jpg');
    await fs.writeFile(junk, 'this is not an image at all');
    await expectTagsegError(decodeImage(junk, 0), junk, /cannot decode image/);
    const full = await sharp(fill(64, 64, [1, 2, 3]).map((_, i) => (i * 7) % 256), { raw: { width: 64, height: 64, channels: 3 } })
      .jpeg()
      .toBuffer();
    const trunc = path.join(dir, 'trunc.jpg');
    await fs.writeFile(trunc, full.subarray(0, 300));
    await expectTagsegError(decodeImage(trunc, 0), trunc, /cannot decode image/);
  });
});

describe('decodeMask / resizeNearest', () => {
  it('resizes with nearest: no label is invented', async () => {
    const w = 9;
    const h = 6;
    const idx = new Uint8Array(w * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) idx[y * w + x] = x < 4 ? 1 : (x + y) % 2 ? 7 : 255;
    const f = path.join(dir, 'mask.png');
    await fs.writeFile(f, encodeIndexedPng(idx, w, h));
    const m = await decodeMask(f, w, h, 4); // -> 4x3
    // Source columns sampled: floor((x + 0.5) * 9 / 4) = 1, 3, 5, 7; rows: 1, 3, 5.
    expect(Array.from(m)).toEqual([1, 1, 255, 255, 1, 1, 255, 255, 1, 1, 255, 255]);
    const odd = await decodeMask(f, w, h, 5); // -> 5x3 (6 * 5 / 9 = 3.33): only source labels
    expect(odd.length).toBe(15);
    for (const v of odd) expect([1, 7, 255]).toContain(v);
    expect(odd).toContain(7);
    const full = await decodeMask(f, w, h, 0);
    expect(Array.from(full)).toEqual(Array.from(idx));
  });

  it('samples the nearest source pixel centre', () => {
    // 4x1 -> 2x1 takes source pixels 0.5*2=1 and 1.5*2=3 -> floor(1)=1, floor(3)=3
    expect(Array.from(resizeNearest(new Uint8Array([10, 11, 12, 13]), 4, 1, 2, 1))).toEqual([11, 13]);
    // 2x1 -> 4x1 duplicates
    expect(Array.from(resizeNearest(new Uint8Array([5, 6]), 2, 1, 4, 1))).toEqual([5, 5, 6, 6]);
  });

  it('a mask of another size than its image: TagsegError with both sizes', async () => {
    const f = path.join(dir, 'mask86.png');
    await fs.writeFile(f, encodeIndexedPng(new Uint8Array(8 * 6), 8, 6));
    const err = await expectTagsegError(decodeMask(f, 10, 6, 0), f, /^mask is 8x6 but image is 10x6$/);
    expect(err.hint).toMatch(/same size/);
    const rot = await expectTagsegError(decodeMask(f, 6, 8, 0), f, /mask is 8x6 but image is 6x8/);
    expect(rot.hint).toMatch(/EXIF/);
  });

  it('an RGB mask or a missing mask: TagsegError naming the mask', async () => {
    const f = path.join(dir, 'rgbmask.png');
    await writeRgb(f, 4, 4);
    await expectTagsegError(decodeMask(f, 4, 4, 0), f, /not a palette/);
    const missing = path.join(dir, 'nomask.png');
    await expectTagsegError(decodeMask(missing, 4, 4, 0), missing, /mask file not found/);
  });
});
