/** params.yaml `segment`: the segmentation net trained on the pseudo-masks, and its inference. */
import { z } from 'zod';
import { trainingKeys } from '../../nn/train_params.js';
import { segHeadKinds } from '../../nn/seg_heads/index.js';
import { crfGroup } from '../../ops/crf_params.js';
import { key } from '../../pipeline/params_spec.js';

/** A registered segmentation head's name, checked when validated: one registered at run time (registerSegHead) is accepted too. */
const headName = z.string().superRefine((v, ctx) => {
  if (!segHeadKinds().includes(v)) ctx.addIssue({ code: 'invalid_value', values: segHeadKinds(), input: v });
});

export const segmentParams = z.strictObject({
  labels: key(z.enum(['pseudo', 'gt']), 'pseudo', 'pseudo (cache/pseudo_masks.arrow) | gt (ground-truth masks: the oracle upper bound)'),
  val_fraction: key(z.number().gt(0).lt(1), 0.2, 'share of dataset.train_split held out for validation (seeded hash of the id; never trained on)'),
  head: key(headName, 'deeplab', 'segmentation head from the registry nn/seg_heads/index.ts: deeplab (pooled context branches + optional v3+ decoder)'),
  head_dim: key(z.number().int().min(8), 64, 'context head channels (DeepLab v3+: 256)'),
  decoder: key(z.boolean(), true, 'DeepLab v3+ decoder: fuse the stride-4 backbone level before the classifier'),
  contrast: key(z.enum(['none', 'pixel', 'reco', 'spml']), 'none', 'auxiliary contrastive loss: none | pixel | reco | spml (methods.md 4-6)'),
  contrast_weight: key(z.number().min(0), 0.1, 'weight of the contrastive loss (ContrastiveSeg 0.1 without memory)'),
  contrast_dim: key(z.number().int().min(2), 64, 'projection head output channels (ContrastiveSeg/ReCo 256, SPML 64)'),
  pixel_memory: key(
    z.number().int().min(0),
    5000,
    'contrast pixel: slots per class in each of its two queues (ContrastiveSeg 5000; 0 = contrast within the batch). Loss memory ~ 1024 anchors x 2 x slots x classes: MSRC-v2 at 5000 peaked at 12.2 GB RSS',
  ),
  self_train: key(
    z.number().int().min(0).max(5),
    0,
    "self-training rounds (pseudo labels only): retrain on the net's own tag-restricted, CRF-refined predictions of the training images (0 = off; each round one more training; MSRC-v2: 1 round -3.2 mIoU under the protocol, README)",
  ),
  ...trainingKeys({
    optimizer: ['adamw', 'sgd (DeepLab: lr 0.007, momentum 0.9) | adamw'],
    lr: [0.002, 'base lr (backbone); poly decay, power 0.9'],
    head_lr_mult: [10, 'lr multiplier of the new head (DeepLab: 10 on the classifier)'],
    weight_decay: [0.0001],
    epochs: [12],
    batch_size: [8],
    crop: [96, 'training crop side in pixels (DeepLab 321-513)'],
    frozen_stages: [0, "backbone stages kept at the CAM model's weights, no backward pass through them (mmseg's frozen_stages): 0 = none, 1 = the stem and the stride-4 level (MobileNet conv1-conv_pw_3, ResNet stem + stage1), ..."],
  }),
  scale_range: key(z.array(z.number().gt(0)).length(2), [0.75, 1.25], 'random rescale of image + mask before the crop (DeepLab 0.5-2.0)', { float: true }),
  jitter: key(z.number().min(0).max(1), 0.2, 'colour jitter strength (brightness/contrast/saturation)'),
  scales: key(z.array(z.number().gt(0)).min(1), [1.0], 'inference scales (DeepLab multi-scale test: 0.5-1.75)', { float: true }),
  flip: key(z.boolean(), true, 'inference: add the mirrored image at every scale'),
  crf: crfGroup("inference: dense CRF on the network's probabilities (DeepLab's post-processing; SPML/RCA publish +CRF)", {
    iterations: [10, 'mean-field iterations (0 = no CRF; MSRC-v2 val mIoU: pseudo-mask net 60.3 -> 63.6, oracle 73.8 -> 76.7)'],
    gaussian_sxy: [3, 'smoothness kernel width in working-size pixels'],
    gaussian_compat: [3, 'its Potts weight'],
    bilateral_sxy: [50, "appearance kernel width (refine.crf's, IRN's)"],
    bilateral_srgb: [5, 'its colour width, 0-255 RGB'],
    bilateral_compat: [10, 'its Potts weight'],
  }),
});

/**
 * The segment section as recipes and training hashes key it: self_train, added after recipes were
 * kept, is left out where it changes nothing (0, or ground-truth labels, which are not self-trained),
 * so existing checkpoints and protocol runs (the oracle's included) still match.
 */
export function segmentKeyed(s: SegmentParams): SegmentKeyed {
  const { self_train: rounds, ...rest } = s;
  return rounds === 0 || s.labels === 'gt' ? rest : s;
}

/** Self-training rounds before the last: pseudo-masks only (ground truth is not relabelled). */
export const selfTrainRounds = (s: SegmentParams): number => (s.labels === 'pseudo' ? s.self_train : 0);

export type SegmentParams = z.output<typeof segmentParams>;
export type SegmentKeyed = Omit<SegmentParams, 'self_train'> & { self_train?: number };

/** The sections this folder owns. */
export const sections = { segment: segmentParams };
