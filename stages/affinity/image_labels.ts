/**
 * Affinity labels of one image from its stored CAMs (optionally refined by the dense CRF, IRN
 * step/cam_to_ir_label.py), for training; the random walk that uses the trained net is
 * maps/random_walk.ts.
 *
 * Everything works on the stride-4 grid of cams.arrow (h = ceil(H / 4), w = ceil(W / 4)).
 */
import * as tf from '@tensorflow/tfjs';
import { CRF_PRESETS, type DenseCrfOptions, argmaxLabels, denseCrf, unaryFromLabels } from '../../ops/crf.js';
import { TagsegError } from '../../pipeline/errors.js';
import { type LabelRefiner, affinityLabels } from './labels.js';

/**
 * Box-average RGB [H, W, 3] down to [h, w, 3] (each cell = the mean of the pixels whose
 * floor(y * h / H), floor(x * w / W) is that cell), uint8.
 */
export function downsampleImage(pixels: Uint8Array, H: number, W: number, h: number, w: number): Uint8Array {
  if (pixels.length !== H * W * 3) throw new TagsegError(`downsampleImage: ${pixels.length} bytes for ${H} x ${W} x 3`);
  const sum = new Float64Array(h * w * 3);
  const cnt = new Float64Array(h * w);
  for (let y = 0; y < H; y++) {
    const cy = Math.min(h - 1, Math.floor((y * h) / H));
    for (let x = 0; x < W; x++) {
      const cx = Math.min(w - 1, Math.floor((x * w) / W));
      const c = cy * w + cx;
      const i = (y * W + x) * 3;
      sum[c * 3] += pixels[i];
      sum[c * 3 + 1] += pixels[i + 1];
      sum[c * 3 + 2] += pixels[i + 2];
      cnt[c]++;
    }
  }
  const out = new Uint8Array(h * w * 3);
  for (let c = 0; c < h * w; c++) for (let k = 0; k < 3; k++) out[c * 3 + k] = cnt[c] > 0 ? Math.round(sum[c * 3 + k] / cnt[c]) : 0;
  return out;
}

/**
 * IRN's CRF on the stride-4 grid: its spatial widths are in full-resolution pixels (gaussian sxy 3,
 * bilateral sxy 50), so they are divided by the stride here; colour width and weights unchanged.
 */
export function gridCrfOptions(stride: number): DenseCrfOptions {
  const p = CRF_PRESETS.irnLabel;
  return {
    iterations: p.iterations,
    gaussian: p.gaussian ? { sxy: p.gaussian.sxy / stride, compat: p.gaussian.compat } : null,
    bilateral: p.bilateral ? { sxy: p.bilateral.sxy / stride, srgb: p.bilateral.srgb, compat: p.bilateral.compat } : null,
    normalization: p.normalization,
  };
}

/**
 * A LabelRefiner (labels.ts) running the dense CRF on `image` ([h, w, 3] at the label grid) with
 * unary from the label map at gt_prob 0.7 (IRN crf_inference_label; 255 cells get a uniform
 * unary). The C labels are the background (when not null) and the image's tags; with fewer than
 * two there is nothing to refine.
 */
export function crfRefiner(image: Uint8Array, background: number | null, tags: readonly number[], stride: number): LabelRefiner {
  const ids = background === null ? [...tags] : [background, ...tags];
  const toCompact = new Map(ids.map((c, i) => [c, i]));
  const opts = gridCrfOptions(stride);
  return (labels, { height, width }) => {
    if (ids.length < 2) return labels;
    const compact = new Uint8Array(labels.length);
    for (let i = 0; i < labels.length; i++) compact[i] = toCompact.get(labels[i]) ?? 255;
    const q = denseCrf(unaryFromLabels(compact, ids.length, 0.7), image, height, width, ids.length, opts);
    const am = argmaxLabels(q, labels.length, ids.length);
    const out = new Uint8Array(am.length);
    for (let i = 0; i < am.length; i++) out[i] = ids[am[i]];
    return out;
  };
}

export interface LabelSettings {
  background: number | null;
  confFg: number;
  confBg: number;
  margin: number;
  floor: number;
  crf: boolean;
}

/**
 * Affinity labels [h * w] of one image from its stored CAMs [C, h, w] (float32) and tags; with
 * `crf` each of the two label maps (labels.ts, with or without a background class) is
 * CRF-refined on the image box-averaged to the grid.
 */
export function imageAffinityLabels(
  cams: Float32Array, tags: readonly number[], h: number, w: number,
  image: { pixels: Uint8Array; height: number; width: number } | null, s: LabelSettings, stride: number,
): Uint8Array {
  const t = tf.tensor3d(cams, [tags.length, h, w]);
  try {
    const refine = s.crf && image
      ? crfRefiner(downsampleImage(image.pixels, image.height, image.width, h, w), s.background, tags, stride)
      : undefined;
    return affinityLabels(t, tags, {
      background: s.background, confFgThres: s.confFg, confBgThres: s.confBg, margin: s.margin, floor: s.floor, refine,
    });
  } finally {
    t.dispose();
  }
}
