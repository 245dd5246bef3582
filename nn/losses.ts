/**
 * Losses shared by the stages.
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../pipeline/errors.js';

/**
 * Multi-label soft-margin loss, PyTorch's nn.MultiLabelSoftMarginLoss (reduction 'mean'), the
 * CAM classification loss of PSA and IRN (F.multilabel_soft_margin_loss):
 *   loss = mean_b mean_c -[ y log sigmoid(x) + (1 - y) log sigmoid(-x) ]
 * computed as y * softplus(-x) + (1 - y) * softplus(x), which never takes log of 0 (stable for
 * |x| in the hundreds; softplus' gradient sigmoid(x) is exact at x = 0, unlike the
 * max(x,0) - xy + log1p(exp(-|x|)) rewrite whose kinks give a wrong subgradient there).
 *
 * logits [B,C], targets [B,C] in [0,1] (soft targets allowed) -> scalar.
 */
export function multilabelSoftMarginLoss(logits: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => {
    if (logits.rank !== 2 || targets.rank !== 2 || logits.shape[0] !== targets.shape[0] || logits.shape[1] !== targets.shape[1]) {
      throw new TagsegError(`multilabelSoftMarginLoss: logits [${logits.shape.join(', ')}] and targets [${targets.shape.join(', ')}] must both be [B,C]`);
    }
    const y = tf.cast(targets, 'float32');
    const pos = tf.mul(y, tf.softplus(tf.neg(logits)));
    const neg = tf.mul(tf.sub(1, y), tf.softplus(logits));
    return tf.mean(tf.add(pos, neg)) as tf.Scalar;
  });
}

/**
 * Softmax cross-entropy over the last axis with an ignore label (PyTorch
 * nn.CrossEntropyLoss(ignore_index=255), reduction 'mean'): mean over valid pixels of
 * -log softmax(logits)[label]. When no pixel is valid the loss is 0 with zero gradients (torch
 * returns NaN there; a crop that is all ignore must not poison the step).
 *
 * logits [..., K] (e.g. [B,H,W,K]), labels [...] (e.g. [B,H,W]) integer class ids in [0, K) or
 * `ignoreIndex` -> scalar. Other out-of-range labels contribute 0 but are still counted in the
 * mean, so validate label maps upstream.
 *
 * The gradient is written out, (softmax - onehot) * valid / count: autodiff through the sum over
 * classes built a ones tensor of the logits' shape in JS at every step (tfjs' Sum gradient), 12% of
 * the segment stage's training time at [8, 224, 224, 23].
 */
export function softmaxCrossEntropy(logits: tf.Tensor, labels: tf.Tensor, ignoreIndex = 255): tf.Scalar {
  return tf.tidy(() => {
    const k = logits.shape[logits.rank - 1];
    if (labels.rank !== logits.rank - 1 || labels.shape.some((d, i) => d !== logits.shape[i])) {
      throw new TagsegError(`softmaxCrossEntropy: labels [${labels.shape.join(', ')}] must match logits [${logits.shape.join(', ')}] without the class axis`);
    }
    const lab = tf.cast(labels, 'int32');
    const valid = tf.notEqual(lab, ignoreIndex);
    const onehot = tf.oneHot(tf.where(valid, lab, tf.zerosLike(lab)), k);
    const validF = tf.cast(valid, 'float32');
    const count = tf.maximum(tf.sum(validF), 1);
    const loss = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
      const logp = tf.logSoftmax(x);
      const picked = tf.sum(tf.mul(logp, onehot), -1);
      // -log p >= 0, so an all-ignored crop gives +0
      const value = tf.div(tf.sum(tf.mul(tf.neg(picked), validF)), count) as tf.Scalar;
      save([logp, onehot, tf.expandDims(tf.div(validF, count), -1)]);
      return {
        value,
        gradFunc: (dy: tf.Tensor, [lp, oh, w]: tf.Tensor[]) => tf.mul(tf.sub(tf.exp(lp), oh), tf.mul(w, dy)),
      };
    });
    return loss(logits) as tf.Scalar;
  });
}
