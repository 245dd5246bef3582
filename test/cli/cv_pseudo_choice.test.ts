/**
 * The nested-CV choice of refine settings (cli/cv_pseudo_summary.ts) on hand-made per-image
 * confusion matrices, every figure computed by hand. 2 classes, 20 valid pixels per image (10 of
 * each class); 2 candidates, 2 folds of 2 images:
 *   A: perfect on fold 0's images; on fold 1's, 5 class-1 pixels of each image left as ignore
 *   B: on fold 0's images, 5 class-1 pixels of each labelled 0; perfect on fold 1's
 * Fold 0 held out: chosen on fold 1, where B (100) beats A (full coverage 75; labelled pixels 100, a
 * tie that would keep A), so B, scored 58.3 on fold 0. Fold 1 held out: A (100 on fold 0 vs 58.3),
 * scored 75 on fold 1. Choosing on each held-out fold itself would pick A then B and claim 100.
 */
import { describe, expect, it } from 'vitest';
import { NOTES, formatPseudoChoice, nestedChoice, poolScore, type PseudoChoiceSummary } from '../../cli/cv_pseudo_summary.js';
import { ConfusionMatrix } from '../../eval/metrics.js';

/** A 2-class image: counts[gt * 2 + pred] and the ignore predictions per gt class. */
const image = (counts: [number, number, number, number], ignored: [number, number] = [0, 0]) =>
  ConfusionMatrix.fromJSON({ numClasses: 2, counts, predIgnored: ignored });
const perfect = () => image([10, 0, 0, 10]);

const folds = [['f0a', 'f0b'], ['f1a', 'f1b']];
const A = new Map([['f0a', perfect()], ['f0b', perfect()], ['f1a', image([10, 0, 0, 5], [0, 5])], ['f1b', image([10, 0, 0, 5], [0, 5])]]);
const B = new Map([['f0a', image([10, 0, 5, 5])], ['f0b', image([10, 0, 5, 5])], ['f1a', perfect()], ['f1b', perfect()]]);

describe('poolScore', () => {
  it('pools the images into one matrix: full coverage counts ignore as wrong, labelled pixels leave it out', () => {
    // A on fold 1: IoU 20/20 and 10/(10 + 10 ignored) -> 0.75; labelled 1; coverage 30/40
    expect(poolScore(A, folds[1], 2)).toEqual({ miou: 0.75, miou_labelled: 1, coverage: 0.75, images: 2 });
    // B on fold 0: IoU 20/(20 + 10) and 10/20 -> (2/3 + 1/2) / 2
    expect(poolScore(B, folds[0], 2).miou).toBeCloseTo(7 / 12, 10);
    // all images: A 40/40 and 30/40 -> 0.875; B 40/50 and 30/40 -> 0.775
    expect(poolScore(A, [...folds[0], ...folds[1]], 2).miou).toBeCloseTo(0.875, 10);
    expect(poolScore(B, [...folds[0], ...folds[1]], 2).miou).toBeCloseTo(0.775, 10);
    expect(() => poolScore(A, ['nope'], 2)).toThrow(/no confusion matrix for image 'nope'/);
  });
});

describe('nestedChoice', () => {
  it('chooses each fold\'s candidate on the other folds at full coverage and scores it on the held-out fold', () => {
    const c = nestedChoice([A, B], folds, 2);
    expect(c.folds.map((f) => f.chosen)).toEqual([1, 0]); // B for fold 0, A for fold 1
    expect(c.folds[0].chosen_on.miou).toBe(1); // B on fold 1
    expect(c.folds[1].chosen_on.miou).toBe(1); // A on fold 0
    expect(c.folds[0].held_out.miou).toBeCloseTo(7 / 12, 10);
    expect(c.folds[1].held_out).toEqual({ miou: 0.75, miou_labelled: 1, coverage: 0.75, images: 2 });
    // mean of 7/12 and 3/4 = 2/3; sample sd of two values = |difference| / sqrt 2 = (1/6) / sqrt 2
    expect(c.estimate.miou).toEqual({ mean: 0.6667, sd: 0.1179, n: 2 });
    expect(c.estimate.coverage).toEqual({ mean: 0.875, sd: 0.1768, n: 2 });
    expect(c.chosen).toEqual([1, 1]);
    // Control: choosing on the held-out fold itself picks the fold's own winner and scores 1 on both.
    const optimistic = folds.map((f) => Math.max(...[A, B].map((m) => poolScore(m, f, 2).miou!)));
    expect(optimistic).toEqual([1, 1]);
    expect(c.estimate.miou.mean!).toBeLessThan(0.7);
  });

  it('a tie keeps the first candidate in grid order; a null score (no valid pixel) never wins', () => {
    const c = nestedChoice([B, B], folds, 2);
    expect(c.folds.map((f) => f.chosen)).toEqual([0, 0]);
    expect(c.chosen).toEqual([2, 0]);
    const empty = new Map([...A.keys()].map((id) => [id, new ConfusionMatrix(2)]));
    expect(nestedChoice([empty, A], folds, 2).folds.map((f) => f.chosen)).toEqual([1, 1]);
    expect(() => nestedChoice([], folds, 2)).toThrow(/no candidate/);
  });

  it('three folds: the choosing images are the other two folds pooled', () => {
    // fold 2: one image, where A ignores everything of class 1 and B is perfect. Held out fold 0:
    // choose on folds 1 + 2 pooled: A (20/20, 5/(5+15)) -> 0.625, B 1 -> B.
    const f3 = [['f0a', 'f0b'], ['f1a'], ['f2']];
    const A3 = new Map([...A, ['f2', image([10, 0, 0, 0], [0, 10])]]);
    const B3 = new Map([...B, ['f2', perfect()]]);
    const c = nestedChoice([A3, B3], f3, 2);
    expect(c.folds[0].chosen_on.miou).toBeCloseTo(1, 10);
    expect(c.folds.map((f) => f.chosen)).toEqual([1, 0, 0]);
    // fold 1 held out: A on folds 0 + 2 = (30/30 + 20/30) / 2 = 5/6; B on folds 0 + 2 = (30/40 + 20/30) / 2 = 17/24
    expect(c.folds[1].chosen_on.miou).toBeCloseTo(5 / 6, 10);
  });
});

describe('formatPseudoChoice', () => {
  it('labels the all-fold scores as not for choosing and prints the nested estimate', () => {
    const c = nestedChoice([A, B], folds, 2);
    const s: PseudoChoiceSummary = {
      protocol: 1, choice: 'abc', dir: 'runs/cv/refine/choice-abc', split: 'words', keys: ['refine.bg_threshold'], fold_seed: 0, fold_sizes: [2, 2],
      candidates: [A, B].map((m, i) => ({ label: `bg_threshold=${i}`, settings: {}, dir: 'x', all_images: poolScore(m, folds.flat(), 2), per_fold: folds.map((f) => poolScore(m, f, 2)), chosen: c.chosen[i] })),
      folds: c.folds.map((f) => ({ fold: f.fold, images: 2, chosen: `bg_threshold=${f.chosen}`, chosen_on: f.chosen_on, held_out: f.held_out })),
      estimate: c.estimate, notes: NOTES,
    };
    const t = formatPseudoChoice(s);
    expect(t).toContain('train masks, all folds — not for choosing');
    expect(t).toMatch(/bg_threshold=0\s+87\.5\s+100\.0\s+87\.5\s+1\/2/);
    expect(t).toMatch(/\n {2}0\s+2\s+bg_threshold=1\s+100\.0\s+58\.3/);
    expect(t).toContain('nested-CV estimate, pseudo-masks at full coverage: 66.7 ± 11.8 (mean ± sd over 2 folds)');
  });
});
