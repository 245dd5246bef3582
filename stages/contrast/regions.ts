/**
 * Regional embeddings (RCA, maeve07/RCA models/rca.py): for each tagged class of an image, the
 * feature map averaged over that class's region.
 *
 * - Region source: RCA takes the softmax over classes of the coarse CAM and keeps the pixels where
 *   a class's softmax exceeds its own spatial mean; tagseg can also take the affinity stage's
 *   propagated maps (`contrast.region: affinity`), where the source is the map itself.
 * - Pooling: 'mask' (RCA: the binary region above the mean, every pixel weight 1) or 'weighted'
 *   (the source map itself as weights: CAM-weighted pooling).
 * Region weights never carry gradient (RCA detaches the mask: `mask_i.float().detach()`).
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../../pipeline/errors.js';

export type Pooling = 'mask' | 'weighted';

/** One region: batch item `b`, classifier output `k`. */
export interface RegionRef {
  b: number;
  k: number;
}

/** Identity whose gradient is zero (torch `.detach()`; tfjs has no stopGradient op). */
export function detach<T extends tf.Tensor>(x: T): T {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const a = args[0] as tf.Tensor;
    return { value: tf.clone(a), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) };
  });
  return f(x) as T;
}

/**
 * Region weights [B, h, w, K] from a non-negative source map [B, h, w, K]: 'mask' -> 1 where the
 * source exceeds its spatial mean (per item and class), else 0; 'weighted' -> the source. Detached.
 */
export function regionWeights(source: tf.Tensor4D, pooling: Pooling): tf.Tensor4D {
  return tf.tidy(() => {
    const s = detach(source);
    if (pooling === 'weighted') return s;
    // tf.step (gradient 0) rather than greater: the tape must not meet an op without a gradient
    return tf.step(tf.sub(s, tf.mean(s, [1, 2], true))) as tf.Tensor4D;
  });
}

/**
 * Weighted average of `features` [B, h, w, C] over each region's weights: weights [B, h, w, K],
 * regions (b, k) -> [R, C], row r = sum_xy f[b] * w[b, :, :, k] / sum_xy w[b, :, :, k]. A region
 * whose weights sum to 0 gives a zero row. Differentiable w.r.t. `features`.
 */
export function regionPool(features: tf.Tensor4D, weights: tf.Tensor4D, regions: readonly RegionRef[]): tf.Tensor2D {
  const [B, h, w, C] = features.shape;
  const K = weights.shape[3];
  if (weights.shape[0] !== B || weights.shape[1] !== h || weights.shape[2] !== w) {
    throw new TagsegError(`regionPool: weights [${weights.shape.join(', ')}] do not match features [${features.shape.join(', ')}]`);
  }
  for (const r of regions) {
    if (!(r.b >= 0 && r.b < B && r.k >= 0 && r.k < K)) throw new TagsegError(`regionPool: region (${r.b}, ${r.k}) outside [${B}, ${K}]`);
  }
  return tf.tidy(() => {
    if (regions.length === 0) return tf.zeros([0, C]) as tf.Tensor2D;
    const wt = tf.transpose(tf.reshape(weights, [B, h * w, K]), [0, 2, 1]); // [B, K, hw]
    const sums = tf.matMul(wt, tf.reshape(features, [B, h * w, C])); // [B, K, C]
    const mass = tf.sum(wt, 2, true); // [B, K, 1]
    const mean = tf.div(sums, tf.maximum(mass, 1e-12)); // (no `greater` on the tape: it has no gradient)
    const idx = tf.tensor1d(regions.map((r) => r.b * K + r.k), 'int32');
    return tf.gather(tf.reshape(mean, [B * K, C]), idx) as tf.Tensor2D;
  });
}

/** Rows divided by their L2 norm (torch F.normalize, eps 1e-12). */
export function l2Normalize(x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.div(x, tf.maximum(tf.norm(x, 'euclidean', 1, true), 1e-12)) as tf.Tensor2D);
}
