/**
 * Multi-scale CAM inference (IRN step/make_cam.py): for each scale s the image resized by s and
 * (optionally) its horizontal mirror go through backbone + 1x1 classifier conv; CAM = ReLU of
 * that map; the mirror's map is flipped back and added; every scale's map is resized
 * (bilinear, half-pixel centres) to the common stride-4 grid of the working size
 * (ceil(H / 4) x ceil(W / 4), IRN's strided_size) and summed. Only the image's tagged classes are
 * kept, each divided by its own spatial max (a class whose map is all 0 stays 0).
 * The cam stage runs it with its classifier (stages/cam/infer.ts), the contrast stage with its
 * refined head.
 */
import * as tf from '@tensorflow/tfjs';
import { type Backbone, disposeFeatures } from '../nn/backbone.js';

/** Stride of the stored maps relative to the working size. */
export const CAM_STRIDE = 4;

export function strideSize(n: number, stride = CAM_STRIDE): number {
  return Math.ceil(n / stride);
}

/**
 * The recipe above for any class-map function of the backbone's last features (the cam stage's
 * classifier conv, the contrast stage's refined head): img [1, H, W, 3] in [0, 255] -> the maps
 * summed over scales (each ReLU'd, its mirror flipped back and added, resized to [h, w]) [1, h, w, K].
 * `atScale1` sees the unflipped image's last features at scale 1 (the classifier logits). Call
 * inside tf.tidy.
 */
export function multiScaleMaps(
  backbone: Backbone, classMaps: (last: tf.Tensor4D) => tf.Tensor4D, img: tf.Tensor4D, h: number, w: number,
  opts: { scales: number[]; flip: boolean }, atScale1?: (last: tf.Tensor4D) => void,
): tf.Tensor4D {
  const [, H, W] = img.shape;
  let sum: tf.Tensor4D | null = null;
  for (const s of opts.scales) {
    const x = s === 1 ? img : tf.image.resizeBilinear(img, [Math.max(1, Math.round(H * s)), Math.max(1, Math.round(W * s))], false, true);
    const batch = opts.flip ? tf.concat([x, tf.reverse(x, 2)], 0) : x;
    const f = backbone.forward(backbone.preprocess(batch), false);
    if (s === 1 && atScale1) atScale1(tf.slice(f.last, [0, 0, 0, 0], [1, -1, -1, -1]));
    let cam = tf.relu(classMaps(f.last)) as tf.Tensor4D;
    disposeFeatures(f);
    if (opts.flip) {
      const [a, b] = tf.split(cam, 2, 0) as [tf.Tensor4D, tf.Tensor4D];
      cam = tf.add(a, tf.reverse(b, 2)) as tf.Tensor4D;
    }
    const r = tf.image.resizeBilinear(cam, [h, w], false, true);
    sum = sum ? (tf.add(sum, r) as tf.Tensor4D) : r;
  }
  return sum!;
}

/** Summed maps [1, h, w, K] -> the channels `outIdx` as [C, h, w], each divided by its max (all-zero stays 0). Call inside tf.tidy. */
export function taggedMaxNormalized(sum: tf.Tensor4D, outIdx: readonly number[]): tf.Tensor3D {
  const [, h, w] = sum.shape;
  if (outIdx.length === 0) return tf.zeros([0, h, w]);
  const picked = tf.transpose(tf.gather(tf.squeeze(sum, [0]), tf.tensor1d(outIdx as number[], 'int32'), 2), [2, 0, 1]); // [C,h,w]
  const mx = tf.max(picked, [1, 2], true);
  return tf.div(picked, tf.where(tf.greater(mx, 0), mx, tf.onesLike(mx))) as tf.Tensor3D;
}
