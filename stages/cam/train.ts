/**
 * Training of the CAM classifier on image-level tags: random resized crop + flip + colour jitter
 * (nn/augment), multi-label soft-margin loss on GAP -> 1x1 conv logits, SGD or AdamW with the
 * head at `head_lr_mult` x lr, poly decay per iteration. Seeded: the epoch order and every
 * augmentation draw come from one Rng whose state is checkpointed, so a resumed run continues the
 * same random stream.
 *
 * Checkpoint every epoch (`models/cam/train/`: weights, optimizer slots, { epoch, iter, rng,
 * hash }). A run resumes from it when its hash equals the current one (see `trainHash` in
 * index.ts); otherwise it starts over and says why.
 */
import * as tf from '@tensorflow/tfjs';
import { applyColorJitter, applyHorizontalFlip, cropAndResizeBatch, sampleColorJitter, sampleFlips, sampleResizedCrops } from '../../nn/augment.js';
import { checkpointExists, loadCheckpoint, readTrainState, saveCheckpoint } from '../../nn/checkpoint.js';
import { multilabelSoftMarginLoss } from '../../nn/losses.js';
import { type Optimizer, backboneHeadOptimizer, polyLr } from '../../nn/optim.js';
import { Rng, type RngState } from '../../nn/rng.js';
import { trainStep } from '../../nn/train.js';
import { log, progress } from '../../pipeline/log.js';
import type { Params } from '../../pipeline/params.js';
import type { CamNet } from './net.js';

export interface TrainImage {
  id: string;
  pixels: Uint8Array;
  height: number;
  width: number;
  /** Multi-hot over the classifier outputs. */
  target: Float32Array;
}

export interface TrainState {
  /** Epochs finished. */
  epoch: number;
  /** Optimizer iterations done. */
  iter: number;
  rng: RngState;
  hash: string;
  /** Mean loss of each finished epoch. */
  losses: number[];
  /** Provenance: the epoch range each process trained ([from, to)); several entries = resumed. */
  runs: Array<{ from: number; to: number }>;
}

export interface TrainResult {
  epochs: number;
  /** Epoch this run started at (0 = from scratch). */
  resumedFrom: number;
  /** Why an existing checkpoint was not used, if there was one. */
  restartReason?: string;
  losses: number[];
  /** Training images/s of this run (0 when nothing was trained). */
  imagesPerSecond: number;
  seconds: number;
  /** tf.memory().numTensors after each epoch of this run (leak check). */
  tensorsAfterEpoch: number[];
}

export interface TrainOptions {
  net: CamNet;
  images: TrainImage[];
  cam: Params['cam'];
  seed: number;
  /** Checkpoint directory (models/cam/train). */
  checkpointDir: string;
  /** Resume key: a checkpoint with another hash is not resumed. */
  hash: string;
  /** Stop after this many epochs *in this run* (tests simulate a kill with it). */
  stopAfter?: number;
}

export function makeOptimizer(net: CamNet, cam: Params['cam']): Optimizer {
  return backboneHeadOptimizer(net.backbone.params.namedTrainable('backbone/'), net.head.params.namedTrainable('head/'), cam);
}

/** One augmented batch [B, crop, crop, 3] in [0, 255] and its targets [B, K]. */
function makeBatch(images: TrainImage[], idx: number[], rng: Rng, cam: Params['cam']): { x: tf.Tensor4D; y: tf.Tensor2D } {
  return tf.tidy(() => {
    const size: [number, number] = [cam.crop, cam.crop];
    const crops = idx.map((i) => {
      const im = images[i];
      const box = sampleResizedCrops(rng, 1, im.height, im.width, { size, scale: [cam.crop_scale[0], cam.crop_scale[1]] });
      const t = tf.tensor4d(Int32Array.from(im.pixels), [1, im.height, im.width, 3], 'int32');
      return cropAndResizeBatch(t as unknown as tf.Tensor4D, box, size, 'bilinear');
    });
    let x = tf.concat(crops, 0);
    x = applyHorizontalFlip(x, sampleFlips(rng, idx.length));
    if (cam.jitter > 0) x = applyColorJitter(x, sampleColorJitter(rng, idx.length, { brightness: cam.jitter, contrast: cam.jitter, saturation: cam.jitter }));
    const y = tf.tensor2d(idx.flatMap((i) => Array.from(images[i].target)), [idx.length, images[0].target.length]);
    return { x, y };
  });
}

export async function trainCam(o: TrainOptions): Promise<TrainResult> {
  const { net, images, cam } = o;
  if (images.length === 0) throw new Error('no training images with tags');
  const opt = makeOptimizer(net, cam);
  try {
    const itersPerEpoch = Math.ceil(images.length / cam.batch_size);
    const maxIter = cam.epochs * itersPerEpoch;
    let state: TrainState = { epoch: 0, iter: 0, rng: new Rng(o.seed).state(), hash: o.hash, losses: [], runs: [] };
    let restartReason: string | undefined;
    if (await checkpointExists(o.checkpointDir)) {
      const saved = await readTrainState<TrainState>(o.checkpointDir);
      if (saved && saved.hash === o.hash) {
        await loadCheckpoint(o.checkpointDir, { variables: net.named(), optimizer: opt });
        state = saved;
        log.info(`cam: resuming from the checkpoint at epoch ${saved.epoch} (${o.checkpointDir})`);
      } else {
        restartReason = saved ? `checkpoint params hash ${saved.hash} differs from ${o.hash}` : 'checkpoint has no training state';
        log.info(`cam: not resuming (${restartReason}): training from scratch`);
      }
    }
    const resumedFrom = state.epoch;
    const runs = [...(state.runs ?? [])];
    const rng = Rng.fromState(state.rng);
    const losses = [...state.losses];
    const tensorsAfterEpoch: number[] = [];
    let trained = 0;
    const t0 = performance.now();
    let ran = 0;
    for (let epoch = state.epoch; epoch < cam.epochs; epoch++) {
      if (o.stopAfter !== undefined && ran >= o.stopAfter) break;
      const order = rng.shuffle(images.map((_, i) => i));
      const bar = progress(`cam train epoch ${epoch + 1}/${cam.epochs}`, images.length, ['loss', 'img/s']);
      const e0 = performance.now();
      let lossSum = 0;
      let seen = 0;
      for (let b = 0; b < itersPerEpoch; b++) {
        const idx = order.slice(b * cam.batch_size, (b + 1) * cam.batch_size);
        opt.lr = polyLr(cam.lr, state.iter, maxIter);
        const { x, y } = makeBatch(images, idx, rng, cam);
        let loss: number;
        try {
          loss = trainStep(opt, (u) => tf.tidy(() => {
            const f = net.backbone.forward(net.backbone.preprocess(x), true, u);
            return multilabelSoftMarginLoss(net.head.classifierLogits(f.last), y);
          })).loss;
        } finally {
          tf.dispose([x, y]);
        }
        state.iter++;
        lossSum += loss * idx.length;
        seen += idx.length;
        trained += idx.length;
        bar.tick(idx.length, { loss: lossSum / seen, 'img/s': seen / ((performance.now() - e0) / 1000) });
      }
      bar.stop();
      losses.push(lossSum / seen);
      state = { epoch: epoch + 1, iter: state.iter, rng: rng.state(), hash: o.hash, losses, runs: [...runs, { from: resumedFrom, to: epoch + 1 }] };
      await saveCheckpoint(o.checkpointDir, { variables: net.named(), optimizer: opt, trainState: state, meta: net.config });
      tensorsAfterEpoch.push(tf.memory().numTensors);
      ran++;
    }
    const seconds = (performance.now() - t0) / 1000;
    return {
      epochs: state.epoch, resumedFrom, restartReason, losses, seconds, tensorsAfterEpoch,
      imagesPerSecond: trained > 0 ? trained / seconds : 0,
    };
  } finally {
    opt.dispose();
  }
}
