/**
 * The auxiliary contrastive losses of the `segment` stage (`segment.contrast`), behind one
 * interface (methods.md 4-6):
 *
 * - 'pixel': cross-image pixel contrast with per-class pixel and region memories (ContrastiveSeg,
 *   nn/contrastive/pixel.ts);
 * - 'reco': regional contrast with hard queries and active key sampling (ReCo,
 *   nn/contrastive/reco.ts); ignores label-255 and low-confidence pixels;
 * - 'spml': pixel-to-segment contrast over k-means segments cut by superpixels, with the
 *   semantic-annotation, co-occurrence and low-level relations (SPML, nn/contrastive/spml.ts).
 *
 * The embeddings come from a projection head (nn/contrastive/head.ts) on the segmentation head's
 * penultimate map. Each loss draws its randomness from the caller's Rng only (JS sampling turned
 * into index tensors), so a seed reproduces a run on every backend.
 *
 * Suggested weights of the whole term in the total loss: pixel 1 with memory (ContrastiveSeg
 * _MEM config; 0.1 without memory), reco 1 (ReCo adds it unweighted), spml 1 (its relation
 * weights 0.3 / 0.3 / 0.1 are applied inside).
 */
import type * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../../pipeline/errors.js';
import type { Rng } from '../rng.js';
import { PIXEL_DEFAULTS, PixelContrast, type PixelContrastOptions } from './pixel.js';
import { RECO_DEFAULTS, RecoContrast, type RecoOptions } from './reco.js';
import { SPML_DEFAULTS, SpmlContrast, type SpmlOptions } from './spml.js';

export type ContrastKind = 'pixel' | 'reco' | 'spml';

export interface ContrastBatch {
  /** L2-normalised embeddings [B, h, w, D] from the projection head (inside the gradient tape). */
  embeddings: tf.Tensor4D;
  /** Labels on the same grid [B, h, w] int32: dataset class indices, 255 = ignore (pseudo-masks downsampled by nearest). */
  labels: tf.Tensor3D;
  /** Segmentation probabilities on the same grid [B, h, w, K] (softmax of the seg logits; treat as constant: stop gradients). */
  probs: tf.Tensor4D;
  /** Per-image tags (dataset class indices), for SPML co-occurrence. */
  tags: number[][];
  /** uint8 RGB per image at the grid size [h, w, 3] (for superpixels), computed by the caller outside the tape. */
  pixels: Uint8Array[];
}

/** What `update` reads (all tensors belong to the caller). */
export interface ContrastUpdateBatch {
  embeddings: tf.Tensor4D;
  labels: tf.Tensor3D;
  probs: tf.Tensor4D;
}

export interface ContrastLoss {
  readonly kind: ContrastKind;
  /** Scalar loss, differentiable w.r.t. embeddings. Must be called inside the tape/tidy; draws randomness only from rng. */
  loss(b: ContrastBatch, rng: Rng): tf.Scalar;
  /** After the optimizer step, outside the tape (memory updates, e.g. pixel queue). Must dispose what it creates. */
  update?(b: ContrastUpdateBatch, rng: Rng): void;
  /** Non-trainable variables to checkpoint (memories) under stable names. */
  variables(): Map<string, tf.Variable>;
  dispose(): void;
}

export interface CreateContrastOptions {
  /** Dataset classes K (background included when the dataset has one). */
  classes: number;
  /** Embedding channels D (the projection head's output). */
  dim: number;
  /** Mixed into SPML's per-image k-means seeds (pixel and reco draw everything from the step's Rng). */
  seed: number;
  /**
   * Background class index, or null when the dataset has none. SPML leaves it out of the
   * co-occurrence tags (its code drops class 0 of VOC there). Default null.
   */
  background?: number | null;
  pixel?: Partial<Omit<PixelContrastOptions, 'classes' | 'dim'>>;
  reco?: Partial<Omit<RecoOptions, 'classes' | 'dim'>>;
  spml?: Partial<Omit<SpmlOptions, 'classes' | 'dim' | 'seed' | 'background'>>;
}

/** A contrastive loss of `kind` with the published settings (methods.md 4-6), overridden by o.pixel / o.reco / o.spml. */
export function createContrastLoss(kind: ContrastKind, o: CreateContrastOptions): ContrastLoss {
  const base = { classes: o.classes, dim: o.dim };
  switch (kind) {
    case 'pixel':
      return new PixelContrast({ ...PIXEL_DEFAULTS, ...o.pixel, ...base });
    case 'reco':
      return new RecoContrast({ ...RECO_DEFAULTS, ...o.reco, ...base });
    case 'spml':
      return new SpmlContrast({ ...SPML_DEFAULTS, ...o.spml, ...base, seed: o.seed, background: o.background ?? null });
    default:
      throw new TagsegError(`unknown contrastive loss '${String(kind)}'`, { hint: 'segment.contrast: none | pixel | reco | spml' });
  }
}

export { PIXEL_DEFAULTS, RECO_DEFAULTS, SPML_DEFAULTS };
export type { PixelContrastOptions, RecoOptions, SpmlOptions };
