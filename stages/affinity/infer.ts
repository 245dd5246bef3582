/**
 * Per-image pieces of the affinity stage: affinity labels from stored CAMs (optionally refined by
 * the dense CRF, IRN step/cam_to_ir_label.py) and the random walk of the CAMs over the predicted
 * affinities (PSA infer_aff.py, IRN step/make_sem_seg_labels.py).
 *
 * Everything works on the stride-4 grid of cams.arrow (h = ceil(H / 4), w = ceil(W / 4)).
 */
import * as tf from '@tensorflow/tfjs';
import { CRF_PRESETS, type DenseCrfOptions, argmaxLabels, denseCrf, unaryFromLabels } from '../../ops/crf.js';
import { type Offset, randomWalk, withBackground } from '../../ops/randomwalk.js';
import { TagsegError } from '../../pipeline/errors.js';
import { affinities } from './head.js';
import { type LabelRefiner, affinityLabels } from './labels.js';
import { type AffinityNet, embed } from './net.js';

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

export interface WalkSettings {
  offsets: readonly Offset[];
  radius: number;
  beta: number;
  logt: number;
  /** (1 - max CAM)^alpha bg channel (PSA), or null for datasets without background. */
  alpha: number | null;
}

export interface WalkResult {
  /** [C, h, w], the propagated fg maps, each divided by its max (an all-zero channel stays 0). */
  maps: Float32Array;
  /** With bg: [1 + C, h, w], the propagated [bg, fg...] before normalisation (PSA's argmax input). */
  raw: Float32Array | null;
  /** Seconds spent in the transition + propagation (data read back included). */
  walkSeconds: number;
}

/**
 * Random walk of one image: pixels uint8 [H, W, 3], cams [C, h, w] -> WalkResult. Affinities
 * are predicted at the grid in 'full' layout; the map walked is [bg, CAMs] with a background
 * (bg = (1 - max_c CAM)^alpha, PSA alpha 16) or the CAMs alone. No tensor outlives the call.
 */
export async function walkImage(
  net: AffinityNet, pixels: Uint8Array, H: number, W: number, cams: Float32Array, C: number, h: number, w: number, s: WalkSettings,
): Promise<WalkResult> {
  if (C === 0) return { maps: new Float32Array(0), raw: null, walkSeconds: 0 };
  const aff = tf.tidy(() => {
    const x = tf.cast(tf.tensor4d(pixels, [1, H, W, 3], 'int32'), 'float32') as tf.Tensor4D;
    const f = embed(net, x, [h, w]);
    return tf.squeeze(affinities(f, s.offsets, s.radius, 'full'), [0]) as tf.Tensor3D;
  });
  // materialise the affinities so the timing below is the walk's alone
  await aff.data();
  const t0 = performance.now();
  const [norm, raw] = tf.tidy((): tf.Tensor3D[] => {
    const c = tf.tensor3d(cams, [C, h, w]);
    const map = s.alpha === null ? c : withBackground(c, { alpha: s.alpha });
    const rw = randomWalk(map, aff, s.offsets, s.radius, { beta: s.beta, logt: s.logt });
    const fg = s.alpha === null ? rw : tf.slice(rw, [1, 0, 0], [C, h, w]);
    const mx = tf.max(fg, [1, 2], true);
    const safe = tf.where(tf.greater(mx, 0), mx, tf.onesLike(mx));
    const n = tf.div(fg, safe) as tf.Tensor3D;
    return s.alpha === null ? [n] : [n, rw];
  });
  try {
    const [m, r] = await Promise.all([norm.data(), raw !== undefined ? raw.data() : Promise.resolve(null)]);
    const walkSeconds = (performance.now() - t0) / 1000;
    return { maps: m as Float32Array, raw: r as Float32Array | null, walkSeconds };
  } finally {
    tf.dispose([aff, norm, ...(raw !== undefined ? [raw] : [])]);
  }
}
