/**
 * RCA's semantic contrast (maeve07/RCA models/rca.py, "closs_1"): InfoNCE between a region's
 * projected embedding (the anchor, L2-normalised) and the memory (L2-normalised entries), with
 * every entry of the anchor's class a positive and every entry of the other classes a negative.
 * For anchor a with positives P and negatives N, logits l_j = a . m_j / tau:
 *
 *   loss(a) = mean_{p in P} -( l_p - log( exp(l_p) + sum_{n in N} exp(l_n) ) )
 *
 * (each positive against all negatives, as the official code; not SupCon's shared denominator),
 * and the loss is the mean over anchors that have at least one valid positive. Only valid
 * (filled) memory entries count. The max logit is subtracted before exp for stability (it cancels).
 * RCA also mixes each anchor with another image's region (mixup, Beta(8, 8)); tagseg leaves that
 * out (one anchor per region, no mixing).
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../../pipeline/errors.js';
import { detach } from './regions.js';

/**
 * anchors [R, D] and memory [N, D] (both already L2-normalised), anchorClass [R] and memoryClass
 * [N] int32 class ids, valid [N] (1 = filled entry, 0 = ignore), tau > 0 -> scalar (0 when no
 * anchor has a valid positive). Gradient flows to `anchors` only if the caller passes the memory
 * as a constant (it is a non-trainable variable in the stage).
 */
export function infoNCE(
  anchors: tf.Tensor2D, anchorClass: tf.Tensor1D, memory: tf.Tensor2D, memoryClass: tf.Tensor1D, valid: tf.Tensor1D, tau: number,
): tf.Scalar {
  if (anchors.rank !== 2 || memory.rank !== 2 || anchors.shape[1] !== memory.shape[1]) {
    throw new TagsegError(`infoNCE: anchors [${anchors.shape.join(', ')}] and memory [${memory.shape.join(', ')}] must be [R, D] and [N, D]`);
  }
  if (anchorClass.shape[0] !== anchors.shape[0] || memoryClass.shape[0] !== memory.shape[0] || valid.shape[0] !== memory.shape[0]) {
    throw new TagsegError('infoNCE: class / valid vectors do not match the rows of anchors and memory');
  }
  if (!(tau > 0)) throw new TagsegError(`infoNCE: temperature must be > 0, got ${tau}`);
  return tf.tidy(() => {
    if (anchors.shape[0] === 0 || memory.shape[0] === 0) return tf.scalar(0);
    const logits = tf.div(tf.matMul(anchors, memory, false, true), tau); // [R, N]
    const v = tf.reshape(tf.cast(valid, 'float32'), [1, -1]);
    const same = tf.cast(tf.equal(tf.reshape(anchorClass, [-1, 1]), tf.reshape(memoryClass, [1, -1])), 'float32'); // [R, N]
    const pos = tf.mul(same, v);
    const neg = tf.mul(tf.sub(1, same), v);
    // shift by the row max over valid entries (cancels in -(l_p - log(...))). Invalid entries get
    // l = -1e4 (exp 0) rather than their shifted logit: with no valid entry at all (an empty
    // memory) the shift is -1e9 and exp would overflow to inf, whose 0 * inf is NaN in the
    // forward and backward passes. The 1e-30 keeps log finite where both terms are 0 (entries
    // that are not positives); a valid positive's exp(l) is >= exp(-2 / tau), far above it.
    const shift = tf.max(tf.add(logits, tf.mul(tf.sub(1, v), -1e9)), 1, true);
    const isValid = tf.greater(tf.tile(v, [anchors.shape[0], 1]), 0);
    const l = tf.where(isValid, tf.sub(logits, detach(shift)), tf.fill(logits.shape, -1e4));
    const negSum = tf.sum(tf.mul(tf.exp(l), neg), 1, true); // [R, 1]
    const perEntry = tf.neg(tf.sub(l, tf.log(tf.add(tf.add(tf.exp(l), negSum), 1e-30)))); // [R, N]
    const nPos = tf.sum(pos, 1); // [R]
    const perAnchor = tf.div(tf.sum(tf.mul(perEntry, pos), 1), tf.maximum(nPos, 1));
    const has = tf.cast(tf.greater(nPos, 0), 'float32');
    return tf.div(tf.sum(tf.mul(perAnchor, has)), tf.maximum(tf.sum(has), 1)) as tf.Scalar;
  });
}

