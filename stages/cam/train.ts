/**
 * Training of the CAM classifier on image-level tags: random resized crop + flip + colour jitter
 * (nn/augment), multi-label soft-margin loss on GAP -> 1x1 conv logits, SGD or AdamW with the
 * head at `head_lr_mult` x lr, poly decay per iteration. Seeded: the epoch order and every
 * augmentation draw come from one Rng whose state is checkpointed, so a resumed run continues the
 * same random stream.
 *
 * With `recam_weight` > 0 the class re-activation loss (recam.ts, ReCAM) is added to the
 * multi-label loss, so that classes tagged together get CAMs of their own.
 *
 * With `probe_iters` > 0 the head is first fitted alone on the frozen backbone's pooled features
 * (probe.ts, LP-FT), so fine-tuning starts from a head that already classifies.
 *
 * Checkpoint every epoch in the checkpoint store and resume an unfinished run of the same key
 * (nn/loop.ts; see `trainHash` in io.ts); otherwise it starts over and says why.
 */
import * as tf from '@tensorflow/tfjs';
import { applyColorJitter, applyHorizontalFlip, cropAndResizeBatch, sampleColorJitter, sampleFlips, sampleResizedCrops } from '../../nn/augment.js';
import { type Dataset, asDataset } from '../../nn/dataset.js';
import { type LoopResult, type LoopState, runTraining } from '../../nn/loop.js';
import { multilabelSoftMarginLoss } from '../../nn/losses.js';
import { type Optimizer, backboneHeadOptimizer } from '../../nn/optim.js';
import type { Rng } from '../../nn/rng.js';
import { trainStep } from '../../nn/train.js';
import type { Params } from '../params.js';
import { log } from '../../pipeline/log.js';
import type { CamNet } from '../../nn/cam_net.js';
import { probeHead } from './probe.js';
import { reactivationLoss } from '../../nn/recam.js';

export interface TrainImage {
  id: string;
  pixels: Uint8Array;
  height: number;
  width: number;
  /** Multi-hot over the classifier outputs. */
  target: Float32Array;
}

export type TrainState = LoopState;

export type TrainResult = LoopResult;

export interface TrainOptions {
  net: CamNet;
  /** In memory, or streamed from images.arrow (nn/dataset.ts): same order, same weights. */
  images: readonly TrainImage[] | Dataset<TrainImage>;
  cam: Params['cam'];
  seed: number;
  /** The stage's checkpoint store folder (.tagseg/checkpoints/cam_train). */
  checkpointDir: string;
  /** Store key (nn/loop trainingKey): only an unfinished run of this key is resumed. */
  hash: string;
  /** Stop after this many epochs *in this run* (tests simulate a kill with it). */
  stopAfter?: number;
}

export function makeOptimizer(net: CamNet, cam: Params['cam']): Optimizer {
  return backboneHeadOptimizer(net.backbone, net.head.params.namedTrainable('head/'), cam);
}

/** One augmented batch [B, crop, crop, 3] in [0, 255] and its targets [B, K]. */
function makeBatch(images: readonly TrainImage[], rng: Rng, cam: Params['cam']): { x: tf.Tensor4D; y: tf.Tensor2D } {
  return tf.tidy(() => {
    const size: [number, number] = [cam.crop, cam.crop];
    const crops = images.map((im) => {
      const box = sampleResizedCrops(rng, 1, im.height, im.width, { size, scale: [cam.crop_scale[0], cam.crop_scale[1]] });
      const t = tf.tensor4d(Int32Array.from(im.pixels), [1, im.height, im.width, 3], 'int32');
      return cropAndResizeBatch(t as unknown as tf.Tensor4D, box, size, 'bilinear');
    });
    let x = tf.concat(crops, 0);
    x = applyHorizontalFlip(x, sampleFlips(rng, images.length));
    if (cam.jitter > 0) x = applyColorJitter(x, sampleColorJitter(rng, images.length, { brightness: cam.jitter, contrast: cam.jitter, saturation: cam.jitter }));
    const y = tf.tensor2d(images.flatMap((im) => Array.from(im.target)), [images.length, images[0].target.length]);
    return { x, y };
  });
}

export async function trainCam(o: TrainOptions): Promise<TrainResult> {
  const { net, cam } = o;
  const images = asDataset(o.images);
  if (images.size === 0) throw new Error('no training images with tags');
  const opt = makeOptimizer(net, cam);
  try {
    return await runTraining({
      name: 'cam', size: images.size, batchSize: cam.batch_size, epochs: cam.epochs, lr: cam.lr,
      optimizer: opt, variables: net.named(), meta: net.config, checkpointDir: o.checkpointDir, hash: o.hash,
      seed: o.seed, stopAfter: o.stopAfter,
      // Epoch 0 only starts a run from scratch (a resume starts later): probe the head first.
      onEpochStart: async (epoch) => {
        if (epoch !== 0 || cam.probe_iters === 0) return;
        const loss = await probeHead(net, images, cam.probe_iters, cam.weight_decay);
        log.info(`cam: linear probe of the head (${cam.probe_iters} iterations on ${2 * images.size} pooled features): loss ${loss.toFixed(4)}`);
      },
      prefetch: (idx) => images.prefetch(idx),
      step: async (idx, rng) => {
        const { x, y } = makeBatch(await images.get(idx), rng, cam);
        try {
          return trainStep(opt, (u) => tf.tidy(() => {
            const f = net.backbone.forward(net.backbone.preprocess(x), true, u);
            const mlsm = multilabelSoftMarginLoss(net.head.classifierLogits(f.last), y);
            if (cam.recam_weight === 0) return mlsm;
            // ReCAM: L = L_mlsm + lambda L_ce on the CAM-masked features (recam.ts)
            return tf.add(mlsm, tf.mul(cam.recam_weight, reactivationLoss(f.last, net.head.weightMatrix(), y))) as tf.Scalar;
          })).loss;
        } finally {
          tf.dispose([x, y]);
        }
      },
    });
  } finally {
    opt.dispose();
  }
}
