/**
 * Small pieces shared by the contrastive losses of the `segment` stage (nn/contrastive/*.ts):
 * batch validation and read-back, detach, row normalisation, seeded sampling in JS.
 *
 * Randomness is drawn in JS from nn/rng.ts and turned into index tensors (tfjs random ops are not
 * reproducible across backends), and selections use tf.gather on flattened tensors (tfjs has no
 * gradient for GatherNd / ScatterNd / TopK).
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../../pipeline/errors.js';
import type { Rng } from '../rng.js';

/** Label value of ignored pixels. */
export const IGNORE_LABEL = 255;

/** Identity whose gradient is zero (torch `.detach()`; tfjs has no stopGradient op). */
export function detach<T extends tf.Tensor>(x: T): T {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const a = args[0] as tf.Tensor;
    return { value: tf.clone(a), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) };
  });
  return f(x) as T;
}

/** Rows of x [N, D] divided by max(||row||, 1e-12) (torch F.normalize, eps 1e-12). Differentiable. */
export function l2Rows(x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.div(x, tf.maximum(tf.sqrt(tf.sum(tf.square(x), 1, true)), 1e-12)) as tf.Tensor2D);
}

/**
 * A scalar 0 that depends on `x` (gradient: zeros), for batches where a loss has nothing to
 * contrast: the caller's tf.variableGrads then still sees every variable on the path.
 */
export function zeroLoss(x: tf.Tensor): tf.Scalar {
  return tf.tidy(() => tf.mul(tf.sum(x), 0) as tf.Scalar);
}

/** Shapes of a checked batch. */
export interface BatchShape {
  b: number;
  h: number;
  w: number;
  d: number;
  /** Classes K of `probs` (when given). */
  k: number;
  /** Pixels B * h * w. */
  n: number;
}

/**
 * Checks embeddings [B, h, w, D], labels [B, h, w] and (optionally) probs [B, h, w, K] against each
 * other and the loss's classes / dim; throws a TagsegError naming the mismatch.
 */
export function checkBatch(
  who: string,
  x: { embeddings: tf.Tensor4D; labels: tf.Tensor3D; probs?: tf.Tensor4D },
  classes: number,
  dim: number,
): BatchShape {
  const e = x.embeddings;
  if (e.rank !== 4) throw new TagsegError(`${who}: embeddings must be [B, h, w, D], got [${e.shape.join(', ')}]`);
  const [b, h, w, d] = e.shape;
  if (d !== dim) throw new TagsegError(`${who}: embeddings have ${d} channels, the loss was built for dim ${dim}`);
  const l = x.labels;
  if (l.rank !== 3 || l.shape[0] !== b || l.shape[1] !== h || l.shape[2] !== w) {
    throw new TagsegError(`${who}: labels must be [${b}, ${h}, ${w}] like the embeddings, got [${l.shape.join(', ')}]`);
  }
  if (l.dtype !== 'int32') throw new TagsegError(`${who}: labels must be int32, got ${l.dtype}`);
  const p = x.probs;
  if (p && (p.rank !== 4 || p.shape[0] !== b || p.shape[1] !== h || p.shape[2] !== w || p.shape[3] !== classes)) {
    throw new TagsegError(`${who}: probs must be [${b}, ${h}, ${w}, ${classes}], got [${p.shape.join(', ')}]`);
  }
  return { b, h, w, d, k: classes, n: b * h * w };
}

/**
 * Labels read back [N] (N = B h w, row-major), with every value outside [0, classes) other than
 * 255 rejected: a pseudo-mask with a stray value is a bug upstream, not something to contrast.
 */
export function readLabels(who: string, labels: tf.Tensor3D, classes: number): Int32Array {
  const y = labels.dataSync() as Int32Array;
  for (let i = 0; i < y.length; i++) {
    const v = y[i];
    if (v !== IGNORE_LABEL && !(v >= 0 && v < classes)) {
      throw new TagsegError(`${who}: label ${v} at pixel ${i} is outside [0, ${classes}) and not ${IGNORE_LABEL} (ignore)`);
    }
  }
  return y;
}

/** Row-wise argmax and max of probs [N * K] -> pred [N] int32, conf [N]. Ties -> the lower class. */
export function argmaxRows(p: Float32Array, n: number, k: number): { pred: Int32Array; conf: Float32Array } {
  const pred = new Int32Array(n);
  const conf = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    let bv = p[i * k];
    for (let c = 1; c < k; c++) {
      const v = p[i * k + c];
      if (v > bv) {
        bv = v;
        best = c;
      }
    }
    pred[i] = best;
    conf[i] = bv;
  }
  return { pred, conf };
}

/**
 * `k` distinct items of `items` chosen uniformly (partial Fisher-Yates on a copy; torch.randperm(n)[:k]).
 * k >= items.length returns a shuffled copy of all.
 */
export function sampleWithoutReplacement(rng: Rng, items: readonly number[], k: number): number[] {
  const a = items.slice();
  const m = Math.min(k, a.length);
  for (let i = 0; i < m; i++) {
    const j = rng.int(i, a.length);
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
  return a.slice(0, m);
}

/** Index of a draw from the discrete distribution with cumulative sums `cdf` (last entry = total). */
export function drawFromCdf(cdf: Float64Array, u: number): number {
  const target = u * cdf[cdf.length - 1];
  let lo = 0;
  let hi = cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cdf[mid] > target) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** Positive integer check with a clear message. */
export function checkPositiveInt(who: string, name: string, v: number): void {
  if (!(Number.isInteger(v) && v > 0)) throw new TagsegError(`${who}: ${name} must be a positive integer, got ${v}`);
}

/** Positive finite number check. */
export function checkPositive(who: string, name: string, v: number): void {
  if (!(Number.isFinite(v) && v > 0)) throw new TagsegError(`${who}: ${name} must be a positive number, got ${v}`);
}
