/**
 * The cam stage's inference: the multi-scale x flip CAMs of one image from the trained classifier
 * (the recipe in maps/multiscale.ts), and its logits for the classification scores.
 */
import * as tf from '@tensorflow/tfjs';
import type { CamNet } from '../../nn/cam_net.js';
import type { ClassMap } from '../../maps/labels.js';
import { multiScaleMaps, strideSize, taggedMaxNormalized } from '../../maps/multiscale.js';

export interface CamResult {
  /** float32 [tags.length, height, width], channel-major, each channel max-normalised. */
  maps: Float32Array;
  height: number;
  width: number;
  /** Classifier logits (one per output) of the unflipped image at scale 1. */
  logits: Float32Array;
}

/**
 * CAMs of one image. `pixels`: uint8 RGB [H, W, 3]; `tags`: dataset class indices of the maps to
 * keep (foreground only, in this order). Returns plain arrays; no tensor outlives the call.
 */
export async function computeCams(
  net: CamNet, map: ClassMap, pixels: Uint8Array, H: number, W: number, tags: readonly number[],
  opts: { scales: number[]; flip: boolean },
): Promise<CamResult> {
  const h = strideSize(H);
  const w = strideSize(W);
  const { maps, logits } = tf.tidy(() => {
    const img = tf.cast(tf.tensor4d(Int32Array.from(pixels), [1, H, W, 3], 'int32'), 'float32') as tf.Tensor4D;
    let logitsT: tf.Tensor2D | null = null;
    const sum = multiScaleMaps(net.backbone, (f) => net.head.camMaps(f), img, h, w, opts, (last) => {
      logitsT ??= net.head.classifierLogits(last);
    });
    logitsT ??= net.head.classifierLogits(net.backbone.forward(net.backbone.preprocess(img), false).last);
    return { maps: taggedMaxNormalized(sum, tags.map((t) => map.toOutput[t])), logits: tf.squeeze(logitsT as tf.Tensor2D, [0]) };
  });
  try {
    const [m, l] = await Promise.all([maps.data(), logits.data()]);
    return { maps: m as Float32Array, height: h, width: w, logits: l as Float32Array };
  } finally {
    tf.dispose([maps, logits]);
  }
}
