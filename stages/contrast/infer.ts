/**
 * RCA inference: refined CAMs (backbone -> aggregation with the memory centroids -> refined head)
 * with the cam stage's recipe (stages/cam/infer.ts, IRN make_cam.py): scales x horizontal flip,
 * ReLU, flipped maps flipped back, every scale resized (bilinear, half-pixel centres) to the
 * stride-4 grid of the working size and summed; the tagged classes kept, each divided by its max.
 */
import * as tf from '@tensorflow/tfjs';
import { disposeFeatures } from '../../nn/backbone.js';
import { CAM_STRIDE, strideSize } from '../cam/infer.js';
import type { ClassMap } from '../cam/labels.js';
import type { ContrastNet } from './net.js';

export interface RcaCamResult {
  /** float32 [tags.length, height, width], each channel max-normalised (all-zero stays 0). */
  maps: Float32Array;
  height: number;
  width: number;
}

/** Refined CAMs of one image (uint8 RGB [H, W, 3]); no tensor outlives the call. */
export async function computeRcaCams(
  net: ContrastNet, map: ClassMap, pixels: Uint8Array, H: number, W: number, tags: readonly number[],
  opts: { scales: number[]; flip: boolean },
): Promise<RcaCamResult> {
  const h = strideSize(H, CAM_STRIDE);
  const w = strideSize(W, CAM_STRIDE);
  if (tags.length === 0) return { maps: new Float32Array(0), height: h, width: w };
  const maps = tf.tidy(() => {
    const img = tf.cast(tf.tensor4d(pixels, [1, H, W, 3], 'int32'), 'float32') as tf.Tensor4D;
    let sum: tf.Tensor4D | null = null;
    for (const s of opts.scales) {
      const sh = Math.max(1, Math.round(H * s));
      const sw = Math.max(1, Math.round(W * s));
      const x = s === 1 ? img : tf.image.resizeBilinear(img, [sh, sw], false, true);
      const batch = opts.flip ? tf.concat([x, tf.reverse(x, 2)], 0) : x;
      const f = net.backbone.forward(net.backbone.preprocess(batch), false);
      let cam = tf.relu(net.refinedMaps(f.last)) as tf.Tensor4D;
      disposeFeatures(f);
      if (opts.flip) {
        const [a, b] = tf.split(cam, 2, 0) as [tf.Tensor4D, tf.Tensor4D];
        cam = tf.add(a, tf.reverse(b, 2)) as tf.Tensor4D;
      }
      const r = tf.image.resizeBilinear(cam, [h, w], false, true);
      sum = sum ? (tf.add(sum, r) as tf.Tensor4D) : r;
    }
    const outIdx = tags.map((t) => map.toOutput[t]);
    const picked = tf.transpose(tf.gather(tf.squeeze(sum!, [0]), tf.tensor1d(outIdx, 'int32'), 2), [2, 0, 1]); // [C, h, w]
    const mx = tf.max(picked, [1, 2], true);
    return tf.div(picked, tf.where(tf.greater(mx, 0), mx, tf.onesLike(mx)));
  });
  try {
    return { maps: (await maps.data()) as Float32Array, height: h, width: w };
  } finally {
    maps.dispose();
  }
}
