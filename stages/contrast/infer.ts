/**
 * RCA inference: refined CAMs (backbone -> aggregation with the memory centroids -> refined head)
 * with the cam stage's recipe (maps/multiscale.ts, IRN make_cam.py): scales x horizontal flip,
 * ReLU, flipped maps flipped back, every scale resized (bilinear, half-pixel centres) to the
 * stride-4 grid of the working size and summed; the tagged classes kept, each divided by its max.
 */
import * as tf from '@tensorflow/tfjs';
import { CAM_STRIDE, multiScaleMaps, strideSize, taggedMaxNormalized } from '../../maps/multiscale.js';
import type { ClassMap } from '../../maps/labels.js';
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
    const sum = multiScaleMaps(net.backbone, (f) => net.refinedMaps(f), img, h, w, opts);
    return taggedMaxNormalized(sum, tags.map((t) => map.toOutput[t]));
  });
  try {
    return { maps: (await maps.data()) as Float32Array, height: h, width: w };
  } finally {
    maps.dispose();
  }
}
