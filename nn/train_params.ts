/**
 * params keys shared by the network stages, declared once here with their constraints; each
 * section (stages/<x>/params.ts) gives its own defaults and docs through `keys`.
 */
import { z } from 'zod';
import { type KeySpec, keys } from '../pipeline/params_spec.js';

/** Training keys every network stage has (optim.ts OptimizerSettings + loop and crop size). */
const TRAINING = {
  optimizer: z.enum(['sgd', 'adamw']),
  lr: z.number().gt(0),
  head_lr_mult: z.number().min(0),
  weight_decay: z.number().min(0),
  epochs: z.number().int().min(1),
  batch_size: z.number().int().min(1),
  crop: z.number().int().min(16),
  frozen_stages: z.number().int().min(0).max(4),
};

export function trainingKeys(spec: KeySpec<typeof TRAINING>): typeof TRAINING {
  return keys(TRAINING, spec);
}

/** Augmentation, multi-scale inference and map storage keys of the two classifier stages (cam, contrast). */
const CLASSIFIER = {
  crop_scale: z.array(z.number().gt(0).max(1)).length(2),
  jitter: z.number().min(0).max(1),
  scales: z.array(z.number().gt(0)).min(1),
  flip: z.boolean(),
  dtype: z.enum(['float16', 'float32']),
};

export function classifierKeys(spec: KeySpec<typeof CLASSIFIER>): typeof CLASSIFIER {
  return keys(CLASSIFIER, spec, ['crop_scale', 'scales']);
}
