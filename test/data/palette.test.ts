import { encode as encodePng } from 'fast-png';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { TagsegError } from '../../pipeline/errors.js';
import { VOC_PALETTE, classPalette, decodeIndexedPng, encodeIndexedPng, paletteColour, paletteHex } from '../../data/palette.js';

const colour = (i: number) => Array.from(VOC_PALETTE.subarray(i * 3, i * 3 + 3));

function expectError(fn: () => unknown, file: string, reason: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(TagsegError);
  expect((caught as TagsegError).file).toBe(file);
  expect((caught as TagsegError).reason).toMatch(reason);
}

describe('VOC palette', () => {
  it('matches the published VOC colours', () => {
    expect(VOC_PALETTE.length).toBe(768);
    expect(colour(0)).toEqual([0, 0, 0]);
    expect(colour(1)).toEqual([128, 0, 0]);
    expect(colour(2)).toEqual([0, 128, 0]);
    expect(colour(3)).toEqual([128, 128, 0]);
    expect(colour(4)).toEqual([0, 0, 128]);
    expect(colour(15)).toEqual([192, 128, 128]); // person
    expect(colour(20)).toEqual([0, 64, 128]); // tvmonitor
    expect(colour(255)).toEqual([224, 224, 192]); // void
  });

  it('has 256 distinct colours', () => {
    const set = new Set<string>();
    for (let i = 0; i < 256; i++) set.add(colour(i).join(','));
    expect(set.size).toBe(256);
  });
});

describe('classPalette (one palette for PNGs, report and overlays)', () => {
  it('is VOC with a background class at 0', () => {
    const p = classPalette(0);
    expect(Buffer.from(p).equals(Buffer.from(VOC_PALETTE))).toBe(true);
    expect(paletteColour(p, 0)).toEqual([0, 0, 0]);
    expect(paletteHex(p, 15)).toBe('#c08080');
  });

  it('without a background class (MSRC-v2): VOC shifted by one, no class black, void kept', () => {
    for (const bg of [null, 3]) {
      const p = classPalette(bg);
      expect(paletteColour(p, 0)).toEqual([128, 0, 0]); // MSRC-v2 building: VOC's colour 1, not black
      expect(paletteColour(p, 22)).toEqual(colour(23));
      expect(paletteColour(p, 255)).toEqual([224, 224, 192]);
      for (let c = 0; c < 254; c++) expect(paletteColour(p, c)).not.toEqual([0, 0, 0]);
      const set = new Set<string>();
      for (let c = 0; c < 256; c++) set.add(paletteColour(p, c).join(','));
      expect(set.size).toBe(256);
    }
  });

  it('is written into the PNG while pixel values stay the class indices', async () => {
    const idx = new Uint8Array([0, 1, 22, 255]);
    const png = encodeIndexedPng(idx, 2, 2, classPalette(null));
    expect(Array.from(decodeIndexedPng(png, 'm.png').data)).toEqual([0, 1, 22, 255]);
    const { data } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    expect(Array.from(data)).toEqual([...colour(1), ...colour(2), ...colour(23), 224, 224, 192]);
    // Negative control: the default (VOC) palette paints class 0 black.
    const voc = await sharp(encodeIndexedPng(idx, 2, 2)).removeAlpha().raw().toBuffer();
    expect(Array.from(voc.subarray(0, 3))).toEqual([0, 0, 0]);
  });

  it('rejects a palette of the wrong size', () => {
    expect(() => encodeIndexedPng(new Uint8Array(4), 2, 2, new Uint8Array(30))).toThrow(RangeError);
  });
});

describe('encodeIndexedPng / decodeIndexedPng', () => {
  it('round-trips indices, void included, on a non-square mask', () => {
    const w = 7;
    const h = 5;
    const idx = new Uint8Array(w * h);
    for (let i = 0; i < idx.length; i++) idx[i] = (i * 37) % 23;
    idx[3] = 255;
    idx[w * h - 1] = 255;
    const png = encodeIndexedPng(idx, w, h);
    // IHDR: bit depth 8, colour type 3 (indexed).
    expect(png[24]).toBe(8);
    expect(png[25]).toBe(3);
    const back = decodeIndexedPng(png, 'mem.png');
    expect(back.width).toBe(w);
    expect(back.height).toBe(h);
    expect(Array.from(back.data)).toEqual(Array.from(idx));
  });

  it('is deterministic', () => {
    const idx = new Uint8Array([0, 1, 2, 255, 3, 4]);
    expect(Buffer.from(encodeIndexedPng(idx, 3, 2)).equals(Buffer.from(encodeIndexedPng(idx, 3, 2)))).toBe(true);
  });

  it('shows VOC colours to other readers (sharp sees index 1 as (128,0,0))', async () => {
    const idx = new Uint8Array([0, 1, 2, 255]);
    const png = encodeIndexedPng(idx, 2, 2);
    const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    expect(info.channels).toBe(3);
    expect(Array.from(data)).toEqual([0, 0, 0, 128, 0, 0, 0, 128, 0, 224, 224, 192]);
  });

  it('rejects a wrong number of indices', () => {
    expect(() => encodeIndexedPng(new Uint8Array(5), 2, 2)).toThrow(RangeError);
  });

  it('reads 8-bit greyscale PNGs as indices', () => {
    const png = encodePng({ width: 3, height: 1, data: new Uint8Array([0, 7, 255]), depth: 8, channels: 1 });
    const m = decodeIndexedPng(png, 'grey.png');
    expect(Array.from(m.data)).toEqual([0, 7, 255]);
  });

  it('unpacks sub-byte (4-bit) palette PNGs', () => {
    // 3x2 at 4 bits: rows padded to 2 bytes; indices [1,2,3] and [15,0,5].
    const packed = new Uint8Array([0x12, 0x30, 0xf0, 0x50]);
    const palette = Array.from({ length: 16 }, (_, i) => colour(i));
    const png = encodePng({ width: 3, height: 2, data: packed, depth: 4, channels: 1, palette });
    const m = decodeIndexedPng(png, 'p4.png');
    expect(Array.from(m.data)).toEqual([1, 2, 3, 15, 0, 5]);
  });

  it('rejects RGB masks, naming the file', async () => {
    const rgb = await sharp(Buffer.from([128, 0, 0, 0, 128, 0]), { raw: { width: 2, height: 1, channels: 3 } }).png().toBuffer();
    expectError(() => decodeIndexedPng(rgb, '/x/rgb.png'), '/x/rgb.png', /8-bit RGB PNG/);
  });

  it('rejects 16-bit greyscale masks', () => {
    const png = encodePng({ width: 2, height: 1, data: new Uint16Array([1, 2]), depth: 16, channels: 1 });
    expectError(() => decodeIndexedPng(png, '/x/g16.png'), '/x/g16.png', /16-bit greyscale/);
  });

  it('rejects non-PNG and truncated files, naming the file', () => {
    expectError(() => decodeIndexedPng(new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3, 4]), '/x/a.png'), '/x/a.png', /not a PNG/);
    const png = encodeIndexedPng(new Uint8Array(64).fill(3), 8, 8);
    expectError(() => decodeIndexedPng(png.subarray(0, 40), '/x/t.png'), '/x/t.png', /cannot decode/);
  });
});
