/**
 * RCA training (maeve07/RCA train.py, models/rca.py forward): the CAM classifier retrained with
 * the dataset-level regional memory.
 *
 * Each step: random resized crop + flip + colour jitter (as the cam stage) -> backbone features f;
 * coarse maps (coarse head on f) and refined maps (refined head on f aggregated with the memory
 * centroids); region weights per tagged class from the coarse CAM (softmax over classes > its
 * mean, RCA) or from the affinity stage's propagated maps cropped with the image; then
 *   loss = MLSM(refined) + coarse_weight * MLSM(coarse) + contrast_weight * InfoNCE
 *          [+ recam_weight * (ReCAM(refined) + coarse_weight * ReCAM(coarse)), nn/recam.ts]
 * with the contrast term from epoch `contrast_from` on (RCA: epoch 2). After the step, every
 * region whose refined probability exceeds `enqueue_prob` (RCA 0.7) is pushed into its class
 * queue (the raw backbone feature pooled over the region, as RCA). At every epoch start after the
 * first, each class queue is summarised by k-means (RCA: `index == 0 and epoch > 0`).
 *
 * Checkpoint every epoch in the checkpoint store and resume an unfinished run of the same key
 * (nn/loop.ts): the memory is part of the checkpointed variables, so a resumed run continues with
 * the same queues.
 */
import * as tf from '@tensorflow/tfjs';
import { applyColorJitter, applyHorizontalFlip, cropAndResizeBatch, sampleColorJitter, sampleFlips, sampleResizedCrops } from '../../nn/augment.js';
import { type Dataset, asDataset } from '../../nn/dataset.js';
import { type LoopResult, runTraining } from '../../nn/loop.js';
import { multilabelSoftMarginLoss } from '../../nn/losses.js';
import { type Optimizer, backboneHeadOptimizer } from '../../nn/optim.js';
import type { Rng } from '../../nn/rng.js';
import { trainStep } from '../../nn/train.js';
import type { NormUpdates } from '../../nn/norm.js';
import { TagsegError } from '../../pipeline/errors.js';
import type { Params } from '../params.js';
import { reactivationLoss } from '../../nn/recam.js';
import { infoNCE } from './contrastive.js';
import type { ContrastNet } from './net.js';
import { type RegionRef, l2Normalize, regionPool, regionWeights } from './regions.js';

export interface ContrastTrainImage {
  id: string;
  /** uint8 RGB [height, width, 3]. */
  pixels: Uint8Array;
  height: number;
  width: number;
  /** Multi-hot over the classifier outputs [K]. */
  target: Float32Array;
  /** Region source maps [mh, mw, K] (channel-last, per output, 0 for untagged) when `region: affinity`. */
  region?: { maps: Float32Array; height: number; width: number };
}

export interface ContrastTrainResult extends LoopResult {
  /** Embeddings enqueued per epoch of this run, and the queue fill per class at the end. */
  enqueued: number[];
  filled: number[];
  /** Mean contrast loss of each epoch of this run (0 before `contrast_from`). */
  contrastLosses: number[];
}

export interface ContrastTrainOptions {
  net: ContrastNet;
  /** In memory, or streamed (nn/dataset.ts): same order, same weights. */
  images: readonly ContrastTrainImage[] | Dataset<ContrastTrainImage>;
  contrast: Params['contrast'];
  seed: number;
  /** The stage's checkpoint store folder (.tagseg/checkpoints/contrast_train). */
  checkpointDir: string;
  /** Store key (nn/loop trainingKey). */
  hash: string;
  stopAfter?: number;
}

export function makeContrastOptimizer(net: ContrastNet, c: Params['contrast']): Optimizer {
  return backboneHeadOptimizer(net.backbone, net.namedHeads(), c);
}

/** One augmented batch: x [B, crop, crop, 3] in [0, 255], y [B, K], region maps [B, crop, crop, K] or null. */
export function makeBatch(images: readonly ContrastTrainImage[], idx: readonly number[], rng: Rng, c: Params['contrast']): { x: tf.Tensor4D; y: tf.Tensor2D; maps: tf.Tensor4D | null } {
  const r = tf.tidy(() => {
    const size: [number, number] = [c.crop, c.crop];
    const K = images[0].target.length;
    const withMaps = c.region === 'affinity';
    const crops = idx.map((i) => {
      const im = images[i];
      const box = sampleResizedCrops(rng, 1, im.height, im.width, { size, scale: [c.crop_scale[0], c.crop_scale[1]] });
      let t = tf.cast(tf.tensor4d(im.pixels, [1, im.height, im.width, 3], 'int32'), 'float32') as tf.Tensor4D;
      if (withMaps) {
        if (!im.region) throw new TagsegError(`contrast: image '${im.id}' has no region maps`);
        const m = tf.tensor4d(im.region.maps, [1, im.region.height, im.region.width, K]);
        t = tf.concat([t, tf.image.resizeBilinear(m, [im.height, im.width], false, true)], 3);
      }
      return cropAndResizeBatch(t, box, size, 'bilinear');
    });
    let all = applyHorizontalFlip(tf.concat(crops, 0), sampleFlips(rng, idx.length));
    let maps: tf.Tensor4D | null = null;
    if (withMaps) {
      maps = tf.slice(all, [0, 0, 0, 3], [-1, -1, -1, K]);
      all = tf.slice(all, [0, 0, 0, 0], [-1, -1, -1, 3]);
    }
    let x = all;
    if (c.jitter > 0) x = applyColorJitter(x, sampleColorJitter(rng, idx.length, { brightness: c.jitter, contrast: c.jitter, saturation: c.jitter }));
    const y = tf.tensor2d(idx.flatMap((i) => Array.from(images[i].target)), [idx.length, K]);
    return maps ? { x, y, maps } : { x, y };
  }) as { x: tf.Tensor4D; y: tf.Tensor2D; maps?: tf.Tensor4D };
  return { x: r.x, y: r.y, maps: r.maps ?? null };
}

/** The tagged (b, k) regions of a batch from its targets [B * K] (row-major). */
export function taggedRegions(targets: ArrayLike<number>, B: number, K: number): RegionRef[] {
  const out: RegionRef[] = [];
  for (let b = 0; b < B; b++) for (let k = 0; k < K; k++) if (targets[b * K + k] > 0) out.push({ b, k });
  return out;
}

export interface StepTensors {
  loss: tf.Scalar;
  /** The contrast term alone (0 when off). */
  contrast: tf.Scalar;
  /** Raw backbone features pooled per region [R, C] (memory candidates). */
  embeddings: tf.Tensor2D;
  /** Refined probability of each region's class [R]. */
  probs: tf.Tensor1D;
}

/**
 * The RCA objective of one batch (inside a gradient tape). `maps`: region sources from the
 * affinity stage (cropped with x), or null for the coarse CAM. Returns tensors the caller disposes.
 */
export function contrastObjective(
  net: ContrastNet, x: tf.Tensor4D, y: tf.Tensor2D, maps: tf.Tensor4D | null, regions: RegionRef[],
  o: { c: Params['contrast']; contrastOn: boolean; updates?: NormUpdates; training: boolean },
): StepTensors {
  return tf.tidy(() => {
    const feats = net.backbone.forward(net.backbone.preprocess(x), o.training, o.updates);
    const f = feats.last;
    const coarse = net.coarse.camMaps(f);
    const fused = net.refinedFeatures(f);
    const refined = net.refined.camMaps(fused);
    const logitsR = tf.mean(refined, [1, 2]) as tf.Tensor2D;
    const logitsC = tf.mean(coarse, [1, 2]) as tf.Tensor2D;
    let loss = tf.add(multilabelSoftMarginLoss(logitsR, y), tf.mul(o.c.coarse_weight, multilabelSoftMarginLoss(logitsC, y))) as tf.Scalar;
    if (o.c.recam_weight > 0) {
      // ReCAM on both heads, weighted as their MLSM terms, so that RCA's fine-tuning keeps the
      // co-occurring classes apart as the cam stage's recam_weight does (nn/recam.ts)
      const re = tf.add(reactivationLoss(fused, net.refined.weightMatrix(), y), tf.mul(o.c.coarse_weight, reactivationLoss(f, net.coarse.weightMatrix(), y)));
      loss = tf.add(loss, tf.mul(o.c.recam_weight, re));
    }
    const [, h, w] = f.shape;
    const source = maps ? tf.image.resizeBilinear(maps, [h, w], false, true) : tf.softmax(coarse);
    const weights = regionWeights(source as tf.Tensor4D, o.c.pooling);
    const embeddings = regionPool(f, weights, regions);
    const K = net.numClasses;
    const idx = tf.tensor1d(regions.map((r) => r.b * K + r.k), 'int32');
    const probs = tf.gather(tf.reshape(tf.sigmoid(logitsR), [-1]), idx) as tf.Tensor1D;
    let contrast = tf.scalar(0);
    if (o.contrastOn && regions.length > 0) {
      const anchors = l2Normalize(regionPool(net.projection.forward(f), weights, regions));
      const mem = net.memory;
      contrast = infoNCE(
        anchors, tf.tensor1d(regions.map((r) => r.k), 'int32'), l2Normalize(mem.queue as tf.Tensor2D),
        mem.slotClasses(), mem.slotValid(), o.c.temperature,
      );
      loss = tf.add(loss, tf.mul(o.c.contrast_weight, contrast));
    }
    return { loss, contrast, embeddings, probs };
  });
}

/** Per-epoch tallies of this run (enqueued embeddings, mean contrast loss); `close` ends an epoch that had steps. */
function epochTally() {
  const enqueued: number[] = [];
  const contrastLosses: number[] = [];
  const cur = { enq: 0, contrast: 0, steps: 0 };
  const close = () => {
    if (cur.steps > 0) {
      enqueued.push(cur.enq);
      contrastLosses.push(cur.contrast / cur.steps);
    }
    Object.assign(cur, { enq: 0, contrast: 0, steps: 0 });
  };
  return { enqueued, contrastLosses, cur, close };
}

/**
 * One RCA training step: the objective under the optimizer, then the memory update (RCA pushes
 * each region whose refined probability exceeds `enqueue_prob` into its class queue) and the tallies.
 */
async function contrastStep(
  o: ContrastTrainOptions, opt: Optimizer, items: ContrastTrainImage[], rng: Rng, epoch: number, tally: ReturnType<typeof epochTally>['cur'],
): Promise<number> {
  const { net, contrast: c } = o;
  const { x, y, maps } = makeBatch(items, items.map((_, k) => k), rng, c);
  const regions = taggedRegions(items.flatMap((im) => Array.from(im.target)), items.length, net.numClasses);
  const contrastOn = epoch >= c.contrast_from && c.contrast_weight > 0;
  let kept: StepTensors | null = null;
  try {
    const loss = trainStep(opt, (u) => {
      const t = contrastObjective(net, x, y, maps, regions, { c, contrastOn, updates: u, training: true });
      kept = { loss: t.loss, contrast: tf.keep(t.contrast), embeddings: tf.keep(t.embeddings), probs: tf.keep(t.probs) };
      return t.loss;
    }).loss;
    const k = kept as StepTensors | null;
    if (k) {
      const probs = k.probs.dataSync();
      tally.contrast += k.contrast.dataSync()[0];
      tally.enq += net.memory.enqueue(k.embeddings, regions.map((r) => r.k), Array.from(probs, (p) => p > c.enqueue_prob), c.memory_update, c.memory_momentum);
    }
    tally.steps++;
    return loss;
  } finally {
    const k = kept as StepTensors | null;
    tf.dispose([x, y, ...(maps ? [maps] : []), ...(k ? [k.contrast, k.embeddings, k.probs] : [])]);
  }
}

export async function trainContrast(o: ContrastTrainOptions): Promise<ContrastTrainResult> {
  const { net, contrast: c } = o;
  const images = asDataset(o.images);
  if (images.size === 0) throw new TagsegError('contrast: no training images with a foreground tag');
  const opt = makeContrastOptimizer(net, c);
  const tally = epochTally();
  try {
    const r = await runTraining({
      name: 'contrast', size: images.size, batchSize: c.batch_size, epochs: c.epochs, lr: c.lr,
      optimizer: opt, variables: net.named(), meta: net.config, checkpointDir: o.checkpointDir, hash: o.hash,
      seed: o.seed + 3, stopAfter: o.stopAfter,
      onEpochStart: (epoch) => {
        tally.close();
        // RCA: k-means of every queue at the first batch of each epoch after the first
        if (epoch > 0) net.memory.summarize({ iters: c.kmeans_iters, seed: o.seed + epoch });
      },
      prefetch: (idx) => images.prefetch(idx),
      step: async (idx, rng, ctx) => contrastStep(o, opt, await images.get(idx), rng, ctx.epoch, tally.cur),
    });
    tally.close();
    return { ...r, enqueued: tally.enqueued, contrastLosses: tally.contrastLosses, filled: Array.from(net.memory.counts()) };
  } finally {
    opt.dispose();
  }
}
