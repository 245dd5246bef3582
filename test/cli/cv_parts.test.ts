/**
 * The CV protocol's pure parts: fold assignment, the segment stage's explicit split, the
 * overrides it accepts, and the summary's statistics on hand-made runs (hand-computed).
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { type CvRecipe, type CvRun, assignFolds, cvParams } from '../../cli/cv.js';
import { classGaps, formatCv, stat, summariseCv } from '../../cli/cv_summary.js';
import { DEFAULT_PARAMS_YAML } from '../../stages/params.js';
import type { SegScores } from '../../stages/segment/index.js';
import { explicitSplit, idsKey } from '../../stages/segment/labels.js';

const ids = Array.from({ length: 31 }, (_, i) => `img_${i}`);

describe('assignFolds', () => {
  it('deals every id into exactly one of k folds of sizes differing by at most one, each in input order', () => {
    const folds = assignFolds(ids, 3, 0);
    expect(folds.map((f) => f.length).sort()).toEqual([10, 10, 11]);
    expect(folds.flat().sort()).toEqual([...ids].sort());
    for (const f of folds) expect(f).toEqual(ids.filter((id) => f.includes(id)));
  });

  it('depends on the id set and the fold seed only, not on the input order', () => {
    const shuffled = [...ids].reverse();
    const a = assignFolds(ids, 3, 0).map((f) => [...f].sort());
    const b = assignFolds(shuffled, 3, 0).map((f) => [...f].sort());
    expect(b).toEqual(a);
    expect(assignFolds(ids, 3, 7).map((f) => [...f].sort())).not.toEqual(a); // control: the seed matters
  });

  it('refuses fewer than 2 folds or more folds than images', () => {
    expect(() => assignFolds(ids, 1, 0)).toThrow(/at least 2 folds/);
    expect(() => assignFolds(['a', 'b'], 3, 0)).toThrow(/2 images with masks cannot fill 3 folds/);
  });
});

describe('explicitSplit (segment stage)', () => {
  const train = ['a', 'b', 'c', 'd'];
  it('returns both lists in the train split order', () => {
    expect(explicitSplit(train, { train: ['d', 'a'], val: ['c'] }, 'train')).toEqual({ train: ['a', 'd'], val: ['c'] });
  });
  it('refuses ids outside the split, ids on both sides, and an empty training list', () => {
    expect(() => explicitSplit(train, { train: ['a', 'x'], val: [] }, 'train')).toThrow(/image 'x' of the requested split is not in split 'train'/);
    expect(() => explicitSplit(train, { train: ['a', 'b'], val: ['b'] }, 'train')).toThrow(/'b' is both a training and a held-out image/);
    expect(() => explicitSplit(train, { train: [], val: ['b'] }, 'train')).toThrow(/no training image/);
  });
  it('idsKey tells id lists apart', () => {
    expect(idsKey(['a', 'b'])).toBe(idsKey(['a', 'b']));
    expect(idsKey(['a', 'b'])).not.toBe(idsKey(['a', 'c']));
    expect(idsKey(['a', 'b'])).not.toBe(idsKey(['ab']));
  });
});

describe('cvParams', () => {
  it('scales segment.epochs (rounded, at least 1), sets the oracle, and takes only segment.* and seed overrides', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-cvparams-'));
    try {
      await fs.writeFile(path.join(dir, 'params.yaml'), DEFAULT_PARAMS_YAML);
      const p = await cvParams(dir, { epochsFactor: 0.5, sets: ['segment.epochs=5', 'seed=3'] });
      expect([p.segment.epochs, p.seed, p.segment.labels]).toEqual([3, 3, 'pseudo']);
      expect((await cvParams(dir, { epochsFactor: 0.01, oracle: true })).segment).toMatchObject({ epochs: 1, labels: 'gt' });
      await expect(cvParams(dir, { epochsFactor: 1, sets: ['refine.power=2'] })).rejects.toThrow(/--set refine.power=2: the protocol retrains only the segment stage/);
      await expect(cvParams(dir, { epochsFactor: 0 })).rejects.toThrow(/epochs factor must be > 0/);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

const scores = (full: number, labelled = full, coverage = 1, iou: SegScores['iou'] = { a: full, b: null }): SegScores => ({
  miou: full, miou_labelled: labelled, pixel_accuracy: 0.9, coverage, images: 5, iou,
});
const run = (fold: number, seed: number, full: number, labels: 'pseudo' | 'gt' = 'pseudo', pseudoFull = 0.6 + fold / 10): CvRun => ({
  protocol: 1, recipe: 'r', fold, seed, split: `train, fold ${fold} of 2 held out`, labels, epochs: 3, trainImages: 5, heldOutImages: 5,
  segmenter: scores(full), pseudo_masks: labels === 'pseudo' ? scores(pseudoFull, pseudoFull + 0.1, 0.8) : null, resumedFrom: 0, seconds: 1,
});
const recipe = (labels: 'pseudo' | 'gt'): CvRecipe => ({
  protocol: 1, labels, seed: 0, train_split: 'train', folds: 2, fold_seed: 0, segment: { epochs: 3 } as CvRecipe['segment'], data: {},
});

describe('summariseCv', () => {
  it('stat: mean and sample sd; no sd for one value; non-numbers left out', () => {
    expect(stat([0.5, 0.7])).toEqual({ mean: 0.6, sd: 0.1414, n: 2 });
    expect(stat([0.5, null])).toEqual({ mean: 0.5, sd: null, n: 1 });
    expect(stat([])).toEqual({ mean: null, sd: null, n: 0 });
  });

  it('segmenter: mean ± sd over seeds of the fold averages; pseudo-masks over folds; weak / oracle from the twin', () => {
    // seed 0: folds 0.5, 0.7 -> 0.6; seed 1: 0.6, 0.8 -> 0.7; mean 0.65, sd 0.0707
    const weak = [run(0, 0, 0.5), run(0, 1, 0.6), run(1, 0, 0.7), run(1, 1, 0.8)];
    const oracle = [run(0, 0, 0.7, 'gt'), run(0, 1, 0.8, 'gt'), run(1, 0, 0.9, 'gt'), run(1, 1, 0.8, 'gt')];
    const folds = [['a', 'b'], ['c', 'd']];
    const s = summariseCv({ recipe: recipe('pseudo'), hash: 'w', dir: 'runs/cv/w', seeds: [0, 1], folds, unmasked: 1, runs: weak, twin: { hash: 'o', dir: 'runs/cv/o', runs: oracle } });
    expect(s.segmenter.per_seed).toEqual([{ seed: 0, miou: 0.6 }, { seed: 1, miou: 0.7 }]);
    expect(s.segmenter.miou).toEqual({ mean: 0.65, sd: 0.0707, n: 2 });
    expect(s.segmenter.iou).toEqual({ a: 0.65, b: null });
    expect(s.pseudo_masks).toMatchObject({ from: 'runs/cv/w', miou: { mean: 0.65, sd: 0.0707, n: 2 }, miou_labelled: { mean: 0.75 }, coverage: { mean: 0.8, sd: 0 } });
    // oracle: seed 0 (0.7 + 0.9) / 2 = 0.8, seed 1 0.8 -> 0.8; ratio 0.65 / 0.8
    expect(s.weak_oracle).toMatchObject({ ratio: 0.8125, oracle: { mean: 0.8, sd: 0 }, weak_dir: 'runs/cv/w', oracle_dir: 'runs/cv/o' });
    // per seed 0.6 / 0.8 = 0.75 and 0.7 / 0.8 = 0.875: mean 0.8125, sd 0.0884
    expect(s.weak_oracle?.per_seed).toEqual([{ seed: 0, ratio: 0.75 }, { seed: 1, ratio: 0.875 }]);
    expect(s.weak_oracle?.ratio_seeds).toEqual({ mean: 0.8125, sd: 0.0884, n: 2 });
    // class a only (b is never scored): (0.8 - 0.65) / 1; its pseudo-masks 0.6 (fold 0) and 0.7 (fold 1), 2 seeds each
    expect(s.weak_oracle?.by_class).toEqual([{ name: 'a', weak: 0.65, oracle: 0.8, pseudo: 0.65, points: 0.15 }]);
    expect(s.split).toMatch(/2-fold cross-validation over the 4 images of split 'train' with a ground-truth mask/);
    const table = formatCv(s);
    expect(table).toMatch(/segmenter, full coverage: 65\.0 ± 7\.1 \(mean ± sd over 2 seed\(s\) of the 2-fold average\)/);
    expect(table).toMatch(/weak \/ oracle: 0\.813 \(weak 65\.0 ± 7\.1 in runs\/cv\/w, oracle 80\.0 ± 0\.0 in runs\/cv\/o; per seed 0\.750 \/ 0\.875: 0\.813 ± 0\.088\)/);
    expect(table).toMatch(/the gap by class, mIoU points \(weak vs oracle IoU; the held-out pseudo-masks' IoU\): a 15\.0 \(65\.0 vs 80\.0; pseudo-masks 65\.0\)/);
    expect(table).toMatch(/1 train images without a mask not used/);

    // The oracle's own summary: the same ratio, pseudo-masks from the weak runs.
    const o = summariseCv({ recipe: recipe('gt'), hash: 'o', dir: 'runs/cv/o', seeds: [0, 1], folds, unmasked: 0, runs: oracle, twin: { hash: 'w', dir: 'runs/cv/w', runs: weak } });
    expect(o.weak_oracle?.ratio).toBe(0.8125);
    expect(o.pseudo_masks?.from).toBe('runs/cv/w');
    expect(summariseCv({ recipe: recipe('gt'), hash: 'o', dir: 'runs/cv/o', seeds: [0, 1], folds, unmasked: 0, runs: oracle, twin: null }).pseudo_masks).toBeNull();
    expect(o.weak_oracle?.per_seed).toEqual(s.weak_oracle?.per_seed); // the same pairing from either side
    expect(o.weak_oracle?.by_class).toEqual(s.weak_oracle?.by_class);
    // the pseudo column is the pseudo-masks' IoU, not the segmenter's (control: 0.9 against its 0.65)
    const sharp = weak.map((r) => ({ ...r, pseudo_masks: scores(0.9, 0.9, 1, { a: 0.9, b: null }) }));
    const p = summariseCv({ recipe: recipe('pseudo'), hash: 'w', dir: 'runs/cv/w', seeds: [0, 1], folds, unmasked: 1, runs: sharp, twin: { hash: 'o', dir: 'runs/cv/o', runs: oracle } });
    expect(p.weak_oracle?.by_class).toEqual([{ name: 'a', weak: 0.65, oracle: 0.8, pseudo: 0.9, points: 0.15 }]);
  });

  it('classGaps: each class (oracle - weak) / K over the K classes scored in both, largest first; the points sum to the class-mean gap', () => {
    // K = 3 (d has no oracle score, e no weak one): a (0.9 - 0.6) / 3 = 0.1, b (0.5 - 0.5) / 3 = 0, c (0.7 - 0.8) / 3 = -0.0333
    const gaps = classGaps({ a: 0.6, b: 0.5, c: 0.8, d: 0.4, e: null }, { a: 0.9, b: 0.5, c: 0.7, d: null, e: 0.3 }, { a: 0.55, c: null });
    expect(gaps).toEqual([
      { name: 'a', weak: 0.6, oracle: 0.9, pseudo: 0.55, points: 0.1 },
      { name: 'b', weak: 0.5, oracle: 0.5, pseudo: null, points: 0 },
      { name: 'c', weak: 0.8, oracle: 0.7, pseudo: null, points: -0.0333 },
    ]);
    // the class means over a, b, c: weak 0.6333, oracle 0.7 -> 0.0667
    expect(gaps.reduce((t, g) => t + g.points, 0)).toBeCloseTo(0.0667, 4);
    // control: swapping the modes turns every share around
    expect(classGaps({ a: 0.9, b: 0.5, c: 0.7 }, { a: 0.6, b: 0.5, c: 0.8 }).map((g) => g.points)).toEqual([0.0333, 0, -0.1]);
  });
});
