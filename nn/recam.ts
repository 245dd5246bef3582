/**
 * Class re-activation loss (ReCAM, Chen et al., CVPR 2022): a multi-label soft-margin (sigmoid)
 * classifier is content to let one CAM cover two classes that are always tagged together (MSRC's
 * face and body), because each logit is judged alone. ReCAM masks the features with each tagged
 * class's own normalised CAM, pools them, and asks a *softmax* over all classes to name that
 * class: a region that would classify as both is penalised, which pulls co-occurring CAMs apart.
 *
 * Deviation from ReCAM's code: the masked features are classified by the CAM head itself (ReCAM
 * trains a second classifier and builds its maps from that one), so the CAMs the later stages
 * read are the ones the loss shapes, and the model format stays the same.
 */
import * as tf from '@tensorflow/tfjs';
import { relu } from './native.js';
import { TagsegError } from '../pipeline/errors.js';

/**
 * features [B,h,w,C], kernel [C,K] (the CAM head's 1x1 conv), targets [B,K] multi-hot -> scalar.
 *
 *   cam_k = ReLU(f W_k) / (max_p ReLU(f W_k) + 1e-5)          per image, per class   [B,P,K]
 *   z_k   = (1/P) sum_p cam_k(p) f(p)                          masked average pooling [B,K,C]
 *   loss  = mean over tagged (b, k) of -log softmax(z_k W)[k]                         (ReCAM eq. 4)
 *
 * 0 when no class is tagged in the batch.
 */
export function reactivationLoss(features: tf.Tensor4D, kernel: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => {
    const [b, h, w, c] = features.shape;
    const k = kernel.shape[1];
    if (kernel.shape[0] !== c || targets.shape[0] !== b || targets.shape[1] !== k) {
      throw new TagsegError(`reactivationLoss: features [${features.shape.join(', ')}], kernel [${kernel.shape.join(', ')}] and targets [${targets.shape.join(', ')}] must be [B,h,w,C], [C,K], [B,K]`);
    }
    const p = h * w;
    const f = tf.reshape(features, [b, p, c]) as tf.Tensor3D;
    const cam = relu(tf.reshape(tf.matMul(tf.reshape(features, [b * p, c]) as tf.Tensor2D, kernel), [b, p, k]));
    const norm = tf.div(cam, tf.add(tf.max(cam, 1, true), 1e-5)) as tf.Tensor3D;
    const pooled = tf.div(tf.matMul(norm, f, true, false), p) as tf.Tensor3D; // [B,K,C]
    const logits = tf.reshape(tf.matMul(tf.reshape(pooled, [b * k, c]), kernel), [b, k, k]);
    const logp = tf.logSoftmax(logits);
    const own = tf.sum(tf.mul(logp, tf.expandDims(tf.eye(k), 0)), -1); // [B,K]: log p of its own class
    const y = tf.cast(targets, 'float32');
    // -log p >= 0 times the tags, so a batch with no tag gives +0
    return tf.div(tf.sum(tf.mul(tf.neg(own), y)), tf.maximum(tf.sum(y), 1)) as tf.Scalar;
  });
}
