/**
 * The reviewer's corrections at the segment stage's input (pseudo-mask mode only; the gt oracle
 * ignores them):
 *
 * - an image rejected as a whole (review/decisions.csv, empty class) leaves training;
 * - a class rejected on one image becomes ignore (255) in that image's training labels;
 * - a hand-fixed mask `<dataset.corrections>/<id>.png` replaces the image's pseudo-mask, and
 *   wins over a rejection (the fix is what the rejection asked for).
 *
 * `relabel` and `accept` change nothing here: relabel marks work still to do (`tagseg export`).
 * Only training images are affected: the validation carve is scored against ground truth and
 * stays the same, so scores before and after a review compare.
 */
import type { DecisionRow } from '../../data/review.js';
import { TagsegError } from '../../pipeline/errors.js';
import { IGNORE } from './labels.js';

export interface ReviewPlan {
  /** Training ids that stay, in input order. */
  train: string[];
  /** Training ids whose pseudo-mask is replaced by their corrected mask. */
  corrected: Set<string>;
  /** Per training id: class indices set to ignore. */
  ignoreClasses: Map<string, number[]>;
  counts: { rejected: number; corrected: number; rejected_classes: number; unused_corrections: number };
}

/**
 * Apply the decisions and the ids that have a corrected mask to the training ids. Pure.
 * `classes` resolves per-class decisions; an unknown class name is an error naming `file`.
 */
export function planReview(trainIds: readonly string[], decisions: readonly DecisionRow[], correctionIds: ReadonlySet<string>, classes: readonly string[], file: string): ReviewPlan {
  const rejected = new Set<string>();
  const ignoreClasses = new Map<string, number[]>();
  for (const d of decisions) {
    if (d.decision !== 'reject') continue;
    if (d.class === '') {
      rejected.add(d.id);
      continue;
    }
    const c = classes.indexOf(d.class);
    if (c < 0) throw new TagsegError(`image '${d.id}': class '${d.class}' is not a class of the dataset`, { file, hint: `classes: ${classes.join(', ')}` });
    ignoreClasses.set(d.id, [...(ignoreClasses.get(d.id) ?? []), c]);
  }
  const inTrain = new Set(trainIds);
  const corrected = new Set([...correctionIds].filter((id) => inTrain.has(id)));
  const train = trainIds.filter((id) => corrected.has(id) || !rejected.has(id));
  const kept = new Set(train);
  // A corrected mask is the reviewer's final word on the image: no class of it is dropped.
  const ignore = new Map([...ignoreClasses].filter(([id]) => kept.has(id) && !corrected.has(id)));
  return {
    train, corrected, ignoreClasses: ignore,
    counts: {
      rejected: trainIds.length - train.length, corrected: corrected.size,
      rejected_classes: [...ignore.values()].reduce((n, cs) => n + cs.length, 0), unused_corrections: correctionIds.size - corrected.size,
    },
  };
}

/** `labels` with the pixels of `classes` set to ignore (in place; returns it). */
export function ignoreClassPixels(labels: Uint8Array, classes: readonly number[]): Uint8Array {
  if (classes.length === 0) return labels;
  const drop = new Uint8Array(256);
  for (const c of classes) drop[c] = 1;
  for (let i = 0; i < labels.length; i++) if (drop[labels[i]]) labels[i] = IGNORE;
  return labels;
}

