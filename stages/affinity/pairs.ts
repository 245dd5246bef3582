/**
 * Pixel pairs for AffinityNet training (PSA voc12/data.py ExtractAffinityLabelInRadius, IRN
 * misc/indexing.py PathIndex): the fixed forward offsets within the radius and, from an affinity
 * label map, which pairs are bg-positive, fg-positive or negative.
 *
 * The geometry (offsets, the PSA source crop) lives in ops/randomwalk.ts because the random walk
 * of both the affinity and the contrast stage needs it; it is re-exported here. Pairs are
 * per-offset masks over the source crop (layout 'region'): entry (k, y, x) is the pair between
 * source (y, x + rf) and target (y + dy_k, x + rf + dx_k), rf = radius - 1, so the loss reads
 * both ends with two shifted tf.slice's of the feature map (see head.ts `affinities`).
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../../pipeline/errors.js';
import { checkOffsets, pairRegion, type Offset } from '../../ops/randomwalk.js';

export { neighbourOffsets, pairRegion, checkOffsets, type Offset, type PairRegion, type PairLayout } from '../../ops/randomwalk.js';

/** Label of "no label" in affinity label maps. */
export const IGNORE = 255;

/**
 * Float32 0/1 masks, one per pair type, [K, h', w'] (or [B, K, h', w'] for batched labels).
 * Every valid pair is in exactly one of them; pairs touching an ignored pixel are in none.
 */
export type PairLabels = {
  /** Both ends background. */
  bgPos: tf.Tensor;
  /** Both ends the same foreground class. */
  fgPos: tf.Tensor;
  /** Both ends labelled, with different labels. */
  neg: tf.Tensor;
};

/**
 * The three pair masks of labels `lab` [b, h, w] over the pair region (AffinityNet's labels: a
 * valid pair of one class is a background or foreground positive, of two classes a negative),
 * [b, K, ph, pw] float32 each; call inside tf.tidy.
 */
function pairMasks(lab: tf.Tensor, offsets: readonly Offset[], background: number | null, b: number, region: ReturnType<typeof pairRegion>): PairLabels {
  const { height: ph, width: pw, left } = region;
  if (offsets.length === 0) return { bgPos: tf.zeros([b, 0, ph, pw]), fgPos: tf.zeros([b, 0, ph, pw]), neg: tf.zeros([b, 0, ph, pw]) };
  const src = tf.slice(lab, [0, 0, left], [b, ph, pw]);
  const srcValid = tf.notEqual(src, IGNORE);
  const srcBg = background === null ? tf.zerosLike(srcValid) : tf.equal(src, background);
  const bgs: tf.Tensor[] = [];
  const fgs: tf.Tensor[] = [];
  const negs: tf.Tensor[] = [];
  for (const { dy, dx } of offsets) {
    const dst = tf.slice(lab, [0, dy, left + dx], [b, ph, pw]);
    const valid = tf.logicalAnd(srcValid, tf.notEqual(dst, IGNORE));
    const same = tf.equal(src, dst);
    const pos = tf.logicalAnd(valid, same);
    bgs.push(tf.logicalAnd(pos, srcBg));
    fgs.push(tf.logicalAnd(pos, tf.logicalNot(srcBg)));
    negs.push(tf.logicalAnd(valid, tf.logicalNot(same)));
  }
  const stack = (m: tf.Tensor[]) => tf.cast(tf.stack(m, 1), 'float32');
  return { bgPos: stack(bgs), fgPos: stack(fgs), neg: stack(negs) };
}

/**
 * Pair labels from an affinity label map (values: dataset class indices or 255 = ignore), as in
 * PSA's extract_aff_lab_func:
 *   bg-positive: label_i = label_j = background; fg-positive: label_i = label_j != background;
 *   negative: label_i != label_j, both != 255; none: either is 255.
 * `background` null (datasets without a bg class): every positive is fg-positive.
 *
 * labels: [h, w] or [B, h, w] (int32 or float holding integers) -> masks [K, h', w'] or
 * [B, K, h', w'] with h' = h - rf, w' = w - 2 rf (rf = radius - 1), K = offsets.length.
 */
export function pairLabels(labels: tf.Tensor, offsets: readonly Offset[], radius: number, background: number | null): PairLabels {
  checkOffsets(offsets, radius);
  if (labels.rank !== 2 && labels.rank !== 3) {
    throw new TagsegError(`pairLabels: labels must be [h, w] or [B, h, w], got [${labels.shape.join(', ')}]`);
  }
  if (background !== null && !(Number.isInteger(background) && background >= 0 && background < IGNORE)) {
    throw new TagsegError(`pairLabels: background must be a class index in [0, 255) or null, got ${background}`);
  }
  const batched = labels.rank === 3;
  const [b, h, w] = batched ? labels.shape : [1, ...labels.shape];
  const region = pairRegion(h, w, radius);
  return tf.tidy((): PairLabels => {
    const lab = tf.reshape(tf.cast(labels, 'int32'), [b, h, w]);
    let { bgPos, fgPos, neg } = pairMasks(lab, offsets, background, b, region);
    if (!batched) {
      bgPos = tf.squeeze(bgPos, [0]);
      fgPos = tf.squeeze(fgPos, [0]);
      neg = tf.squeeze(neg, [0]);
    }
    return { bgPos, fgPos, neg };
  });
}

export function disposePairLabels(p: PairLabels): void {
  tf.dispose([p.bgPos, p.fgPos, p.neg]);
}
