/**
 * Class maps -> per-pixel class scores and labels at the image's original resolution.
 *
 * Maps come as stored by the cam / affinity / contrast stages: float32 [T, h, w], one channel per
 * foreground tag (dataset class indices in `tags`), each channel max-normalised, on a grid that
 * covers the whole working-size image (stride 4, ceil-sized; maps/multiscale.ts resizes the network
 * output onto it with half-pixel centres). They are upsampled bilinearly with half-pixel centres
 * (maps/evaluate.ts resizeBilinear, as IRN upsamples its CAMs) straight to the original H x W.
 *
 * Channels of the result: [background, ...tags] with a background class, else the tags alone, so
 * only tagged classes (and background) can ever be chosen. Background score (methods.md 2):
 * - 'threshold': a constant (IRN: cam_eval_thres 0.15 on CAMs, sem_seg_bg_thres 0.25 after the
 *   random walk); label = argmax over [bg, maps], ties to background (as camLabels).
 * - 'power': (1 - max_t map_t)^power (PSA infer_cls.py, alpha 4 / 16 / 32), which falls where any
 *   class is strong instead of staying flat.
 * Without a background class (MSRC-v2): argmax over the tags' maps.
 *
 * Scores are not normalised: the CRF unary is -log(score) as PSA's crf_inference feeds its
 * bg-padded CAMs to pydensecrf's unary_from_softmax (ops/crf.ts unaryFromProbs).
 */
import { TagsegError } from '../../pipeline/errors.js';
import { resizeBilinear } from '../../maps/evaluate.js';

export interface BgRule {
  /** Dataset index of the background class, or null (argmax over the tags). */
  background: number | null;
  mode: 'threshold' | 'power';
  /** Constant bg score ('threshold'). */
  threshold: number;
  /** Exponent of (1 - max map) ('power'). */
  power: number;
}

export interface ClassScores {
  /** Dataset class index of each channel: [background, ...tags], or the tags without background. */
  classes: number[];
  /** [N, K] pixel-major scores in [0, 1] (rows need not sum to 1), N = H * W, K = classes.length. */
  scores: Float32Array;
  H: number;
  W: number;
}

/**
 * Scores of every channel at H x W from stride maps [tags.length, h, w] (channel-major).
 * @returns pixel-major [H * W, K] scores, the layout ops/crf.ts takes.
 */
export function classScores(maps: Float32Array, tags: readonly number[], h: number, w: number, H: number, W: number, bg: BgRule): ClassScores {
  const T = tags.length;
  if (maps.length !== T * h * w) throw new TagsegError(`classScores: ${maps.length} map values for ${T} tags of ${h} x ${w}`);
  if (bg.background !== null && tags.includes(bg.background)) throw new TagsegError(`classScores: the background class ${bg.background} is among the map tags`);
  const up = resizeBilinear(maps, T, h, w, H, W); // [T, H, W]
  const N = H * W;
  const off = bg.background === null ? 0 : 1;
  const K = T + off;
  const scores = new Float32Array(N * K);
  for (let t = 0; t < T; t++) {
    const src = t * N;
    for (let i = 0; i < N; i++) scores[i * K + off + t] = up[src + i];
  }
  if (bg.background !== null) {
    if (bg.mode === 'threshold') {
      for (let i = 0; i < N; i++) scores[i * K] = bg.threshold;
    } else {
      for (let i = 0; i < N; i++) {
        let m = 0;
        for (let t = 1; t < K; t++) m = Math.max(m, scores[i * K + t]);
        scores[i * K] = Math.max(0, 1 - Math.min(1, m)) ** bg.power;
      }
    }
  }
  return { classes: bg.background === null ? [...tags] : [bg.background, ...tags], scores, H, W };
}

/** Per-pixel channel of the highest score of [N, K] (first maximum wins: background on ties). */
export function argmaxChannels(scores: Float32Array, N: number, K: number): Uint8Array {
  if (scores.length !== N * K) throw new TagsegError(`argmaxChannels: ${scores.length} values, expected ${N} x ${K}`);
  if (K > 255) throw new TagsegError(`argmaxChannels: ${K} channels do not fit uint8 with 255 = ignore`);
  const out = new Uint8Array(N);
  for (let i = 0; i < N; i++) {
    const b = i * K;
    let best = 0;
    for (let k = 1; k < K; k++) if (scores[b + k] > scores[b + best]) best = k;
    out[i] = best;
  }
  return out;
}

/** Channel indices -> dataset class indices (255 stays 255). */
export function channelsToClasses(channels: Uint8Array, classes: readonly number[]): Uint8Array {
  const out = new Uint8Array(channels.length);
  for (let i = 0; i < channels.length; i++) {
    const c = channels[i];
    if (c === 255) out[i] = 255;
    else if (c < classes.length) out[i] = classes[c];
    else throw new TagsegError(`channelsToClasses: channel ${c} at pixel ${i}, only ${classes.length} channels`);
  }
  return out;
}
