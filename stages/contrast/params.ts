/** params.yaml `contrast` (the contrast stages: RCA's region memory, contrast and aggregation on top of the CAM model). */
import { artifact } from '../../pipeline/artifacts.js';
import { z } from 'zod';
import { classifierKeys, trainingKeys } from '../../nn/train_params.js';
import { key } from '../../pipeline/params_spec.js';
import { shardsKey } from '../../pipeline/shard.js';

export const contrastParams = z.strictObject({
  region: key(
    z.enum(['cam', 'affinity']),
    'cam',
    'region of a tagged class: cam (RCA: coarse CAM softmax > its mean) | affinity (affinity_cams.arrow maps > their mean)',
  ),
  pooling: key(z.enum(['mask', 'weighted']), 'mask', 'region embedding: mask (RCA: mean over the binary region) | weighted (CAM-weighted mean)'),
  memory_size: key(z.number().int().min(1), 500, 'embeddings per class queue (RCA 500)'),
  memory_update: key(z.enum(['replace', 'blend']), 'replace', 'replace (FIFO queue) | blend (RCA: slot <- 0.99 slot + 0.01 new)'),
  memory_momentum: key(z.number().min(0).lt(1), 0.99, 'blend only: weight of the old slot (RCA 0.99)'),
  enqueue_prob: key(z.number().min(0).max(1), 0.7, 'enqueue a region when its refined class probability exceeds this (RCA 0.7)'),
  centroids: key(z.number().int().min(1), 10, 'k-means centres per class, recomputed at every epoch start after the first (RCA 10)'),
  kmeans_iters: key(z.number().int().min(0), 10, 'Lloyd iterations of that k-means'),
  dim: key(z.number().int().min(1), 64, 'aggregation Q/K/V channels (RCA 512 = its feature channels)'),
  similarity: key(
    z.enum(['raw', 'softmax']),
    'softmax',
    "aggregation: softmax (attention) | raw (RCA's code: Q K^T x 20 / centroids, no softmax); RCA mIoU softmax vs raw: synthetic 84.0 vs 84.6, MSRC-v2 66.3 vs 31.3",
  ),
  aggregation: key(z.boolean(), true, 'fuse the memory context before the refined head (false: contrast only; synthetic RCA 83.5 without, 84.0 with)'),
  contrast_weight: key(z.number().min(0), 0.01, 'weight of the InfoNCE term (RCA 0.01; 0 = aggregation only: synthetic RCA 84.0 with or without it)'),
  temperature: key(z.number().gt(0), 0.07, 'InfoNCE temperature (RCA 0.07)'),
  contrast_from: key(z.number().int().min(0), 2, 'first epoch (0-based) with the contrast term (RCA 2)'),
  coarse_weight: key(z.number().min(0), 0.4, "weight of the coarse head's loss (RCA 0.4)"),
  recam_weight: key(z.number().min(0), 0, "class re-activation loss on both heads (cam.recam_weight's loss; 0 = off)"),
  ...trainingKeys({
    optimizer: ['adamw', 'sgd (RCA: lr 0.001, Nesterov) | adamw'],
    lr: [0.0005, 'base lr (backbone, starts from models/cam); poly decay, power 0.9'],
    head_lr_mult: [10, 'lr multiplier of the heads, aggregation and projection (RCA: 10 on its new layers)'],
    weight_decay: [0.0001, '(RCA 5e-4)'],
    epochs: [12, '(RCA 30 from ImageNet VGG; here from the trained CAM model; synthetic RCA 83.2 at 6, 84.0 at 12)'],
    batch_size: [16, '(RCA 8)'],
    crop: [112, 'training crop side (random resized crop, as cam)'],
    frozen_stages: [0, "backbone stages kept at the CAM model's weights, no backward pass through them (as cam.frozen_stages)"],
  }),
  ...classifierKeys({
    crop_scale: [[0.35, 1.0], 'crop area range as a fraction of the image'],
    jitter: [0.3, 'colour jitter strength (brightness/contrast/saturation)'],
    scales: [[1.0, 0.5, 1.5, 2.0], 'inference scales (each with its horizontal flip), as cam'],
    flip: [true, 'inference: add the flipped image at every scale'],
    dtype: ['float16', 'contrast_cams.arrow storage: float16 | float32'],
  }),
  shards: shardsKey('contrast', artifact('contrastCams')),
});

/** The sections this folder owns. */
export const sections = { contrast: contrastParams };
