/**
 * Training labels of the segment stage and its validation carve, as pure functions.
 *
 * - Validation split: an image of `dataset.train_split` is held out when a seeded hash of its id
 *   falls below `segment.val_fraction` (`isValId`). A hash, not a shuffled count: the decision
 *   for one id never depends on the other ids, so adding images to a dataset never moves an
 *   existing image between train and val, and the same ids are held out in both label modes
 *   (`pseudo` and the `gt` oracle). The ids are written to models/segment/val_ids.txt.
 * - Labels: pseudo-masks come at the ORIGINAL image size (cache/pseudo_masks.arrow); the network
 *   trains at the working size of cache/images.arrow, so they are resized by nearest neighbour
 *   (`labelsAtWorkingSize`, the rule ingest uses for ground-truth masks: no class is invented at
 *   boundaries). Oracle mode takes images.arrow's `mask` column, already at the working size.
 */
import { createHash } from 'node:crypto';
import { resizeNearest } from '../../data/decode.js';
import { artifact } from '../../pipeline/artifacts.js';
import { TagsegError } from '../../pipeline/errors.js';

export const IGNORE = 255;

/** 32-bit FNV-1a of `seed` and `id`, then a murmur3 finaliser; -> [0, 1). */
export function idHash(id: string, seed: number): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  const text = `segment-val/${id}`;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // FNV's low bits mix poorly for ids that differ in the last character: finalise (murmur3 fmix32).
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return (h >>> 0) / 2 ** 32;
}

/** Whether image `id` of the train split belongs to the validation carve. */
export function isValId(id: string, fraction: number, seed: number): boolean {
  if (!(fraction > 0 && fraction < 1)) throw new TagsegError(`segment.val_fraction must be in (0, 1), got ${fraction}`, { file: 'params.yaml' });
  return idHash(id, seed) < fraction;
}

/**
 * Split the train split's ids into training and validation ids (input order kept). A tiny split
 * whose hashes all fall on one side (12 images at 0.3: 1.4% of seeds) still gets one image on
 * each side: the lowest hash goes to val, or the highest to train; only then does one id's side
 * depend on the others. A split of one image cannot be carved.
 */
export function carveVal(ids: readonly string[], fraction: number, seed: number): { train: string[]; val: string[] } {
  if (ids.length < 2) {
    throw new TagsegError(`the train split has ${ids.length} image(s); the segment stage needs two to carve a validation image`, { file: 'params.yaml' });
  }
  const h = new Map(ids.map((id) => [id, idHash(id, seed)]));
  const inVal = new Set(ids.filter((id) => isValId(id, fraction, seed)));
  const byHash = [...ids].sort((a, b) => h.get(a)! - h.get(b)!);
  if (inVal.size === 0) inVal.add(byHash[0]);
  if (inVal.size === ids.length) inVal.delete(byHash[byHash.length - 1]);
  return { train: ids.filter((id) => !inVal.has(id)), val: ids.filter((id) => inVal.has(id)) };
}

/**
 * A label mask [srcH, srcW] -> [H, W] by nearest neighbour, validated: every value must be a
 * class index in [0, numClasses) or 255. `where` names the table and row in errors.
 */
export function labelsAtWorkingSize(mask: Uint8Array, srcH: number, srcW: number, H: number, W: number, numClasses: number, where: { file: string; id: string }): Uint8Array {
  if (mask.length !== srcH * srcW) {
    throw new TagsegError(`row '${where.id}': mask has ${mask.length} values, expected ${srcH} x ${srcW}`, { file: where.file });
  }
  for (let i = 0; i < mask.length; i++) {
    const v = mask[i];
    if (v !== IGNORE && v >= numClasses) {
      throw new TagsegError(`row '${where.id}': label ${v} at pixel ${i} is not a class index (0..${numClasses - 1}) or 255`, { file: where.file });
    }
  }
  return resizeNearest(mask, srcW, srcH, W, H);
}

/** Fraction of pixels that carry a label (not 255). */
export function labelledFraction(labels: Uint8Array): number {
  let n = 0;
  for (const v of labels) if (v !== IGNORE) n++;
  return labels.length ? n / labels.length : 0;
}

/**
 * A caller's explicit split of the train split (the CV protocol's folds): both lists must be
 * ids of `ids` (the train split), disjoint, training non-empty. Returned in `ids` order (the
 * order of images.arrow), so the training order does not depend on how the caller listed them.
 */
export function explicitSplit(ids: readonly string[], split: { train: readonly string[]; val: readonly string[] }, splitName: string): { train: string[]; val: string[] } {
  const known = new Set(ids);
  const train = new Set(split.train);
  const val = new Set(split.val);
  for (const id of [...train, ...val]) {
    if (!known.has(id)) throw new TagsegError(`image '${id}' of the requested split is not in split '${splitName}'`, { file: artifact('dataset'), hint: 'rerun the protocol after ingest: its folds are stale' });
    if (train.has(id) && val.has(id)) throw new TagsegError(`image '${id}' is both a training and a held-out image`);
  }
  if (train.size === 0) throw new TagsegError('the requested split has no training image');
  return { train: ids.filter((id) => train.has(id)), val: ids.filter((id) => val.has(id)) };
}

/** A short key of an id list (order kept), for training hashes of an explicit split. */
export function idsKey(ids: readonly string[]): string {
  return createHash('sha256').update(JSON.stringify(ids)).digest('hex').slice(0, 16);
}
