/**
 * SegNet training (DeepLab recipe, scaled to a CPU): per image a random rescale by
 * s ~ U(scale_range), a random c x c crop (padded with black / 255 where the rescaled image is
 * smaller than the crop), a random horizontal flip and colour jitter; image and label map get the
 * same geometry (bilinear for the image, nearest for the labels, one crop box through
 * tf.image.cropAndResize). Logits are upsampled to the crop (DeepLab v3+) and scored by softmax
 * cross-entropy ignoring 255 (nn/losses.ts), plus the optional auxiliary loss (`SegAuxLoss`,
 * e.g. a contrastive loss) on the head's penultimate map. SGD or AdamW with the head at
 * `head_lr_mult` x lr, poly decay per iteration.
 *
 * Seeded, checkpointed every epoch in the checkpoint store and resumed through nn/loop.ts (an
 * unfinished run of the same key, see `segmentTrainHash` in index.ts); the auxiliary loss's variables (projection
 * head, memory banks) are checkpointed with the network.
 */
import * as tf from '@tensorflow/tfjs';
import { applyColorJitter, applyHorizontalFlip, type CropBox, cropAndResizeBatch, sampleColorJitter, sampleFlips } from '../../nn/augment.js';
import { disposeFeatures } from '../../nn/backbone.js';
import { type Dataset, asDataset } from '../../nn/dataset.js';
import { type LoopResult, runTraining } from '../../nn/loop.js';
import { softmaxCrossEntropy } from '../../nn/losses.js';
import { type Optimizer, backboneHeadOptimizer } from '../../nn/optim.js';
import { type NamedVariables, mergeNamed } from '../../nn/params.js';
import type { Rng } from '../../nn/rng.js';
import { trainStep } from '../../nn/train.js';
import { TagsegError } from '../../pipeline/errors.js';
import type { Params } from '../params.js';
import { IGNORE } from './labels.js';
import { upsampleLogits } from '../../nn/seg_heads/deeplab.js';
import type { SegNet } from './net.js';

export interface SegTrainImage {
  id: string;
  /** uint8 RGB [height, width, 3] at the working size. */
  pixels: Uint8Array;
  height: number;
  width: number;
  /** uint8 [height, width]: class indices, 255 = ignore. */
  labels: Uint8Array;
  /** Image-level tags (dataset class indices). */
  tags: number[];
}

/** What an auxiliary loss sees of one training batch (all tensors belong to the caller). */
export interface SegAuxInput {
  /** Head penultimate map [B, h, w, dim] (differentiable). */
  features: tf.Tensor4D;
  /** Logits at the same grid [B, h, w, K] (differentiable; take their softmax with a stop-gradient). */
  logits: tf.Tensor4D;
  /** Crop labels [B, c, c] int32 (255 = ignore). */
  labels: tf.Tensor3D;
  /** Crop images [B, c, c, 3] float in [0, 255]. */
  images: tf.Tensor4D;
  /** Per image uint8 RGB [h, w, 3]: the crop averaged to the grid of `features` (read before the step). */
  pixels: Uint8Array[];
  tags: number[][];
}

/** An extra loss term added to the cross-entropy, with its own (checkpointed) variables. */
export interface SegAuxLoss {
  readonly name: string;
  readonly weight: number;
  /** Scalar loss of the batch (inside the gradient tape). */
  loss(b: SegAuxInput, rng: Rng): tf.Scalar;
  /** After the optimizer step (memory updates); tensors are the same as given to loss(). */
  update?(b: SegAuxInput, rng: Rng): void;
  /** Trainable variables (projection head), optimised with the head group. */
  trainable(): NamedVariables;
  /** Every variable to checkpoint (trainable + memory banks). */
  variables(): NamedVariables;
  /** Iteration from which the loss is on (ContrastiveSeg: after a warm-up); before it, weight 0. */
  readonly startIter: number;
}

export interface SegTrainOptions {
  net: SegNet;
  /** In memory, or streamed (nn/dataset.ts): same order, same weights. */
  images: readonly SegTrainImage[] | Dataset<SegTrainImage>;
  segment: Params['segment'];
  seed: number;
  /** The stage's checkpoint store folder (.tagseg/checkpoints/segment). */
  checkpointDir: string;
  /** Store key (nn/loop trainingKey). */
  hash: string;
  aux?: SegAuxLoss;
  /** Stop after this many epochs in this run (tests simulate a kill). */
  stopAfter?: number;
}

export type SegTrainResult = LoopResult;

/**
 * One crop box per image: scale s ~ U(range); the box is c / s pixels square in image
 * coordinates, its corner on a whole pixel chosen uniformly so that it stays inside the image where it fits, and covers the
 * whole image (with padding around it) where it does not.
 */
export function sampleScaledCrop(rng: Rng, height: number, width: number, crop: number, range: readonly [number, number] | readonly number[]): CropBox {
  const [lo, hi] = range;
  if (!(lo > 0 && lo <= hi)) throw new TagsegError(`segment.scale_range must satisfy 0 < min <= max, got [${lo}, ${hi}]`, { file: 'params.yaml' });
  const s = rng.uniform(lo, hi);
  const side = crop / s;
  // Whole-pixel corners: at scale 1 the crop then samples pixel centres exactly (no blur of the
  // image against nearest-sampled labels).
  const place = (n: number) => {
    const lo = Math.ceil(Math.min(0, n - side));
    const hi = Math.floor(Math.max(0, n - side));
    return lo < hi ? rng.int(lo, hi + 1) : Math.min(0, n - side);
  };
  const top = place(height);
  const left = place(width);
  return { top, left, height: side, width: side };
}

/** Augmented batch: images [B, c, c, 3] float in [0, 255], labels [B, c, c] int32. */
export function makeSegBatch(images: readonly SegTrainImage[], idx: readonly number[], rng: Rng, s: Params['segment']): { x: tf.Tensor4D; y: tf.Tensor3D } {
  const c = s.crop;
  const boxes = idx.map((i) => sampleScaledCrop(rng, images[i].height, images[i].width, c, s.scale_range));
  const flips = sampleFlips(rng, idx.length);
  const jitter = s.jitter > 0 ? sampleColorJitter(rng, idx.length, { brightness: s.jitter, contrast: s.jitter, saturation: s.jitter }) : null;
  return tf.tidy(() => {
    const xs: tf.Tensor4D[] = [];
    const ys: tf.Tensor4D[] = [];
    idx.forEach((i, k) => {
      const im = images[i];
      const img = tf.tensor4d(Int32Array.from(im.pixels), [1, im.height, im.width, 3], 'int32');
      const lab = tf.tensor4d(Int32Array.from(im.labels), [1, im.height, im.width, 1], 'int32');
      xs.push(cropAndResizeBatch(img as unknown as tf.Tensor4D, [boxes[k]], [c, c], 'bilinear', 0));
      ys.push(cropAndResizeBatch(lab as unknown as tf.Tensor4D, [boxes[k]], [c, c], 'nearest', IGNORE));
    });
    let x = applyHorizontalFlip(tf.concat(xs, 0), flips);
    if (jitter) x = applyColorJitter(x, jitter);
    const y = applyHorizontalFlip(tf.concat(ys, 0), flips);
    return { x, y: tf.cast(tf.squeeze(y, [3]), 'int32') as tf.Tensor3D };
  });
}

/**
 * Crop images x [B, c, c, 3] resized to the head's grid [h, w] (bilinear, half-pixel centres)
 * -> one uint8 RGB [h, w, 3] per image. Runs outside the gradient tape.
 */
export function gridPixels(x: tf.Tensor4D, h: number, w: number): Uint8Array[] {
  const t = tf.tidy(() => tf.cast(tf.clipByValue(tf.round(tf.image.resizeBilinear(x, [h, w], false, true)), 0, 255), 'int32'));
  try {
    const flat = t.dataSync();
    const n = h * w * 3;
    return Array.from({ length: x.shape[0] }, (_, i) => Uint8Array.from(flat.subarray(i * n, (i + 1) * n)));
  } finally {
    t.dispose();
  }
}

/** Side of the head's output grid for a c x c crop ('same' convs: ceil at every stride 2). */
export function gridSide(net: SegNet, c: number): number {
  return Math.ceil(c / net.head.outputStride(net.backbone.strides));
}

export function makeSegOptimizer(net: SegNet, s: Params['segment'], aux?: SegAuxLoss): Optimizer {
  const head = net.head.params.namedTrainable('seg/');
  return backboneHeadOptimizer(net.backbone, aux ? mergeNamed(head, aux.trainable()) : head, s);
}

export async function trainSegNet(o: SegTrainOptions): Promise<SegTrainResult> {
  const { net, segment: s, aux } = o;
  const images = asDataset(o.images);
  if (images.size === 0) throw new TagsegError('segment: no training images');
  const opt = makeSegOptimizer(net, s, aux);
  const variables = aux ? mergeNamed(net.named(), aux.variables()) : net.named();
  try {
    return await runTraining({
      name: 'segment', size: images.size, batchSize: s.batch_size, epochs: s.epochs, lr: s.lr,
      optimizer: opt, variables, meta: net.config, checkpointDir: o.checkpointDir, hash: o.hash,
      seed: o.seed + 3, stopAfter: o.stopAfter,
      prefetch: (idx) => images.prefetch(idx),
      step: async (idx, rng, ctx) => segStep(o, opt, await images.get(idx), rng, ctx.iter),
    });
  } finally {
    opt.dispose();
  }
}

/** One optimizer step on a batch: cross-entropy of the upsampled logits, plus the aux loss once it is on. */
function segStep(o: SegTrainOptions, opt: Optimizer, items: SegTrainImage[], rng: Rng, iter: number): number {
  const { net, segment: s, aux } = o;
  const { x, y } = makeSegBatch(items, items.map((_, k) => k), rng, s);
  const useAux = aux !== undefined && aux.weight > 0 && iter >= aux.startIter;
  const tags = items.map((im) => im.tags);
  const g = useAux ? gridSide(net, s.crop) : 0;
  const pixels = useAux ? gridPixels(x, g, g) : [];
  // The aux update (memory banks) runs after the step on copies of the batch's maps.
  const kept: { features?: tf.Tensor4D; logits?: tf.Tensor4D } = {};
  try {
    const r = trainStep(opt, (u) => tf.tidy(() => {
      const f = net.backbone.forward(net.backbone.preprocess(x), true, u);
      const rep = net.head.represent(f);
      disposeFeatures(f);
      const grid = net.head.classify(rep);
      let loss = softmaxCrossEntropy(upsampleLogits(grid, [s.crop, s.crop]), y, IGNORE);
      if (useAux) {
        loss = tf.add(loss, tf.mul(aux.weight, aux.loss({ features: rep, logits: grid, labels: y, images: x, pixels, tags }, rng)));
        if (aux.update) {
          kept.features = tf.keep(tf.clone(rep));
          kept.logits = tf.keep(tf.clone(grid));
        }
      }
      return loss as tf.Scalar;
    }));
    if (useAux && aux.update && kept.features && kept.logits) {
      aux.update({ features: kept.features, logits: kept.logits, labels: y, images: x, pixels, tags }, rng);
    }
    return r.loss;
  } finally {
    tf.dispose([x, y, ...[kept.features, kept.logits].filter((t): t is tf.Tensor4D => t !== undefined)]);
  }
}
