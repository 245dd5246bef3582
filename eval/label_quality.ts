/**
 * Confident-learning label quality of a segmentation mask (Lad & Mueller 2023, "Estimating label
 * quality and errors in semantic segmentation data via any model"; cleanlab's
 * segmentation.rank.get_label_quality_scores, method "softmin").
 *
 * Pixel score s_i = the probability a model that never trained on the image gives the mask's label
 * at pixel i (self-confidence). Image score = softmin of the pixel scores at temperature T:
 *
 *     score = sum_i s_i w_i,   w_i = exp((1 - s_i) / T) / sum_j exp((1 - s_j) / T)
 *
 * a weighted mean that tends to the worst pixel as T -> 0 and to the mean as T -> infinity;
 * cleanlab's default T = 0.1. Low = the labels are likely wrong somewhere. One difference from
 * cleanlab: ignore pixels (255) carry no label to doubt and are left out (cleanlab has no ignore).
 */
import { TagsegError } from '../pipeline/errors.js';

/** cleanlab's default softmin temperature. */
export const LABEL_QUALITY_TEMPERATURE = 0.1;
const IGNORE = 255;

/** softmin of `s` (values in [0, 1]) at temperature `t`; null when `s` is empty. */
export function softmin(s: ArrayLike<number>, t = LABEL_QUALITY_TEMPERATURE): number | null {
  if (!(t > 0)) throw new TagsegError(`the softmin temperature must be > 0, got ${t}`);
  if (s.length === 0) return null;
  let min = Infinity;
  for (let i = 0; i < s.length; i++) if (s[i] < min) min = s[i];
  // Shift by the largest exponent, (1 - min) / t, so no exp overflows (cleanlab's shift=True).
  let num = 0;
  let den = 0;
  for (let i = 0; i < s.length; i++) {
    const w = Math.exp((min - s[i]) / t);
    num += s[i] * w;
    den += w;
  }
  return num / den;
}

export interface MaskQuality {
  /** softmin of the pixel scores (null: no labelled pixel). */
  quality: number | null;
  /** Mean pixel score (the T -> infinity limit). */
  selfConfidence: number | null;
  /** Pixels with a label (not 255). */
  pixels: number;
}

/**
 * The label quality of `labels` [H * W] (class indices, 255 = ignore) under `probs` [H * W * K]
 * (pixel-major, K classes per pixel, as tfjs returns [H, W, K]).
 */
export function maskQuality(probs: ArrayLike<number>, labels: ArrayLike<number>, k: number, t = LABEL_QUALITY_TEMPERATURE): MaskQuality {
  if (probs.length !== labels.length * k) throw new TagsegError(`label quality: ${probs.length} probabilities for ${labels.length} pixels x ${k} classes`);
  const s: number[] = [];
  for (let i = 0; i < labels.length; i++) {
    const c = labels[i];
    if (c === IGNORE) continue;
    if (!(c >= 0 && c < k)) throw new TagsegError(`label quality: label ${c} at pixel ${i} is not one of the ${k} classes`);
    s.push(probs[i * k + c]);
  }
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : null;
  return { quality: softmin(s, t), selfConfidence: mean, pixels: s.length };
}
