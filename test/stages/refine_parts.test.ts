/**
 * The refine stage's pure parts on hand-computed cases: maps -> scores/labels at the original
 * size, the ignore rule, sanity flags, the chain scorer, the PNG export, and one image end to end
 * through the CRF (a boundary the maps get wrong and the colours get right).
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeIndexedPng } from '../../data/palette.js';
import { DEFAULT_CRF_OPTIONS } from '../../ops/crf.js';
import { decide } from '../../stages/refine/confidence.js';
import { ChainScorer } from '../../stages/refine/evaluate.js';
import { PngExport, pngName } from '../../data/mask_png.js';
import { argmaxChannels, channelsToClasses, classScores } from '../../stages/refine/labels.js';
import { normalizeRows, refineImage, type RefineSettings } from '../../stages/refine/refine.js';
import { classPixelCounts, imageFlags } from '../../stages/refine/sanity.js';

const close = (a: ArrayLike<number>, b: number[], eps = 1e-6) => {
  expect(a.length).toBe(b.length);
  b.forEach((v, i) => expect(Math.abs(a[i] - v), `index ${i}: ${a[i]} vs ${v}`).toBeLessThan(eps));
};

describe('classScores', () => {
  it('upsamples bilinearly with half-pixel centres to the original size, pixel-major, tags only', () => {
    // two tags on a 1x2 grid -> 1x4: t0 = [1, .75, .25, 0], t1 = [0, .25, .75, 1]
    const s = classScores(Float32Array.from([1, 0, 0, 1]), [3, 5], 1, 2, 1, 4, { background: null, mode: 'threshold', threshold: 0.2, power: 1 });
    expect(s.classes).toEqual([3, 5]);
    close(s.scores, [1, 0, 0.75, 0.25, 0.25, 0.75, 0, 1]);
    expect(channelsToClasses(argmaxChannels(s.scores, 4, 2), s.classes)).toEqual(Uint8Array.from([3, 3, 5, 5]));
  });

  it('puts the background first: a constant, or (1 - max map)^power', () => {
    const maps = Float32Array.from([0.8, 0.1]); // one tag on a 1x2 grid, kept at 1x2
    const t = classScores(maps, [2], 1, 2, 1, 2, { background: 0, mode: 'threshold', threshold: 0.25, power: 2 });
    expect(t.classes).toEqual([0, 2]);
    close(t.scores, [0.25, 0.8, 0.25, 0.1]);
    const p = classScores(maps, [2], 1, 2, 1, 2, { background: 0, mode: 'power', threshold: 0.25, power: 2 });
    close(p.scores, [0.04, 0.8, 0.81, 0.1]);
    expect(channelsToClasses(argmaxChannels(p.scores, 2, 2), p.classes)).toEqual(Uint8Array.from([2, 0]));
  });

  it('rejects a map of the wrong size and a background tag', () => {
    expect(() => classScores(new Float32Array(3), [1], 1, 2, 1, 2, { background: 0, mode: 'threshold', threshold: 0.2, power: 1 })).toThrow(/3 map values/);
    expect(() => classScores(new Float32Array(2), [0], 1, 2, 1, 2, { background: 0, mode: 'threshold', threshold: 0.2, power: 1 })).toThrow(/background/);
  });

  it('argmax gives ties to the first channel (background), as camLabels', () => {
    expect(argmaxChannels(Float32Array.from([0.3, 0.3, 0.2, 0.5]), 2, 2)).toEqual(Uint8Array.from([0, 1]));
  });
});

describe('decide (ignore rule)', () => {
  // three pixels, K = 2; the maps said channel 0 everywhere
  const q = Float32Array.from([0.875, 0.125, 0.5625, 0.4375, 0.25, 0.75]);
  const before = Uint8Array.from([0, 0, 0]);
  it('applies each rule', () => {
    expect(decide(q, 3, 2, before, { rule: 'none', margin: 0.2 }).channel).toEqual(Uint8Array.from([0, 0, 1]));
    expect(decide(q, 3, 2, before, { rule: 'margin', margin: 0.2 }).channel).toEqual(Uint8Array.from([0, 255, 1]));
    expect(decide(q, 3, 2, before, { rule: 'disagree', margin: 0.2 }).channel).toEqual(Uint8Array.from([0, 0, 255]));
    expect(decide(q, 3, 2, before, { rule: 'either', margin: 0.2 }).channel).toEqual(Uint8Array.from([0, 255, 255]));
  });
  it('reports confidence before ignoring, ignored count and the mean margin of kept pixels', () => {
    const all = decide(q, 3, 2, before, { rule: 'none', margin: 0.2 });
    expect(all.confidence).toEqual(Uint8Array.from([223, 143, 191]));
    expect(all.ignored).toBe(0);
    expect(all.meanMargin).toBeCloseTo((0.75 + 0.125 + 0.5) / 3, 6);
    const m = decide(q, 3, 2, before, { rule: 'margin', margin: 0.2 });
    expect(m.confidence).toEqual(all.confidence);
    expect(m.ignored).toBe(1);
    expect(m.meanMargin).toBeCloseTo(0.625, 6);
    const e = decide(q, 3, 2, before, { rule: 'either', margin: 0.99 });
    expect(e.ignored).toBe(3);
    expect(e.meanMargin).toBe(0);
  });
  it('gives a single channel margin 1', () => {
    const d = decide(Float32Array.from([1, 1]), 2, 1, Uint8Array.from([0, 0]), { rule: 'margin', margin: 0.5 });
    expect(d.channel).toEqual(Uint8Array.from([0, 0]));
    expect(d.meanMargin).toBe(1);
  });
});

describe('sanity', () => {
  it('counts pixels per class without ignore', () => {
    expect(classPixelCounts(Uint8Array.from([0, 0, 2, 255]), 3)).toEqual([2, 0, 1]);
    expect(() => classPixelCounts(Uint8Array.from([3]), 3)).toThrow(/label 3/);
  });
  it('flags empty tags and mostly-ignore images', () => {
    const classes = ['background', 'cat', 'dog'];
    expect(imageFlags({ tags: [2, 1], classPixels: [2, 0, 1], classes, ignoreFraction: 0.6, mostlyIgnore: 0.5 })).toEqual(['empty:cat', 'mostly_ignore']);
    expect(imageFlags({ tags: [1, 2], classPixels: [2, 3, 1], classes, ignoreFraction: 0.5, mostlyIgnore: 0.5 })).toEqual([]);
  });
});

describe('ChainScorer', () => {
  it('gives each map step its best bg threshold and scores pseudo-masks at full coverage, then without their ignore pixels', () => {
    const sc = new ChainScorer(['bg', 'a'], 0, 'train', ['cam']);
    const gt = Uint8Array.from([0, 0, 1, 1]);
    sc.addMaps('cam', Float32Array.from([0.125, 0.25, 0.75, 0.875]), [1], 1, 4, gt, 1, 4);
    sc.addPseudo(Uint8Array.from([0, 255, 1, 0]), gt);
    const t = sc.result();
    expect(t.cam?.miou).toBe(1);
    expect(t.cam?.threshold).toBe(0.25); // the first threshold that labels 0.25 bg (a map must exceed it)
    expect(t.random_walk).toBeNull();
    expect(t.cam?.miou_labelled).toBe(1); // maps label every pixel: both figures agree
    expect(t.cam?.coverage).toBe(1);
    const ps = t.pseudo_masks;
    // Labelled pixels: bg 1 / (1 + 2 - 1), a 1 / (2 + 1 - 1). Full coverage: bg's ignored pixel joins its union: 1/3.
    expect(ps.miou_labelled).toBeCloseTo(0.5, 9);
    expect(ps.miou).toBeCloseTo((1 / 3 + 1 / 2) / 2, 9);
    expect(ps.coverage).toBeCloseTo(0.75, 9);
    expect(ps.precision).toBeCloseTo(0.75, 9);
    expect(ps.recall).toBeCloseTo(0.75, 9);
    expect(ps.ignore_fraction).toBeCloseTo(0.25, 9);
    expect(ps.classes.a).toEqual({ iou: 0.5, iou_labelled: 0.5, precision: 1, recall: 0.5 });
    expect(ps.classes.bg!.iou).toBeCloseTo(1 / 3, 9);
    expect(ps.classes.bg!.iou_labelled).toBeCloseTo(0.5, 9);
    expect(ps.images).toBe(1);
  });
});

describe('PngExport', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });
  it('writes VOC palette PNGs into a staged folder and swaps it in whole', async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-refine-png-'));
    const target = path.join(dir, 'outputs', 'pseudo_masks');
    await fs.mkdir(target, { recursive: true });
    await fs.writeFile(path.join(target, 'stale.png'), 'old');
    const ex = await PngExport.open(target);
    const mask = Uint8Array.from([0, 1, 255, 2, 0, 1]);
    await ex.write('img-1', mask, 3, 2);
    await expect(ex.write('img-1', mask, 3, 2)).rejects.toThrow(/two images/);
    expect(await fs.readdir(target)).toEqual(['stale.png']); // nothing visible before commit
    expect(await ex.commit()).toBe(1);
    expect(await fs.readdir(target)).toEqual(['img-1.png']);
    const png = decodeIndexedPng(await fs.readFile(path.join(target, 'img-1.png')), 'img-1.png');
    expect([png.width, png.height]).toEqual([3, 2]);
    expect(png.data).toEqual(mask);
    expect((await fs.readdir(path.join(dir, 'outputs'))).sort()).toEqual(['pseudo_masks']);
  });
  it('abort leaves the previous folder and removes the staged one', async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-refine-png-'));
    const target = path.join(dir, 'pseudo_masks');
    await fs.mkdir(target);
    await fs.writeFile(path.join(target, 'keep.png'), 'old');
    const ex = await PngExport.open(target);
    await ex.write('x', Uint8Array.from([1]), 1, 1);
    await ex.abort();
    expect(await fs.readdir(dir)).toEqual(['pseudo_masks']);
    expect(await fs.readdir(target)).toEqual(['keep.png']);
  });
  it('a write that fails between flushes fails commit, and is never an unhandled rejection', async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-refine-png-'));
    const target = path.join(dir, 'pseudo_masks');
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const ex = await PngExport.open(target);
      await fs.rm(ex.staged, { recursive: true }); // the next write has no folder to go to
      await ex.write('x', Uint8Array.from([1]), 1, 1);
      await new Promise((r) => setTimeout(r, 50)); // the failed write settles before anyone awaits it
      expect(unhandled).toEqual([]);
      await expect(ex.commit()).rejects.toThrow(/ENOENT/);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(await fs.readdir(dir)).toEqual([]);
  });
  it('refuses ids that are not file names', () => {
    expect(pngName('2007_000032')).toBe('2007_000032.png');
    for (const bad of ['a/b', '..', '', 'a\\b']) expect(() => pngName(bad)).toThrow(/cannot be a file name/);
  });
});

describe('refineImage', () => {
  // 16 x 16 image: left 8 columns red, right 8 blue (+ a little noise). Class 1 is the red half.
  const H = 16;
  const W = 16;
  const rgb = new Uint8Array(H * W * 3);
  const gt = new Uint8Array(H * W);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const i = y * W + x;
      const n = ((x * 7 + y * 13) % 5) - 2;
      rgb.set(x < 8 ? [200 + n, 30 + n, 30] : [30, 40 + n, 200 + n], 3 * i);
      gt[i] = x < 8 ? 1 : 0;
    }
  }
  // Stride-4 map (4 x 4 grid) whose blob spills one cell into the blue half: [1, 1, 0.6, 0] per row.
  const maps = new Float32Array(16);
  for (let y = 0; y < 4; y++) maps.set([1, 1, 0.6, 0], y * 4);
  const settings = (o: Partial<RefineSettings> = {}): RefineSettings => ({
    bg: { background: 0, mode: 'threshold', threshold: 0.3, power: 1 },
    crf: { ...DEFAULT_CRF_OPTIONS, gaussian: { sxy: 3, compat: 3 }, bilateral: { sxy: 10, srgb: 13, compat: 10 } },
    ignore: { rule: 'none', margin: 0 },
    above: [],
    ...o,
  });
  const acc = (m: Uint8Array) => m.reduce((n, v, i) => n + (v === gt[i] ? 1 : 0), 0) / m.length;

  it('snaps the label to the colour boundary that the maps miss', () => {
    const r = refineImage({ maps, tags: [1], h: 4, w: 4, rgb, H, W }, settings());
    expect(acc(r.before)).toBe(0.75); // the maps put 4 of the 8 blue columns in class 1
    expect(acc(r.mask)).toBe(1);
    expect(r.crf).toEqual(r.mask);
    expect(r.crfSeconds).toBeGreaterThan(0);
    expect(new Set(r.mask)).toEqual(new Set([0, 1]));
  });

  it('without CRF iterations the mask is the maps labels; disagree ignores exactly the moved pixels', () => {
    const plain = refineImage({ maps, tags: [1], h: 4, w: 4, rgb, H, W }, settings({ crf: { ...DEFAULT_CRF_OPTIONS, iterations: 0 } }));
    expect(plain.mask).toEqual(plain.before);
    expect(plain.crfSeconds).toBe(0);
    const withCrf = refineImage({ maps, tags: [1], h: 4, w: 4, rgb, H, W }, settings({ ignore: { rule: 'disagree', margin: 0 } }));
    let moved = 0;
    for (let i = 0; i < H * W; i++) {
      if (withCrf.crf[i] !== withCrf.before[i]) {
        moved++;
        expect(withCrf.mask[i]).toBe(255);
      } else {
        expect(withCrf.mask[i]).toBe(withCrf.before[i]);
      }
    }
    expect(moved).toBeGreaterThan(0);
    expect(withCrf.ignored).toBe(moved);
  });

  it('labels only tagged classes; without a background class it is argmax over the tags', () => {
    const two = new Float32Array(32);
    for (let y = 0; y < 4; y++) {
      two.set([1, 0.8, 0.2, 0.1], y * 4);
      two.set([0.1, 0.3, 0.9, 1], 16 + y * 4);
    }
    const r = refineImage({ maps: two, tags: [4, 7], h: 4, w: 4, rgb, H, W }, settings({ bg: { background: null, mode: 'threshold', threshold: 0.3, power: 1 } }));
    expect(new Set(r.mask)).toEqual(new Set([4, 7]));
    for (let y = 0; y < H; y++) expect([r.mask[y * W], r.mask[y * W + W - 1]]).toEqual([4, 7]);
  });

  it('gives an image with no channel an all-ignore mask', () => {
    const r = refineImage({ maps: new Float32Array(0), tags: [], h: 4, w: 4, rgb, H, W }, settings({ bg: { background: null, mode: 'threshold', threshold: 0.3, power: 1 } }));
    expect(r.ignored).toBe(H * W);
    expect(r.mask.every((v) => v === 255)).toBe(true);
  });

  it('normalizeRows clips and sums rows to 1', () => {
    close(normalizeRows(Float32Array.from([0.25, 0.75, 0, 2]), 2, 2), [0.25, 0.75, 1e-5 / (1 + 1e-5), 1 / (1 + 1e-5)]);
  });
});
