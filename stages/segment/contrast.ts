/**
 * The auxiliary loss of `segment.contrast` (methods.md 4-6): a projection head
 * (nn/contrastive/head.ts, GroupNorm as the context head) on the context head's penultimate map,
 * and the contrastive loss of nn/contrastive (pixel: ContrastiveSeg with memory; reco: ReCo;
 * spml: SPML) on that grid. The loss sees
 *
 * - labels: the crop's labels resized to the grid by nearest neighbour (255 stays 255);
 * - probs: the softmax of the grid logits, with a zero gradient (the losses read confidences only);
 * - pixels: the crop's RGB averaged to the grid, computed before the step (outside the tape).
 *
 * Weight and warm-up: `segment.contrast_weight` x loss, on from the second epoch (ContrastiveSeg
 * enables its loss after a warm-up, RCA from epoch 2: the embeddings of an untrained head are
 * noise). Memory banks (pixel) go into the training checkpoint with the projection head.
 */
import * as tf from '@tensorflow/tfjs';
import { detach } from '../../nn/contrastive/common.js';
import { ProjectionHead } from '../../nn/contrastive/head.js';
import { type ContrastLoss, createContrastLoss } from '../../nn/contrastive/index.js';
import { type NamedVariables, mergeNamed } from '../../nn/params.js';
import type { Rng } from '../../nn/rng.js';
import type { Params } from '../params.js';
import type { SegAuxInput, SegAuxLoss } from './train.js';

export interface SegAux extends SegAuxLoss {
  dispose(): void;
}

export interface SegAuxOptions {
  /** Dataset classes K. */
  classes: number;
  background: number | null;
  /** Channels of the context head's penultimate map (segment.head_dim). */
  inChannels: number;
  seed: number;
  /** Iterations of warm-up before the loss is on (one epoch). */
  startIter: number;
}

/** Labels [B, c, c] -> [B, h, w] by nearest neighbour (pixel centres). */
function gridLabels(labels: tf.Tensor3D, h: number, w: number): tf.Tensor3D {
  return tf.tidy(() => {
    const [, H, W] = labels.shape;
    if (H === h && W === w) return labels.clone();
    const up = tf.image.resizeNearestNeighbor(tf.expandDims(tf.cast(labels, 'float32'), 3) as tf.Tensor4D, [h, w], false, true);
    return tf.cast(tf.squeeze(up, [3]), 'int32') as tf.Tensor3D;
  });
}

/** The loss of `segment.contrast`, or undefined for 'none'. */
export function createSegAux(s: Params['segment'], o: SegAuxOptions): SegAux | undefined {
  if (s.contrast === 'none') return undefined;
  const proj = new ProjectionHead(o.inChannels, { dim: s.contrast_dim, norm: { kind: 'group' }, seed: o.seed + 17 });
  let loss: ContrastLoss;
  try {
    loss = createContrastLoss(s.contrast, {
      classes: o.classes, dim: s.contrast_dim, seed: o.seed, background: o.background, pixel: { memorySize: s.pixel_memory },
    });
  } catch (err) {
    proj.dispose();
    throw err;
  }
  const memory = (): NamedVariables => {
    const out: NamedVariables = new Map();
    for (const [k, v] of loss.variables()) out.set(`contrast/memory/${k}`, v);
    return out;
  };
  const batch = (b: SegAuxInput, training: boolean) => {
    const embeddings = proj.forward(b.features, training);
    const [, h, w] = embeddings.shape;
    return { embeddings, labels: gridLabels(b.labels, h, w), probs: detach(tf.softmax(b.logits) as tf.Tensor4D) };
  };
  return {
    name: s.contrast,
    weight: s.contrast_weight,
    startIter: o.startIter,
    loss(b: SegAuxInput, rng: Rng): tf.Scalar {
      return tf.tidy(() => loss.loss({ ...batch(b, true), tags: b.tags, pixels: b.pixels }, rng));
    },
    update: loss.update
      ? (b: SegAuxInput, rng: Rng) => {
          const t = tf.tidy(() => batch(b, false));
          try {
            loss.update!(t, rng);
          } finally {
            tf.dispose([t.embeddings, t.labels, t.probs]);
          }
        }
      : undefined,
    trainable: () => proj.params.namedTrainable('contrast/proj/'),
    variables: () => mergeNamed(proj.params.named('contrast/proj/'), memory()),
    dispose() {
      proj.dispose();
      loss.dispose();
    },
  };
}
