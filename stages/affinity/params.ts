/** params.yaml `affinity` (the affinity stages: training the pairwise affinity net, the random walk). */
import { artifact } from '../../pipeline/artifacts.js';
import { z } from 'zod';
import { trainingKeys } from '../../nn/train_params.js';
import { key } from '../../pipeline/params_spec.js';
import { shardsKey } from '../../pipeline/shard.js';

export const affinityParams = z.strictObject({
  radius: key(z.number().int().min(2), 5, 'pair radius on the stride-4 label grid (PSA 5 at stride 8, IRN 10 at stride 4)'),
  conf_fg: key(z.number().min(0).max(1), 0.65, 'with bg: a class where its CAM > this (IRN conf_fg_thres 0.30; synthetic: 0.30 -> 57-73, 0.65 -> 80 mIoU)'),
  conf_bg: key(z.number().min(0).max(1), 0.05, 'with bg: bg where every CAM <= this (IRN conf_bg_thres)'),
  margin: key(z.number().min(0).max(1), 0.2, 'without bg: top CAM must beat the second by this'),
  floor: key(z.number().min(0).max(1), 0.3, 'without bg: top CAM must be at least this'),
  crf: key(z.boolean(), true, 'refine both label maps with the dense CRF (IRN: true, gt_prob 0.7; synthetic: RW 81.9 -> 87.9 mIoU)'),
  dim: key(z.number().int().min(1), 448, 'embedding channels (PSA f9: 448)'),
  levels: key(
    z.array(z.number().int().min(0).max(3)).min(1),
    [0, 1, 2, 3],
    'backbone levels feeding the head, 0 = stride 4 (PSA: its last three; synthetic: + stride 4 -> RW 91.2)',
  ),
  reduce: key(z.array(z.number().int().min(1)).min(1), [32, 64, 128, 128], 'channels each level is reduced to (PSA 64/128/256 for three levels)'),
  ...trainingKeys({
    optimizer: ['adamw', 'sgd (PSA: lr 0.1, momentum 0.9) | adamw'],
    lr: [0.001, 'base lr (backbone); poly decay, power 0.9'],
    head_lr_mult: [10, 'lr multiplier of the new affinity head (PSA: 10)'],
    weight_decay: [0.0001],
    epochs: [6, 'PSA 8, IRN 3'],
    batch_size: [8],
    crop: [96, 'training crop side in pixels (a multiple of 4; clamped to the smallest image)'],
    frozen_stages: [0, "backbone stages kept at the CAM model's weights, no backward pass through them (as cam.frozen_stages)"],
  }),
  beta: key(
    z.number().gt(0),
    8,
    'random walk: affinity exponent (PSA 8, IRN 10; with CRF labels + stride-4 level, synthetic: 4 / 8 / 16 -> 91.2 / 91.2 / 89.8)',
  ),
  logt: key(z.number().int().min(0).max(12), 4, 'random walk: 2^logt steps (PSA/IRN 8; on 32x32 synthetic grids 8 loses: 91.2 at 4 vs 85.0 at 8)'),
  alpha: key(z.number().gt(0), 16, 'bg map (1 - max CAM)^alpha for propagation (PSA 16)'),
  shards: shardsKey('affinity', artifact('affinityCams')),
}).superRefine((a, ctx) => {
  if (a.reduce.length !== a.levels.length) {
    ctx.addIssue({ code: 'custom', path: ['reduce'], message: `needs one channel count per level: ${a.levels.length} levels, got ${a.reduce.length} counts` });
  }
  if (new Set(a.levels).size !== a.levels.length) ctx.addIssue({ code: 'custom', path: ['levels'], message: 'levels must be distinct' });
});

/** The sections this folder owns. */
export const sections = { affinity: affinityParams };
