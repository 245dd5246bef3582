import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadItems, type LoadError, type LoadedItem } from '../../data/load.js';
import type { ItemSpec, Manifest } from '../../data/manifest.js';
import { encodeIndexedPng } from '../../data/palette.js';
import { generateSynthetic, mulberry32 } from '../../data/synth.js';
import { scanVoc } from '../../data/voc.js';
import { TagsegError } from '../../pipeline/errors.js';
import { setQuiet } from '../../pipeline/log.js';
import { makeTemp, rmTemp, writeRgb } from './helpers.js';

setQuiet(true);
let dir: string;
beforeAll(async () => {
  dir = await makeTemp();
});
afterAll(async () => {
  await rmTemp(dir);
});

async function collect<T>(gen: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of gen) out.push(x);
  return out;
}

/** Manifest helpers: a VOC-ish layout under `root` with classes bg, cat, dog (void 255). */
const CLASSES = ['bg', 'cat', 'dog'];
function manifest(root: string, items: ItemSpec[]): Manifest {
  return { root, classes: CLASSES, background: 0, void: 255, items };
}

async function writeMask(file: string, w: number, h: number, f: (x: number, y: number) => number): Promise<void> {
  const m = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) m[y * w + x] = f(x, y);
  await fs.writeFile(file, encodeIndexedPng(m, w, h));
}

describe('loadItems', () => {
  let root: string;
  let good: ItemSpec[];
  beforeAll(async () => {
    root = path.join(dir, 'ds');
    await fs.mkdir(root, { recursive: true });
    const p = (s: string) => path.join(root, s);
    // big0 is large (slow to decode) so later items finish first under concurrency.
    const noise = Buffer.alloc(700 * 700 * 3);
    const rng = mulberry32(1);
    for (let i = 0; i < noise.length; i++) noise[i] = Math.floor(rng() * 256);
    await sharp(noise, { raw: { width: 700, height: 700, channels: 3 } }).png({ compressionLevel: 9 }).toFile(p('big0.png'));
    await writeMask(p('big0_m.png'), 700, 700, (x) => (x < 350 ? 1 : 0));
    for (let i = 1; i < 8; i++) await writeRgb(p(`s${i}.jpg`), 20 + i, 10);
    // s1: one single dog pixel (lost by the 8 px downscale) plus void: tags must still include dog.
    await writeMask(p('s1_m.png'), 21, 10, (x, y) => (x === 10 && y === 5 ? 2 : x > 15 ? 255 : x > 5 ? 1 : 0));
    good = [
      { id: 'big0', split: 'train', imagePath: p('big0.png'), maskPath: p('big0_m.png'), tags: null },
      { id: 's1', split: 'train', imagePath: p('s1.jpg'), maskPath: p('s1_m.png'), tags: null },
      ...[2, 3, 4, 5, 6, 7].map((i) => ({ id: `s${i}`, split: 'val', imagePath: p(`s${i}.jpg`), maskPath: null, tags: [i % 2 ? 1 : 2] })),
    ];
  });

  it('yields every item in manifest order under concurrency, at working size', async () => {
    const items = await collect(loadItems(manifest(root, good), { size: 8, concurrency: 4, onError: 'fail' }));
    expect(items.map((i) => i.id)).toEqual(good.map((g) => g.id));
    const big = items[0] as LoadedItem;
    expect([big.image.width, big.image.height, big.image.origWidth, big.image.origHeight]).toEqual([8, 8, 700, 700]);
    expect(big.image.rgb.length).toBe(8 * 8 * 3);
    expect(big.mask?.length).toBe(64);
    expect(big.tags).toEqual([1]); // derived from the mask, background dropped
    const s1 = items[1];
    expect([s1.image.width, s1.image.height]).toEqual([8, 4]);
    expect(s1.mask?.length).toBe(32);
    expect(s1.mask).not.toContain(2); // the dog pixel is gone at 8 px...
    expect(s1.tags).toEqual([1, 2]); // ...but tags come from the full-size mask; void never a tag
    expect(items[2].tags).toEqual([2]);
    expect(items[2].mask).toBeNull();
    expect(items[3].tags).toEqual([1]);
  });

  it('skip: bad items are left out and collected, in manifest order', async () => {
    const p = (s: string) => path.join(root, s);
    await fs.writeFile(p('corrupt.jpg'), 'not a jpeg');
    await writeRgb(p('r1.png'), 12, 8);
    await writeMask(p('r1_m.png'), 8, 12, () => 1); // wrong size
    await writeMask(p('r2_m.png'), 12, 8, (x) => (x < 3 ? 9 : 1)); // class 9 does not exist
    await writeMask(p('r3_m.png'), 12, 8, (x) => (x < 3 ? 255 : 0)); // background + void only
    const bad: ItemSpec[] = [
      { id: 'corrupt', split: 'train', imagePath: p('corrupt.jpg'), maskPath: null, tags: [1] },
      { id: 'missing', split: 'train', imagePath: p('missing.jpg'), maskPath: null, tags: [1] },
      { id: 'wrongsize', split: 'train', imagePath: p('r1.png'), maskPath: p('r1_m.png'), tags: null },
      { id: 'badvalue', split: 'train', imagePath: p('r1.png'), maskPath: p('r2_m.png'), tags: null },
      { id: 'onlybg', split: 'train', imagePath: p('r1.png'), maskPath: p('r3_m.png'), tags: null },
      { id: 'bgtag', split: 'train', imagePath: p('r1.png'), maskPath: null, tags: [0, 1] },
      { id: 'notags', split: 'train', imagePath: p('r1.png'), maskPath: null, tags: null },
    ];
    const mixed = [good[1], bad[0], good[2], bad[1], bad[2], good[3], bad[3], bad[4], bad[5], bad[6], good[4]];
    const errors: LoadError[] = [];
    const items = await collect(loadItems(manifest(root, mixed), { size: 0, concurrency: 3, onError: 'skip', errors }));
    expect(items.map((i) => i.id)).toEqual(['s1', 's2', 's3', 's4']);
    expect(errors.map((e) => e.id)).toEqual(['corrupt', 'missing', 'wrongsize', 'badvalue', 'onlybg', 'bgtag', 'notags']);
    expect(errors.map((e) => e.file)).toEqual([p('corrupt.jpg'), p('missing.jpg'), p('r1_m.png'), p('r2_m.png'), p('r3_m.png'), p('r1.png'), p('r1.png')]);
    expect(errors[0].reason).toMatch(/cannot decode image/);
    expect(errors[1].reason).toMatch(/not found/);
    expect(errors[2].reason).toBe('mask is 8x12 but image is 12x8');
    expect(errors[3].reason).toMatch(/mask has value 9 but the dataset has 3 classes/);
    expect(errors[4].reason).toMatch(/empty tag list/);
    expect(errors[5].reason).toMatch(/background/);
    expect(errors[6].reason).toMatch(/no tags and no mask/);

    // fail: the first bad item ends the iteration with its TagsegError, after the good ones before it.
    const seen: string[] = [];
    let caught: unknown;
    try {
      for await (const it of loadItems(manifest(root, mixed), { size: 0, concurrency: 3, onError: 'fail' })) seen.push(it.id);
    } catch (err) {
      caught = err;
    }
    expect(seen).toEqual(['s1']);
    expect(caught).toBeInstanceOf(TagsegError);
    expect((caught as TagsegError).file).toBe(p('corrupt.jpg'));
  });

  it('skip only covers TagsegErrors: bugs still propagate', async () => {
    // A manifest without a class list makes mask checking throw a TypeError (a bug, not bad data).
    const broken = { ...manifest(root, good.slice(1, 2)), classes: undefined as unknown as string[] };
    await expect(collect(loadItems(broken, { size: 8, concurrency: 2, onError: 'skip', errors: [] }))).rejects.toThrow(TypeError);
  });

  it('rejects bad options', async () => {
    await expect(collect(loadItems(manifest(root, good), { size: 8, concurrency: 0, onError: 'fail' }))).rejects.toThrow(RangeError);
  });

  it('on a synthetic VOC set, mask-derived tags equal tags.csv', async () => {
    const out = path.join(dir, 'syn');
    await generateSynthetic({ out, images: 5, size: 32, classes: 3, valFraction: 0.2, seed: 11 });
    const m = await scanVoc(out, {});
    expect(m.items.map((i) => i.split)).toEqual(['train', 'train', 'train', 'train', 'val']);
    const fromCsv = new Map(m.items.map((i) => [i.id, i.tags]));
    const derived = await collect(
      loadItems({ ...m, items: m.items.map((i) => ({ ...i, tags: null })) }, { size: 16, concurrency: 2, onError: 'fail' }),
    );
    expect(derived.length).toBe(5);
    for (const it of derived) {
      expect(it.tags).toEqual(fromCsv.get(it.id));
      expect([it.image.width, it.image.height, it.mask?.length]).toEqual([16, 16, 256]);
    }
  });
});
