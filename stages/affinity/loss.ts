/**
 * AffinityNet's balanced loss (PSA train_aff.py):
 *   L = L_bg+ / 4 + L_fg+ / 4 + L_neg / 2,
 *   L_bg+ = mean over bg-positive pairs of -log a_ij, L_fg+ likewise over fg-positive pairs,
 *   L_neg = mean over negative pairs of -log(1 - a_ij),
 * with a clipped into [eps, 1 - eps] (eps 1e-5) so neither log sees 0. Each mean is
 * sum / max(count, 1): a term without pairs is 0 with zero gradient, not NaN (PSA divides by
 * count + 1e-5, which differs from this by a relative 1e-5 when there are pairs).
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../../pipeline/errors.js';
import type { PairLabels } from './pairs.js';

export type AffinityLossTerms = {
  /** The weighted total. */
  loss: tf.Scalar;
  bgPos: tf.Scalar;
  fgPos: tf.Scalar;
  neg: tf.Scalar;
};

/**
 * aff: affinities [K, h', w'] or [B, K, h', w'] (head.ts `affinities`, layout 'region'), pairs:
 * masks of the same shape (pairs.ts `pairLabels`) -> the total and its three terms (scalars;
 * dispose all four). Means run over every pair of the batch together, as PSA's.
 */
export function affinityLoss(aff: tf.Tensor, pairs: PairLabels, eps = 1e-5): AffinityLossTerms {
  for (const [name, m] of Object.entries(pairs) as [string, tf.Tensor][]) {
    if (m.rank !== aff.rank || m.shape.some((s, i) => s !== aff.shape[i])) {
      throw new TagsegError(`affinityLoss: ${name} mask [${m.shape.join(', ')}] does not match affinities [${aff.shape.join(', ')}]`);
    }
  }
  if (!(eps > 0 && eps < 0.5)) throw new TagsegError(`affinityLoss: eps must be in (0, 0.5), got ${eps}`);
  return tf.tidy((): AffinityLossTerms => {
    const a = tf.clipByValue(aff, eps, 1 - eps);
    const pos = tf.neg(tf.log(a));
    const neg = tf.neg(tf.log(tf.sub(1, a)));
    const mean = (mask: tf.Tensor, loss: tf.Tensor) => {
      const m = tf.cast(mask, 'float32');
      return tf.div(tf.sum(tf.mul(m, loss)), tf.maximum(tf.sum(m), 1)) as tf.Scalar;
    };
    const bgPos = mean(pairs.bgPos, pos);
    const fgPos = mean(pairs.fgPos, pos);
    const negT = mean(pairs.neg, neg);
    const loss = tf.addN([tf.div(bgPos, 4), tf.div(fgPos, 4), tf.div(negT, 2)]) as tf.Scalar;
    return { loss, bgPos, fgPos, neg: negT };
  });
}
