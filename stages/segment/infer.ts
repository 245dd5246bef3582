/**
 * SegNet inference: multi-scale + flip (DeepLab's test-time augmentation). For each scale s the
 * batch is resized by s (bilinear, half-pixel centres), run together with its mirror when `flip`,
 * the logits (already upsampled to the scaled input, net.ts segLogits) are resized back to the
 * working size, turned into probabilities, mirrored back and averaged over all views (DeepLab
 * averages the per-view probabilities). With `crf`, a dense CRF (ops/crf.ts, unary -log p) then
 * refines them at the working size, where the RGB is (DeepLab v1/v2's post-processing; SPML and
 * RCA publish their VOC figures with it). The result is resized bilinearly to the requested
 * output size (the original image size: scores are taken there, against the full-resolution
 * masks) and the argmax is the label.
 */
import * as tf from '@tensorflow/tfjs';
import type { DenseCrfOptions } from '../../ops/crf.js';
import { type CrfRequest, crfOfProbs } from '../../ops/crf_pool.js';
import { TagsegError } from '../../pipeline/errors.js';
import { type SegNet, segLogits } from './net.js';

export interface InferOptions {
  scales: number[];
  flip: boolean;
  /** Dense CRF on the averaged probabilities at the working size (DeepLab v1/v2 post-processing); null/absent: none. */
  crf?: DenseCrfOptions | null;
}

/**
 * Probabilities [B, H, W, K] of images x [B, H, W, 3] (float in [0, 255]), averaged over the
 * views of `o`. Pure tensor function (the caller disposes the result).
 */
export function segProbs(net: SegNet, x: tf.Tensor4D, o: InferOptions): tf.Tensor4D {
  if (o.scales.length === 0) throw new TagsegError('inference needs at least one scale');
  return tf.tidy(() => {
    const [b, H, W] = x.shape;
    let sum: tf.Tensor4D | null = null;
    for (const s of o.scales) {
      const sh = Math.max(1, Math.round(H * s));
      const sw = Math.max(1, Math.round(W * s));
      const xs = sh === H && sw === W ? x : tf.image.resizeBilinear(x, [sh, sw], false, true);
      const views = o.flip ? tf.concat([xs, tf.reverse(xs, 2)], 0) : xs;
      let logits = segLogits(net, views, false);
      if (sh !== H || sw !== W) logits = tf.image.resizeBilinear(logits, [H, W], false, true);
      let p = tf.softmax(logits) as tf.Tensor4D;
      if (o.flip) {
        const [a, m] = tf.split(p, [b, b], 0) as [tf.Tensor4D, tf.Tensor4D];
        p = tf.add(a, tf.reverse(m, 2)) as tf.Tensor4D;
      }
      sum = sum ? (tf.add(sum, p) as tf.Tensor4D) : p;
    }
    return tf.div(sum!, o.scales.length * (o.flip ? 2 : 1)) as tf.Tensor4D;
  });
}

/**
 * Probabilities of a batch of same-size images, `pixels` uint8 RGB [H, W, 3] each at the working
 * size, as one flat [n, H, W, K] array (segProbs).
 */
export async function batchProbs(net: SegNet, pixels: readonly Uint8Array[], H: number, W: number, o: InferOptions): Promise<Float32Array> {
  const n = pixels.length;
  for (const p of pixels) if (p.length !== H * W * 3) throw new TagsegError(`segmentBatch: an image has ${p.length} values, expected ${H} x ${W} x 3`);
  const probs = tf.tidy(() => {
    const data = new Int32Array(n * H * W * 3);
    pixels.forEach((p, i) => data.set(p, i * H * W * 3));
    const x = tf.cast(tf.tensor4d(data, [n, H, W, 3], 'int32'), 'float32') as tf.Tensor4D;
    return segProbs(net, x, o);
  });
  try {
    return (await probs.data()) as Float32Array;
  } finally {
    probs.dispose();
  }
}

/** Label maps uint8 [outH, outW] of flat maps [n, H, W, K]: resized bilinearly to `out`, then the argmax. */
export async function labelsOf(maps: Float32Array, n: number, H: number, W: number, K: number, out: [number, number]): Promise<Uint8Array[]> {
  const labels = tf.tidy(() => {
    let p = tf.tensor4d(maps, [n, H, W, K]);
    if (out[0] !== H || out[1] !== W) p = tf.image.resizeBilinear(p, out, false, true);
    return tf.argMax(p, 3);
  });
  try {
    const flat = (await labels.data()) as Int32Array;
    const size = out[0] * out[1];
    return Array.from({ length: n }, (_, i) => Uint8Array.from(flat.subarray(i * size, (i + 1) * size)));
  } finally {
    labels.dispose();
  }
}

/**
 * Labels of a batch of same-size images: `pixels` uint8 RGB [H, W, 3] each, at the working size
 * -> one uint8 [outH, outW] label map per image (argmax of the probabilities resized to `out`).
 * The CRF reads the image at the grid of the probabilities (the working size), so it runs before
 * the resize to `out`; its marginals are resized like the probabilities would be.
 */
export async function segmentBatch(
  net: SegNet, pixels: readonly Uint8Array[], H: number, W: number, out: [number, number], o: InferOptions,
  runCrf: (r: CrfRequest) => Promise<Float32Array> = (r) => Promise.resolve(crfOfProbs(r)),
): Promise<Uint8Array[]> {
  const n = pixels.length;
  if (n === 0) return [];
  const K = net.config.classes.length;
  const probs = await batchProbs(net, pixels, H, W, o);
  const crf = o.crf;
  if (crf) {
    const N = H * W;
    // the images' CRFs at once: a pool (ops/crf_pool.ts) spreads them over its threads
    const q = await Promise.all(pixels.map((rgb, i) => runCrf({ probs: probs.slice(i * N * K, (i + 1) * N * K), rgb, H, W, K, crf })));
    q.forEach((m, i) => probs.set(m, i * N * K));
  }
  return labelsOf(probs, n, H, W, K, out);
}

/**
 * In place: probabilities [N, K] (pixel-major) of classes outside `allowed` set to 0, each pixel
 * renormalised over the allowed ones (uniform over them where all were 0).
 */
export function restrictProbs(probs: Float32Array, allowed: Uint8Array): Float32Array {
  const K = allowed.length;
  if (probs.length % K !== 0) throw new TagsegError(`restrictProbs: ${probs.length} values for ${K} classes`);
  const n = allowed.reduce((a, b) => a + b, 0);
  for (let p = 0; p < probs.length; p += K) {
    let sum = 0;
    for (let k = 0; k < K; k++) {
      if (allowed[k]) sum += probs[p + k];
      else probs[p + k] = 0;
    }
    for (let k = 0; k < K; k++) if (allowed[k]) probs[p + k] = sum > 0 ? probs[p + k] / sum : 1 / n;
  }
  return probs;
}

/** 0/1 over the K classes: `tags` and the background class when there is one (the classes a tagged image may take). */
export function allowedClasses(tags: Iterable<number>, K: number, background: number | null): Uint8Array {
  const a = new Uint8Array(K);
  for (const t of tags) a[t] = 1;
  if (background !== null) a[background] = 1;
  return a;
}

/**
 * One image's probabilities q [H, W, K] restricted to `allowed` (null: every class), then the dense
 * CRF on its RGB when `crf` is set, its marginals restricted again, so no pixel can take a class
 * outside `allowed` (predict --tags, self-training labels). q is changed in place.
 */
export async function restrictedCrf(
  q: Float32Array, r: { allowed: Uint8Array | null; rgb: Uint8Array; H: number; W: number; K: number; crf: DenseCrfOptions | null },
  runCrf: (r: CrfRequest) => Promise<Float32Array> = (req) => Promise.resolve(crfOfProbs(req)),
): Promise<Float32Array> {
  if (r.allowed) restrictProbs(q, r.allowed);
  if (!r.crf) return q;
  const m = await runCrf({ probs: q, rgb: r.rgb, H: r.H, W: r.W, K: r.K, crf: r.crf });
  return r.allowed ? restrictProbs(m, r.allowed) : m;
}
