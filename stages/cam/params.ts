/** params.yaml `cam` (the cam stages: training the tag classifier, writing CAMs). */
import { artifact } from '../../pipeline/artifacts.js';
import { z } from 'zod';
import { backboneKinds } from '../../nn/backbones/index.js';
import { classifierKeys, trainingKeys } from '../../nn/train_params.js';
import { key } from '../../pipeline/params_spec.js';
import { shardsKey } from '../../pipeline/shard.js';

/** A registered backbone's name, checked when validated: one registered at run time (registerBackbone) is accepted too. */
const backboneName = z.string().superRefine((v, ctx) => {
  if (!backboneKinds().includes(v)) ctx.addIssue({ code: 'invalid_value', values: backboneKinds(), input: v });
});

export const camParams = z.strictObject({
  backbone: key(backboneName, 'resnet', 'resnet (from scratch) | mobilenet (ImageNet-pretrained MobileNet v1; use it for photos)'),
  pretrained: key(z.string(), '', "mobilenet only: a model name, LayersModel dir / model.json / URL; '' = mobilenet_v1_1.0_224 (README: Pretrained weights)"),
  width: key(z.number().int().min(1), 16, 'resnet: channels of the first stage (stages: width x [1, 2, 4, 8])'),
  depth: key(z.array(z.number().int().min(1)).length(4), [1, 1, 1, 1], 'resnet: basic blocks per stage'),
  output_stride: key(z.union([z.literal(8), z.literal(16)]), 8, '8 | 16 (8: fewer downsamplings, no dilation)'),
  norm: key(z.enum(['batch', 'group', 'frozen']), 'batch', 'batch | group | frozen (frozen = pretrained BN statistics, mobilenet)'),
  probe_iters: key(z.number().int().min(0), 0, 'fit the head alone on frozen pooled features first (LP-FT; 0 = off; for pretrained backbones)'),
  recam_weight: key(
    z.number().min(0),
    0,
    'class re-activation loss weight (ReCAM: 1; 0 = off): softmax CE on CAM-masked pooled features, parts co-occurring classes',
  ),
  ...trainingKeys({
    optimizer: ['adamw', 'sgd (IRN: lr 0.1, momentum 0.9) | adamw; adamw won on synthetic (bench/cam_synth.sh)'],
    lr: [0.003, 'base lr (backbone); poly decay, power 0.9'],
    head_lr_mult: [10, 'lr multiplier of the new classifier (IRN: 10)'],
    weight_decay: [0.0001],
    epochs: [12],
    batch_size: [16],
    crop: [112, 'training crop side (random resized crop)'],
    frozen_stages: [0, "backbone stages kept at their initial (pretrained) weights, no backward pass through them (mmseg's frozen_stages; IRN freezes ResNet-50's conv1): 0 = none, 1 = the stem and the stride-4 level, ..."],
  }),
  ...classifierKeys({
    crop_scale: [[0.35, 1.0], 'crop area range as a fraction of the image'],
    jitter: [0.3, 'colour jitter strength (brightness/contrast/saturation)'],
    scales: [[1.0, 0.5, 1.5, 2.0], 'CAM inference scales (each with its horizontal flip)'],
    flip: [true, 'CAM inference: add the flipped image at every scale'],
    dtype: ['float16', 'cams.arrow storage: float16 | float32'],
  }),
  shards: shardsKey('cam', artifact('cams')),
});

/** The sections this folder owns. */
export const sections = { cam: camParams };
