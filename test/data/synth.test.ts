import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TagsegError } from '../../pipeline/errors.js';
import { setQuiet } from '../../pipeline/log.js';
import { decodeIndexedPng } from '../../data/palette.js';
import { MAX_SYNTH_CLASSES, generateSynthetic, mulberry32, synthClassNames, type SynthOptions } from '../../data/synth.js';
import { makeTemp, rmTemp } from './helpers.js';

let dir: string;
setQuiet(true);
const opts = (out: string, over: Partial<SynthOptions> = {}): SynthOptions => ({
  out,
  images: 6,
  size: 48,
  classes: 4,
  valFraction: 0.34,
  seed: 7,
  ...over,
});

async function listFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(root, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(path.relative(root, path.join(e.parentPath, e.name)));
  }
  return out.sort();
}

beforeAll(async () => {
  dir = await makeTemp();
  await generateSynthetic(opts(path.join(dir, 'a')));
});
afterAll(async () => {
  await rmTemp(dir);
});

describe('generateSynthetic', () => {
  it('is byte-identical for the same options and differs for another seed', async () => {
    await generateSynthetic(opts(path.join(dir, 'b')));
    const a = await listFiles(path.join(dir, 'a'));
    const b = await listFiles(path.join(dir, 'b'));
    expect(b).toEqual(a);
    expect(a.length).toBe(6 * 2 + 4);
    for (const f of a) {
      const [x, y] = await Promise.all([fs.readFile(path.join(dir, 'a', f)), fs.readFile(path.join(dir, 'b', f))]);
      expect(x.equals(y), f).toBe(true);
    }
    await generateSynthetic(opts(path.join(dir, 'c'), { seed: 8 }));
    const [ia, ic] = await Promise.all([
      fs.readFile(path.join(dir, 'a', 'JPEGImages', 'syn_0000.png')),
      fs.readFile(path.join(dir, 'c', 'JPEGImages', 'syn_0000.png')),
    ]);
    expect(ia.equals(ic)).toBe(false);
  });

  it('writes the VOC layout: classes.json, splits, tags.csv, PNG images', async () => {
    const root = path.join(dir, 'a');
    const classes = JSON.parse(await fs.readFile(path.join(root, 'classes.json'), 'utf8'));
    expect(classes).toEqual({ classes: synthClassNames(4), background: 0, void: 255 });
    expect(classes.classes[0]).toBe('background');
    expect(new Set(classes.classes).size).toBe(5);

    const read = async (s: string) => (await fs.readFile(path.join(root, 'ImageSets', 'Segmentation', `${s}.txt`), 'utf8')).split('\n').filter(Boolean);
    const train = await read('train');
    const val = await read('val');
    expect(val.length).toBe(2); // round(6 * 0.34)
    expect(train.length).toBe(4);
    const all = [...train, ...val].sort();
    expect(all).toEqual(['syn_0000', 'syn_0001', 'syn_0002', 'syn_0003', 'syn_0004', 'syn_0005']);

    const meta = await sharp(path.join(root, 'JPEGImages', 'syn_0003.png')).metadata();
    expect([meta.format, meta.width, meta.height, meta.channels]).toEqual(['png', 48, 48, 3]);
  });

  it('tags are exactly the classes present in each mask (never background)', async () => {
    const root = path.join(dir, 'a');
    const lines = (await fs.readFile(path.join(root, 'tags.csv'), 'utf8')).trim().split('\n');
    expect(lines[0]).toBe('image_id,tags');
    expect(lines.length).toBe(7);
    const names = synthClassNames(4);
    let multi = 0;
    for (const line of lines.slice(1)) {
      const [id, cell] = line.split(',');
      const tags = cell.split('|');
      expect(tags.length).toBeGreaterThanOrEqual(1);
      expect(tags.length).toBeLessThanOrEqual(3);
      expect(tags).not.toContain('background');
      if (tags.length > 1) multi++;
      const m = decodeIndexedPng(await fs.readFile(path.join(root, 'SegmentationClass', `${id}.png`)), id);
      expect([m.width, m.height]).toEqual([48, 48]);
      const present = [...new Set(m.data)].sort((x, y) => x - y);
      expect(present[0]).toBe(0); // shapes never cover the whole image
      expect(present.slice(1).map((c) => names[c])).toEqual(tags);
      // Every tagged class is visible (>= 2% of the image), not a sliver.
      for (const c of present.slice(1)) expect(m.data.filter((v) => v === c).length).toBeGreaterThanOrEqual(0.02 * 48 * 48);
    }
    expect(multi).toBeGreaterThan(0);
  });

  it('replaces an existing output atomically and leaves no temp dirs', async () => {
    const out = path.join(dir, 'r');
    await fs.mkdir(out);
    await fs.writeFile(path.join(out, 'stale.txt'), 'old');
    await generateSynthetic(opts(out, { images: 2, valFraction: 0 }));
    expect(await fs.readdir(out)).not.toContain('stale.txt');
    expect(await fs.readFile(path.join(out, 'ImageSets', 'Segmentation', 'val.txt'), 'utf8')).toBe('');
    const siblings = await fs.readdir(dir);
    expect(siblings.filter((s) => s.endsWith('.tmp') || s.includes('.old-'))).toEqual([]);
  });

  it('rejects bad options with a TagsegError', async () => {
    const out = path.join(dir, 'bad');
    await expect(generateSynthetic(opts(out, { classes: MAX_SYNTH_CLASSES + 1 }))).rejects.toThrow(TagsegError);
    await expect(generateSynthetic(opts(out, { images: 0 }))).rejects.toThrow(/images/);
    await expect(generateSynthetic(opts(out, { valFraction: 1 }))).rejects.toThrow(/valFraction/);
    await expect(fs.access(out)).rejects.toThrow();
  });

  it('has unique class names up to the maximum', () => {
    expect(new Set(synthClassNames(MAX_SYNTH_CLASSES)).size).toBe(MAX_SYNTH_CLASSES + 1);
  });

  it('mulberry32 is seeded and uniform-ish', () => {
    const a = mulberry32(1);
    const b = mulberry32(1);
    const xs = Array.from({ length: 1000 }, () => a());
    expect(Array.from({ length: 1000 }, () => b())).toEqual(xs);
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(mean).toBeGreaterThan(0.45);
    expect(mean).toBeLessThan(0.55);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
  });
});
