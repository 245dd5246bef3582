/**
 * The random walk of an image's maps over AffinityNet's predicted affinities (PSA infer_aff.py,
 * IRN step/make_sem_seg_labels.py), on the stride-4 grid of cams.arrow (h = ceil(H / 4),
 * w = ceil(W / 4)). The affinity stage walks the CAMs with it, the contrast stage its refined CAMs.
 */
import * as tf from '@tensorflow/tfjs';
import { affinities } from '../nn/affinity_head.js';
import { type AffinityNet, embed } from '../nn/affinity_net.js';
import { type Offset, randomWalk, withBackground } from '../ops/randomwalk.js';

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
