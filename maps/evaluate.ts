/**
 * CAM evaluation as pure functions on plain arrays (no tensors), reused by every later stage
 * that scores class maps against ground truth (affinity, contrast, refine).
 *
 * Maps are float32 [C, h, w] (channel-major, one channel per stored class, in the order of
 * `tags`: dataset class indices). Masks are uint8 [H, W] of dataset class indices, 255 = void.
 *
 * - With a background class: label = argmax over [bg = threshold, map_c ...] (a constant bg
 *   score; PSA 0.2, IRN 0.15). Ties go to background. `ThresholdSweep` scores every threshold
 *   of a sweep in one pass over the images.
 * - Without one (MSRC-v2): label = argmax over the tagged classes' maps.
 */
import { ConfusionMatrix, segmentationScores, type SegmentationScores } from '../eval/metrics.js';
import { TagsegError } from '../pipeline/errors.js';

/** 0.05, 0.10, ..., 0.60 (the sweep the issue asks for). */
export const DEFAULT_THRESHOLDS: number[] = Array.from({ length: 12 }, (_, i) => Math.round((i + 1) * 5) / 100);

/**
 * Bilinear resize of C maps [C, h, w] -> [C, H, W] with half-pixel centres (PyTorch
 * F.interpolate(mode='bilinear', align_corners=False), tf.image.resizeBilinear(halfPixelCenters)),
 * edge-clamped. IRN upsamples its stride-4 CAMs this way before scoring.
 */
export function resizeBilinear(maps: Float32Array, c: number, h: number, w: number, H: number, W: number): Float32Array {
  if (maps.length !== c * h * w) throw new TagsegError(`resizeBilinear: ${maps.length} values, expected ${c} x ${h} x ${w}`);
  const out = new Float32Array(c * H * W);
  if (c === 0) return out;
  const y0 = new Int32Array(H);
  const y1 = new Int32Array(H);
  const fy = new Float32Array(H);
  const x0 = new Int32Array(W);
  const x1 = new Int32Array(W);
  const fx = new Float32Array(W);
  const axis = (n: number, N: number, i0: Int32Array, i1: Int32Array, f: Float32Array) => {
    const scale = n / N;
    for (let i = 0; i < N; i++) {
      const src = Math.min(Math.max((i + 0.5) * scale - 0.5, 0), n - 1);
      const lo = Math.floor(src);
      i0[i] = lo;
      i1[i] = Math.min(lo + 1, n - 1);
      f[i] = src - lo;
    }
  };
  axis(h, H, y0, y1, fy);
  axis(w, W, x0, x1, fx);
  for (let k = 0; k < c; k++) {
    const base = k * h * w;
    const obase = k * H * W;
    for (let y = 0; y < H; y++) {
      const r0 = base + y0[y] * w;
      const r1 = base + y1[y] * w;
      const wy = fy[y];
      const o = obase + y * W;
      for (let x = 0; x < W; x++) {
        const a = maps[r0 + x0[x]] + (maps[r0 + x1[x]] - maps[r0 + x0[x]]) * fx[x];
        const b = maps[r1 + x0[x]] + (maps[r1 + x1[x]] - maps[r1 + x0[x]]) * fx[x];
        out[o + x] = a + (b - a) * wy;
      }
    }
  }
  return out;
}

/**
 * Per-pixel labels (dataset class indices) from maps [C, H, W]: argmax over [bg = threshold,
 * maps...] when `background` is a class index, else argmax over the maps (an image with no
 * channel gets all background, or 255 without a background class).
 */
export function camLabels(maps: Float32Array, tags: readonly number[], H: number, W: number, background: number | null, threshold = 0): Uint8Array {
  const n = H * W;
  if (maps.length !== tags.length * n) throw new TagsegError(`camLabels: ${maps.length} values for ${tags.length} maps of ${H} x ${W}`);
  const out = new Uint8Array(n);
  const fallback = background ?? 255;
  for (let i = 0; i < n; i++) {
    let best = background === null ? -Infinity : threshold;
    let label = fallback;
    for (let k = 0; k < tags.length; k++) {
      const v = maps[k * n + i];
      if (v > best) {
        best = v;
        label = tags[k];
      }
    }
    out[i] = label;
  }
  return out;
}

export interface SweepPoint {
  /** null without a background class (argmax over the tags). */
  threshold: number | null;
  miou: number | null;
}

export interface SweepResult {
  /** One point per threshold (with bg), or one point with threshold null (without bg). */
  curve: SweepPoint[];
  best: { threshold: number | null; miou: number | null };
  /** Full scores at the best threshold. */
  scores: SegmentationScores;
  images: number;
}

/**
 * Accumulates confusion matrices over images for each bg threshold (or the single no-bg
 * labelling). `add` takes maps already at the mask's resolution.
 */
export class ThresholdSweep {
  readonly matrices: ConfusionMatrix[];
  readonly thresholds: number[];
  images = 0;

  constructor(readonly numClasses: number, readonly background: number | null, thresholds: number[] = DEFAULT_THRESHOLDS) {
    this.thresholds = background === null ? [0] : [...thresholds];
    if (this.thresholds.length === 0) throw new TagsegError('ThresholdSweep needs at least one threshold');
    this.matrices = this.thresholds.map(() => new ConfusionMatrix(numClasses));
  }

  add(maps: Float32Array, tags: readonly number[], mask: Uint8Array, H: number, W: number): void {
    if (mask.length !== H * W) throw new TagsegError(`mask has ${mask.length} pixels, expected ${H} x ${W}`);
    this.thresholds.forEach((t, i) => {
      this.matrices[i].add(camLabels(maps, tags, H, W, this.background, t), mask);
    });
    this.images++;
  }

  /** Upsample stride maps [C, h, w] bilinearly to the mask's [H, W], then `add`. */
  addStrided(maps: Float32Array, tags: readonly number[], h: number, w: number, mask: Uint8Array, H: number, W: number): void {
    this.add(resizeBilinear(maps, tags.length, h, w, H, W), tags, mask, H, W);
  }

  result(): SweepResult {
    const all = this.matrices.map((m) => segmentationScores(m));
    let bi = 0;
    all.forEach((s, i) => {
      if ((s.miou ?? -1) > (all[bi].miou ?? -1)) bi = i;
    });
    const noBg = this.background === null;
    return {
      curve: all.map((s, i) => ({ threshold: noBg ? null : this.thresholds[i], miou: s.miou })),
      best: { threshold: noBg ? null : this.thresholds[bi], miou: all[bi].miou },
      scores: all[bi],
      images: this.images,
    };
  }
}

/** What every stage reports for a sweep: best mIoU, its threshold, images scored, per-class IoU by name. */
export interface MapScores { miou: number | null; threshold: number | null; images: number; iou: Record<string, number | null> }

/** `res` as MapScores; classes never seen in ground truth or prediction (IoU null) are left out. */
export function summarizeSweep(res: SweepResult, classes: readonly string[]): MapScores {
  const iou: Record<string, number | null> = {};
  res.scores.iou.forEach((v, i) => {
    if (v !== null) iou[classes[i]] = v;
  });
  return { miou: res.best.miou, threshold: res.best.threshold, images: res.images, iou };
}
