/**
 * The suspicion score: one number per image that ranks pseudo-masks for human review.
 *
 * It is a weighted mean of seven terms, each in [0, 1] where 0 = nothing wrong, computed from the
 * pipeline's own outputs only (never from ground truth, so it works on unlabelled data; where
 * ground truth exists the stage reports how well the score predicts a bad mask instead):
 *
 * - ignore:               fraction of the final mask left as ignore (255) by refine.
 * - low_confidence:       1 - mean confidence (refine's posterior of the chosen class) over the
 *                         labelled pixels; 1 when nothing is labelled.
 * - disagreement:         1 - mean pixel agreement of the CAM, random-walk and RCA label maps
 *                         with the final mask (over its labelled pixels): the stages changed
 *                         their mind a lot, so at most one of them can be right.
 * - empty_tags:           share of the image's foreground tags that got no pixel in the final mask.
 * - fragmentation:        share of foreground pixels outside their class's largest 4-connected
 *                         region (speckle and islands; several real instances also raise it,
 *                         hence a lower default weight).
 * - misalignment:         1 - how far above chance the mask outline lies on strong image edges:
 *                         1 - clamp((aligned - chance) / (1 - chance), 0, 1); 0 when the mask has
 *                         no outline (one class everywhere).
 * - large_low_confidence: share of the classes present that cover >= audit.large_area of the
 *                         image with mean confidence < audit.low_confidence.
 *
 * score = sum_k w_k t_k / sum_k w_k, weights from params `audit.weights`. `reasons` names the
 * terms that contribute most (w_k t_k / sum w >= 0.05, largest first, at most 3), so the report
 * can say why an image ranks high.
 */
import { TagsegError } from '../../pipeline/errors.js';

export const SUSPICION_TERMS = ['ignore', 'low_confidence', 'disagreement', 'empty_tags', 'fragmentation', 'misalignment', 'large_low_confidence'] as const;
export type SuspicionTerm = (typeof SUSPICION_TERMS)[number];
export type SuspicionTerms = Record<SuspicionTerm, number>;
export type SuspicionWeights = Record<SuspicionTerm, number>;

export interface Suspicion {
  score: number;
  reasons: SuspicionTerm[];
}

/** The inputs of the terms, as the image row of the audit has them. */
export interface SuspicionInputs {
  ignoreFraction: number;
  /** Mean confidence over labelled pixels in [0, 1]; null when nothing is labelled. */
  meanConfidence: number | null;
  /** Pixel agreement of each map stage with the final mask; null entries are skipped. */
  agreements: (number | null)[];
  emptyTags: number;
  foregroundTags: number;
  /** Foreground pixels outside their class's largest region / foreground pixels (0 if none). */
  fragmentation: number;
  /** Boundary alignment of the final mask (null: no outline) and its chance level. */
  boundaryAlignment: number | null;
  edgeChance: number;
  largeLowConfidence: number;
  classesPresent: number;
}

const clamp01 = (x: number) => Math.min(1, Math.max(0, x));

export function suspicionTerms(s: SuspicionInputs): SuspicionTerms {
  const agree = s.agreements.filter((v): v is number => v !== null);
  let misalignment = 0;
  if (s.boundaryAlignment !== null) {
    misalignment = s.edgeChance >= 1 ? 0 : 1 - clamp01((s.boundaryAlignment - s.edgeChance) / (1 - s.edgeChance));
  }
  return {
    ignore: clamp01(s.ignoreFraction),
    low_confidence: s.meanConfidence === null ? 1 : clamp01(1 - s.meanConfidence),
    disagreement: agree.length === 0 ? 1 : clamp01(1 - agree.reduce((a, b) => a + b, 0) / agree.length),
    empty_tags: s.foregroundTags > 0 ? clamp01(s.emptyTags / s.foregroundTags) : 0,
    fragmentation: clamp01(s.fragmentation),
    misalignment,
    large_low_confidence: s.classesPresent > 0 ? clamp01(s.largeLowConfidence / s.classesPresent) : 0,
  };
}

/** What the per-(image, class) terms read: a class row of image.ts. */
export interface ClassSuspicionInputs {
  ignore_fraction: number | null;
  confidence: number | null;
  iou_cam_final: number | null;
  iou_rca_final: number | null;
  largest_share: number | null;
  boundary_alignment: number | null;
  empty_tag: boolean;
  large_low_confidence: boolean;
}

/**
 * The same seven terms for one class of one image, from that class's evidence alone, so a class
 * filter can rank images by how doubtful THAT class's mask is: ignore = share of the class's RCA
 * pixels refine left as ignore; low_confidence = 1 - its mean confidence (1 when absent);
 * disagreement = 1 - mean of its CAM->final and RCA->final IoU; empty_tags / large_low_confidence
 * = its flags; fragmentation = 1 - largest region share (foreground only); misalignment = its
 * outline against the image's edge chance.
 */
export function classSuspicionTerms(r: ClassSuspicionInputs, foreground: boolean, edgeChance: number): SuspicionTerms {
  const ious = [r.iou_cam_final, r.iou_rca_final].filter((v): v is number => v !== null);
  let misalignment = 0;
  if (r.boundary_alignment !== null) misalignment = edgeChance >= 1 ? 0 : 1 - clamp01((r.boundary_alignment - edgeChance) / (1 - edgeChance));
  return {
    ignore: clamp01(r.ignore_fraction ?? 0),
    low_confidence: r.confidence === null ? 1 : clamp01(1 - r.confidence),
    disagreement: ious.length === 0 ? 1 : clamp01(1 - ious.reduce((a, b) => a + b, 0) / ious.length),
    empty_tags: r.empty_tag ? 1 : 0,
    fragmentation: foreground && r.largest_share !== null ? clamp01(1 - r.largest_share) : 0,
    misalignment,
    large_low_confidence: r.large_low_confidence ? 1 : 0,
  };
}

export function suspicionScore(t: SuspicionTerms, w: SuspicionWeights): Suspicion {
  let total = 0;
  for (const k of SUSPICION_TERMS) {
    if (!(w[k] >= 0)) throw new TagsegError(`audit.weights.${k} must be >= 0, got ${w[k]}`);
    total += w[k];
  }
  if (total <= 0) throw new TagsegError('audit.weights are all 0: the suspicion score needs at least one positive weight');
  let score = 0;
  const parts: [SuspicionTerm, number][] = [];
  for (const k of SUSPICION_TERMS) {
    const c = (w[k] * t[k]) / total;
    score += c;
    parts.push([k, c]);
  }
  const reasons = parts.filter(([, c]) => c >= 0.05).sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k]) => k);
  return { score, reasons };
}
