/**
 * AffinityNet training (PSA train_aff.py): random crops of the training images with their
 * affinity label maps cropped the same way, pair labels within the radius, the balanced loss
 * (loss.ts), SGD or AdamW with the head at `head_lr_mult` x lr (PSA: 10x for the new layers),
 * poly decay per iteration. Seeded: the epoch order and every crop/flip draw come from one Rng
 * whose state is checkpointed, so a resumed run continues the same random stream.
 *
 * Label grid: stride 4, the grid of cams.arrow (IRN takes its labels at 1/4 resolution too), so
 * labels need no resampling. Crops are c x c pixels with c a multiple of 4 and their corner on
 * the stride-4 lattice, so the crop's label grid is exactly c/4 x c/4 cells of the image's grid;
 * no resize (PSA also rescales: left out, the synthetic images have one scale). Flips apply to
 * image and labels alike.
 *
 * Checkpoint every epoch in the checkpoint store and resume an unfinished run of the same key
 * (nn/loop.ts; see `affinityTrainHash` in io.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { type Dataset, asDataset } from '../../nn/dataset.js';
import { type LoopResult, type LoopState, runTraining } from '../../nn/loop.js';
import { type Optimizer, backboneHeadOptimizer } from '../../nn/optim.js';
import { trainStep } from '../../nn/train.js';
import { neighbourOffsets } from '../../ops/randomwalk.js';
import { TagsegError } from '../../pipeline/errors.js';
import type { Params } from '../params.js';
import { affinities } from '../../nn/affinity_head.js';
import { affinityLoss } from './loss.js';
import { type AffinityNet, embed } from '../../nn/affinity_net.js';
import { disposePairLabels, pairLabels } from './pairs.js';

/** Stride of the label grid (= cams.arrow's). */
export const LABEL_STRIDE = 4;

export interface AffinityTrainImage {
  id: string;
  /** uint8 RGB [height, width, 3]. */
  pixels: Uint8Array;
  height: number;
  width: number;
  /** Affinity labels [ceil(height / 4), ceil(width / 4)]: dataset class indices or 255. */
  labels: Uint8Array;
}

export type AffinityTrainState = LoopState;

export interface AffinityTrainResult extends LoopResult {
  /** Crop side actually used (param clamped to the smallest image, multiple of 4). */
  crop: number;
}

export interface AffinityTrainOptions {
  net: AffinityNet;
  /** In memory, or streamed (nn/dataset.ts): same order, same weights. */
  images: readonly AffinityTrainImage[] | Dataset<AffinityTrainImage>;
  /** Every image's size (for the crop side); required when `images` is a Dataset. */
  sizes?: readonly { height: number; width: number }[];
  affinity: Params['affinity'];
  background: number | null;
  seed: number;
  /** The stage's checkpoint store folder (.tagseg/checkpoints/affinity_train). */
  checkpointDir: string;
  /** Store key (nn/loop trainingKey). */
  hash: string;
  /** Stop after this many epochs in this run (tests). */
  stopAfter?: number;
}

/**
 * The crop side: `crop` clamped to the smallest image side, floored to a multiple of the stride;
 * its grid must hold one pair source at `radius`.
 */
export function cropSide(crop: number, images: readonly { height: number; width: number }[], radius: number): number {
  const minSide = Math.min(crop, ...images.map((im) => Math.min(im.height, im.width)));
  const c = Math.floor(minSide / LABEL_STRIDE) * LABEL_STRIDE;
  const g = c / LABEL_STRIDE;
  if (g < radius || g < 2 * radius - 1) {
    throw new TagsegError(`affinity crop of ${c} px is a ${g} x ${g} label grid, too small for radius ${radius}`, {
      hint: 'raise affinity.crop or lower affinity.radius',
    });
  }
  return c;
}

/**
 * One aligned crop + optional horizontal flip of an image and its labels (pure JS).
 * -> pixels [c, c, 3] as float32 in [0, 255] and labels [c/4, c/4].
 */
export function cropPair(im: AffinityTrainImage, top: number, left: number, c: number, flip: boolean): { pixels: Float32Array; labels: Uint8Array } {
  const s = LABEL_STRIDE;
  const g = c / s;
  const gw = Math.ceil(im.width / s);
  if (top % s || left % s || top + c > im.height || left + c > im.width) {
    throw new TagsegError(`cropPair: crop (${top}, ${left}) of ${c} px does not fit ${im.height} x ${im.width} on the stride-${s} lattice`);
  }
  const pixels = new Float32Array(c * c * 3);
  for (let y = 0; y < c; y++) {
    const row = ((top + y) * im.width + left) * 3;
    for (let x = 0; x < c; x++) {
      const sx = flip ? c - 1 - x : x;
      const o = (y * c + x) * 3;
      const i = row + sx * 3;
      pixels[o] = im.pixels[i];
      pixels[o + 1] = im.pixels[i + 1];
      pixels[o + 2] = im.pixels[i + 2];
    }
  }
  const labels = new Uint8Array(g * g);
  const ty = top / s;
  const tx = left / s;
  for (let y = 0; y < g; y++) {
    for (let x = 0; x < g; x++) labels[y * g + x] = im.labels[(ty + y) * gw + tx + (flip ? g - 1 - x : x)];
  }
  return { pixels, labels };
}

export function makeAffinityOptimizer(net: AffinityNet, a: Params['affinity']): Optimizer {
  return backboneHeadOptimizer(net.backbone, net.head.params.namedTrainable('affinity/'), a);
}

export async function trainAffinity(o: AffinityTrainOptions): Promise<AffinityTrainResult> {
  const { net, affinity: a } = o;
  const images = asDataset(o.images);
  const sizes = o.sizes ?? (Array.isArray(o.images) ? o.images as readonly AffinityTrainImage[] : undefined);
  if (!sizes || sizes.length !== images.size) throw new Error('trainAffinity: a streamed dataset needs the size of each of its images');
  if (images.size === 0) throw new TagsegError('affinity: no training images');
  const c = cropSide(a.crop, sizes, a.radius);
  const g = c / LABEL_STRIDE;
  const offsets = neighbourOffsets(a.radius);
  const opt = makeAffinityOptimizer(net, a);
  try {
    const r = await runTraining({
      name: 'affinity', size: images.size, batchSize: a.batch_size, epochs: a.epochs, lr: a.lr,
      optimizer: opt, variables: net.named(), meta: net.config, checkpointDir: o.checkpointDir, hash: o.hash,
      seed: o.seed + 1, stopAfter: o.stopAfter,
      prefetch: (idx) => images.prefetch(idx),
      step: async (idx, rng) => {
        const px = new Float32Array(idx.length * c * c * 3);
        const lab = new Int32Array(idx.length * g * g);
        (await images.get(idx)).forEach((im, k) => {
          const top = LABEL_STRIDE * rng.int(0, Math.floor((im.height - c) / LABEL_STRIDE) + 1);
          const left = LABEL_STRIDE * rng.int(0, Math.floor((im.width - c) / LABEL_STRIDE) + 1);
          const r = cropPair(im, top, left, c, rng.bernoulli(0.5));
          px.set(r.pixels, k * c * c * 3);
          lab.set(r.labels, k * g * g);
        });
        const x = tf.tensor4d(px, [idx.length, c, c, 3]);
        const labels = tf.tensor3d(lab, [idx.length, g, g], 'int32');
        const pairs = pairLabels(labels, offsets, a.radius, o.background);
        try {
          return trainStep(opt, () => tf.tidy(() => {
            const f = embed(net, x, [g, g]);
            return affinityLoss(affinities(f, offsets, a.radius, 'region'), pairs).loss;
          })).loss;
        } finally {
          tf.dispose([x, labels]);
          disposePairLabels(pairs);
        }
      },
    });
    return { ...r, crop: c };
  } finally {
    opt.dispose();
  }
}
