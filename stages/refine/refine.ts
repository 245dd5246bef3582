/**
 * One image's pseudo-mask: maps -> class scores at the original size (labels.ts) -> dense CRF on
 * the original RGB (ops/crf.ts, PSA's crf_inference: unary -log(score), Gaussian + bilateral
 * kernels, Potts, mean field) -> ignore rule (confidence.ts) -> dataset class indices.
 */
import { type DenseCrfOptions, denseCrf, unaryFromProbs } from '../../ops/crf.js';
import { TagsegError } from '../../pipeline/errors.js';
import { decide, type IgnoreRule } from './confidence.js';
import { argmaxChannels, type BgRule, channelsToClasses, classScores } from './labels.js';
import { type AbovePair, orderClasses } from './order.js';

export interface RefineSettings {
  bg: BgRule;
  /** `iterations: 0` = no CRF (the posterior is then the normalised scores). */
  crf: DenseCrfOptions;
  ignore: IgnoreRule;
  /** Part-order pairs (order.ts): classes swapped where the maps' argmax puts the upper one lower. */
  above: AbovePair[];
}

export interface RefineInput {
  /** float32 [tags.length, h, w] stride maps, channel-major. */
  maps: Float32Array;
  /** Foreground tags (dataset class indices) of the map channels. */
  tags: readonly number[];
  h: number;
  w: number;
  /** uint8 [H, W, 3] RGB of the original image. */
  rgb: Uint8Array;
  H: number;
  W: number;
}

export interface RefinedImage {
  /** [H, W] dataset class indices, 255 = ignore. */
  mask: Uint8Array;
  /** [H, W] round(255 x posterior of the chosen class), before ignoring. */
  confidence: Uint8Array;
  /** [H, W] dataset class indices before the CRF (argmax of the scores; no ignore). */
  before: Uint8Array;
  /** [H, W] dataset class indices after the CRF, before the ignore rule (argmax of the posterior). */
  crf: Uint8Array;
  ignored: number;
  meanMargin: number;
  /** Seconds spent in the CRF (0 when it did not run). */
  crfSeconds: number;
}

/** PSA's unary_from_softmax clip: scores below it count as 1e-5 (a class is never impossible). */
const CLIP = 1e-5;

export function refineImage(x: RefineInput, s: RefineSettings): RefinedImage {
  const { H, W } = x;
  const N = H * W;
  if (x.rgb.length !== N * 3) throw new TagsegError(`refineImage: ${x.rgb.length} RGB bytes for ${H} x ${W}`);
  const sc = classScores(x.maps, x.tags, x.h, x.w, H, W, s.bg);
  const K = sc.classes.length;
  if (K === 0) {
    // No channel at all (no tag, no background class): nothing can be labelled.
    const none = new Uint8Array(N).fill(255);
    return { mask: none, confidence: new Uint8Array(N), before: none, crf: none, ignored: N, meanMargin: 0, crfSeconds: 0 };
  }
  const beforeCh = argmaxChannels(sc.scores, N, K);
  const classes = orderClasses(beforeCh, W, sc.classes, s.above);
  let q: Float32Array;
  let crfSeconds = 0;
  if (K > 1 && s.crf.iterations > 0) {
    const t0 = performance.now();
    q = denseCrf(unaryFromProbs(sc.scores, K, CLIP), x.rgb, H, W, K, s.crf);
    crfSeconds = (performance.now() - t0) / 1000;
  } else {
    q = normalizeRows(sc.scores, N, K);
  }
  const d = decide(q, N, K, beforeCh, s.ignore);
  return {
    mask: channelsToClasses(d.channel, classes),
    confidence: d.confidence,
    before: channelsToClasses(beforeCh, classes),
    crf: channelsToClasses(argmaxChannels(q, N, K), classes),
    ignored: d.ignored,
    meanMargin: d.meanMargin,
    crfSeconds,
  };
}

/** Rows of [N, K] clipped at CLIP and scaled to sum 1: softmax(-unary) of the CRF's unary, i.e. its posterior after 0 iterations. */
export function normalizeRows(scores: Float32Array, N: number, K: number): Float32Array {
  const out = new Float32Array(N * K);
  for (let i = 0; i < N; i++) {
    const b = i * K;
    let s = 0;
    for (let k = 0; k < K; k++) {
      const v = Math.min(1, Math.max(CLIP, scores[b + k]));
      out[b + k] = v;
      s += v;
    }
    for (let k = 0; k < K; k++) out[b + k] /= s;
  }
  return out;
}
