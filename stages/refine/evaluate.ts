/**
 * The per-stage table of metrics/refine.json: every step of the chain scored the same way, on the
 * same images (`dataset.train_split` with ground truth), against the ground-truth masks at the
 * ORIGINAL resolution:
 *   cam              cams.arrow `cams`
 *   random_walk      affinity_cams.arrow `cams`
 *   rca              contrast_cams.arrow `cams` (RCA, before the random walk)
 *   rca_random_walk  contrast_cams.arrow `propagated`
 *   pseudo_masks     refine's masks
 * Every step is scored at full coverage first (`miou`: every pixel with valid ground truth, an
 * ignore pixel counted as wrong, eval/metrics.ts); `miou_labelled` (ignore pixels left out) and
 * `coverage` stand beside it. The maps label every pixel, so for them the two are equal.
 * Maps are labelled as their own stages score them (maps/evaluate.ts): with a background class,
 * the best constant bg threshold of one 0.05..0.95 sweep per step (each earlier step gets its
 * best threshold, so the pseudo-masks are compared with the strongest version of it); without
 * one, argmax over the tags.
 */
import { ConfusionMatrix, segmentationScores, type SegmentationScores } from '../../eval/metrics.js';
import { ThresholdSweep } from '../../maps/evaluate.js';

export const MAP_STEPS = ['cam', 'random_walk', 'rca', 'rca_random_walk'] as const;
export type MapStep = (typeof MAP_STEPS)[number];

/** bg thresholds 0.05, 0.10, ..., 0.95 (the affinity and contrast stages' sweep). */
export const SWEEP: number[] = Array.from({ length: 19 }, (_, i) => Math.round((i + 1) * 5) / 100);

export interface ClassScore { iou: number | null; iou_labelled: number | null; precision: number | null; recall: number | null }

export interface StepScores {
  /** Full coverage: ignore predictions count as wrong. */
  miou: number | null;
  /** Over the pixels the step labelled (ignore left out). */
  miou_labelled: number | null;
  /** Labelled share of the pixels with valid ground truth. */
  coverage: number | null;
  /** Mean over classes with a non-null value. */
  precision: number | null;
  recall: number | null;
  /** Full coverage. */
  pixel_accuracy: number | null;
  /** The bg threshold of the best sweep point (null without a background class, or for pseudo-masks). */
  threshold: number | null;
  images: number;
  split: string;
  classes: Record<string, ClassScore>;
}

export interface PseudoScores extends StepScores {
  /** Share of the scored (valid ground truth) pixels that the pseudo-masks leave as ignore. */
  ignore_fraction: number | null;
}

export interface ChainTable {
  cam: StepScores | null;
  random_walk: StepScores | null;
  rca: StepScores | null;
  rca_random_walk: StepScores | null;
  pseudo_masks: PseudoScores;
}

function mean(xs: (number | null)[]): number | null {
  const v = xs.filter((x): x is number => x !== null);
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
}

export function stepScores(s: SegmentationScores, classes: readonly string[], threshold: number | null, images: number, split: string): StepScores {
  const per: Record<string, ClassScore> = {};
  s.iou.forEach((iou, c) => {
    // Classes absent from both ground truth and prediction say nothing: left out, as in mIoU.
    const full = s.fullIou[c];
    if (full !== null) per[classes[c]] = { iou: full, iou_labelled: iou, precision: s.precision[c], recall: s.recall[c] };
  });
  const present = s.iou.map((v, c) => (v === null ? null : c)).filter((c): c is number => c !== null);
  return {
    miou: s.fullMiou,
    miou_labelled: s.miou,
    coverage: s.coverage,
    precision: mean(present.map((c) => s.precision[c])),
    recall: mean(present.map((c) => s.recall[c])),
    pixel_accuracy: s.fullPixelAccuracy,
    threshold,
    images,
    split,
    classes: per,
  };
}

/** Accumulates the chain table over images; steps whose table is missing stay null. */
export class ChainScorer {
  private readonly sweeps: Partial<Record<MapStep, ThresholdSweep>> = {};
  private readonly pseudo: ConfusionMatrix;
  private pseudoImages = 0;

  constructor(readonly classes: readonly string[], readonly background: number | null, readonly split: string, steps: readonly MapStep[]) {
    for (const s of steps) this.sweeps[s] = new ThresholdSweep(classes.length, background, SWEEP);
    this.pseudo = new ConfusionMatrix(classes.length);
  }

  /** Stride maps [tags, h, w] of `step`, upsampled to the ground truth's H x W. */
  addMaps(step: MapStep, maps: Float32Array, tags: readonly number[], h: number, w: number, gt: Uint8Array, H: number, W: number): void {
    this.sweeps[step]?.addStrided(maps, tags, h, w, gt, H, W);
  }

  addPseudo(mask: Uint8Array, gt: Uint8Array): void {
    this.pseudo.add(mask, gt);
    this.pseudoImages++;
  }

  result(): ChainTable {
    const step = (s: MapStep): StepScores | null => {
      const sw = this.sweeps[s];
      if (!sw) return null;
      const r = sw.result();
      return stepScores(r.scores, this.classes, r.best.threshold, r.images, this.split);
    };
    const ps = segmentationScores(this.pseudo);
    return {
      cam: step('cam'),
      random_walk: step('random_walk'),
      rca: step('rca'),
      rca_random_walk: step('rca_random_walk'),
      pseudo_masks: { ...stepScores(ps, this.classes, null, this.pseudoImages, this.split), ignore_fraction: ps.coverage === null ? null : 1 - ps.coverage },
    };
  }
}
