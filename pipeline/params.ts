/**
 * params.yaml: one strict zod schema, loading with `--set` overrides, in-place edits that keep
 * comments (what `dvc exp run -S` does), and stable hashes of parameter subsets.
 *
 * Why strict: a typo such as `ingest.sise: 256` would otherwise be ignored silently and the run
 * would use the old value while DVC reports the param as changed. Every key is required (no
 * defaults) because DVC reads params.yaml itself: a value that exists only as a default in code
 * is invisible to `dvc params diff` and to the lock fingerprint.
 *
 * Adding a section for a new stage = one `const xSchema = z.strictObject({...})`, one line in
 * `SECTIONS`, and its commented block in `DEFAULT_PARAMS_YAML` (and in params.yaml).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import YAML, { isCollection, isScalar } from 'yaml';
import { z } from 'zod';
import { backboneKinds } from '../nn/backbones/index.js';
import { TagsegError, messageOf } from './errors.js';
import { writeFileAtomic } from './fsutil.js';
import { MAX_SHARDS } from './shard.js';

const seedSchema = z.number().int().min(0).max(2 ** 32 - 1);

const datasetSchema = z.strictObject({
  root: z.string().min(1),
  format: z.enum(['voc', 'csv']),
  csv: z.string().min(1),
  splits: z.array(z.string().min(1)),
  train_split: z.string().min(1),
  classes: z.string(),
  // Folder of hand-fixed masks (<id>.png) for the segment stage ('' = none, built-in runner only:
  // DVC needs the dep to exist). Defaulted so older params.yaml files stay valid.
  corrections: z.string().default('review/corrections'),
});

const synthSchema = z.strictObject({
  out: z.string().min(1),
  images: z.number().int().min(1),
  size: z.number().int().min(8),
  // Label masks are uint8 with 0 = background and 255 = ignore.
  classes: z.number().int().min(1).max(254),
  val_fraction: z.number().min(0).lt(1),
});

const ingestSchema = z.strictObject({
  size: z.number().int().min(0),
  concurrency: z.number().int().min(1),
  on_error: z.enum(['fail', 'skip']),
});

/** Training keys every network stage has (nn/optim.ts OptimizerSettings + loop and crop size). */
const trainingFields = {
  optimizer: z.enum(['sgd', 'adamw']),
  lr: z.number().gt(0),
  head_lr_mult: z.number().min(0),
  weight_decay: z.number().min(0),
  epochs: z.number().int().min(1),
  batch_size: z.number().int().min(1),
  crop: z.number().int().min(16),
};

/** Augmentation, multi-scale inference and map storage keys of the two classifier stages (cam, contrast). */
const camLikeFields = {
  crop_scale: z.array(z.number().gt(0).max(1)).length(2),
  jitter: z.number().min(0).max(1),
  scales: z.array(z.number().gt(0)).min(1),
  flip: z.boolean(),
  dtype: z.enum(['float16', 'float32']),
};

const camSchema = z.strictObject({
  backbone: z.enum(backboneKinds()),
  pretrained: z.string(),
  width: z.number().int().min(1),
  depth: z.array(z.number().int().min(1)).length(4),
  output_stride: z.union([z.literal(8), z.literal(16)]),
  norm: z.enum(['batch', 'group', 'frozen']),
  probe_iters: z.number().int().min(0),
  recam_weight: z.number().min(0),
  ...trainingFields,
  ...camLikeFields,
});

const affinitySchema = z.strictObject({
  radius: z.number().int().min(2),
  conf_fg: z.number().min(0).max(1),
  conf_bg: z.number().min(0).max(1),
  margin: z.number().min(0).max(1),
  floor: z.number().min(0).max(1),
  crf: z.boolean(),
  dim: z.number().int().min(1),
  levels: z.array(z.number().int().min(0).max(3)).min(1),
  reduce: z.array(z.number().int().min(1)).min(1),
  ...trainingFields,
  beta: z.number().gt(0),
  logt: z.number().int().min(0).max(12),
  alpha: z.number().gt(0),
}).superRefine((a, ctx) => {
  if (a.reduce.length !== a.levels.length) {
    ctx.addIssue({ code: 'custom', path: ['reduce'], message: `needs one channel count per level: ${a.levels.length} levels, got ${a.reduce.length} counts` });
  }
  if (new Set(a.levels).size !== a.levels.length) ctx.addIssue({ code: 'custom', path: ['levels'], message: 'levels must be distinct' });
});

const contrastSchema = z.strictObject({
  region: z.enum(['cam', 'affinity']),
  pooling: z.enum(['mask', 'weighted']),
  memory_size: z.number().int().min(1),
  memory_update: z.enum(['replace', 'blend']),
  memory_momentum: z.number().min(0).lt(1),
  enqueue_prob: z.number().min(0).max(1),
  centroids: z.number().int().min(1),
  kmeans_iters: z.number().int().min(0),
  dim: z.number().int().min(1),
  similarity: z.enum(['raw', 'softmax']),
  aggregation: z.boolean(),
  contrast_weight: z.number().min(0),
  temperature: z.number().gt(0),
  contrast_from: z.number().int().min(0),
  coarse_weight: z.number().min(0),
  recam_weight: z.number().min(0),
  ...trainingFields,
  ...camLikeFields,
});

/** Dense CRF settings (ops/crf.ts), shared by refine.crf and segment.crf; iterations 0 = no CRF. */
const crfSchema = z.strictObject({
  iterations: z.number().int().min(0),
  gaussian_sxy: z.number().gt(0),
  gaussian_compat: z.number().min(0),
  bilateral_sxy: z.number().gt(0),
  bilateral_srgb: z.number().gt(0),
  bilateral_compat: z.number().min(0),
});

const refineSchema = z.strictObject({
  source: z.enum(['contrast', 'affinity', 'cam']),
  bg: z.enum(['threshold', 'power']),
  bg_threshold: z.number().min(0).max(1),
  bg_power: z.number().gt(0),
  crf: crfSchema,
  ignore: z.enum(['none', 'margin', 'disagree', 'either']),
  ignore_margin: z.number().min(0).max(1),
  mostly_ignore: z.number().min(0).max(1),
  concurrency: z.number().int().min(1),
  shards: z.number().int().min(1).max(MAX_SHARDS),
});

const segmentSchema = z.strictObject({
  labels: z.enum(['pseudo', 'gt']),
  val_fraction: z.number().gt(0).lt(1),
  head_dim: z.number().int().min(8),
  decoder: z.boolean(),
  contrast: z.enum(['none', 'pixel', 'reco', 'spml']),
  contrast_weight: z.number().min(0),
  contrast_dim: z.number().int().min(2),
  pixel_memory: z.number().int().min(0),
  ...trainingFields,
  scale_range: z.array(z.number().gt(0)).length(2),
  jitter: z.number().min(0).max(1),
  scales: z.array(z.number().gt(0)).min(1),
  flip: z.boolean(),
  crf: crfSchema,
});

const auditSchema = z.strictObject({
  rca_map: z.enum(['propagated', 'cams']),
  cam_threshold: z.number().min(0).max(1),
  random_walk_threshold: z.number().min(0).max(1),
  rca_threshold: z.number().min(0).max(1),
  edge_quantile: z.number().min(0).max(1),
  edge_floor: z.number().min(0),
  edge_tolerance: z.number().int().min(0),
  large_area: z.number().gt(0).max(1),
  low_confidence: z.number().min(0).max(1),
  weights: z.strictObject({
    ignore: z.number().min(0),
    low_confidence: z.number().min(0),
    disagreement: z.number().min(0),
    empty_tags: z.number().min(0),
    fragmentation: z.number().min(0),
    misalignment: z.number().min(0),
    large_low_confidence: z.number().min(0),
  }),
  bad_miou: z.number().min(0).max(1),
  bad_coverage: z.number().min(0).max(1),
  top: z.number().int().min(1),
  thumb_size: z.number().int().min(16),
  full_overlays: z.boolean(),
});

/** Top-level sections of params.yaml. Later stages add theirs here (one line each). */
const SECTIONS = {
  seed: seedSchema,
  dataset: datasetSchema,
  synth: synthSchema,
  ingest: ingestSchema,
  cam: camSchema,
  affinity: affinitySchema,
  contrast: contrastSchema,
  refine: refineSchema,
  segment: segmentSchema,
  audit: auditSchema,
};

export const paramsSchema = z.strictObject(SECTIONS);
export type Params = z.infer<typeof paramsSchema>;

/** The commented params.yaml a new project starts from (the repo's params.yaml is this text). */
export const DEFAULT_PARAMS_YAML = `seed: 0                       # global seed for every RNG
dataset:
  root: datasets/synthetic    # a VOC-layout folder, or a folder of images + CSV (format: csv)
  format: voc                 # voc | csv
  csv: tags.csv               # csv format only: image_id,tags file, relative to root
  splits: []                  # VOC ImageSets/Segmentation/<split>.txt to import; [] = all but trainval
  train_split: train          # split whose tags train the classifier and whose masks score pseudo-masks
  classes: ''                 # classes.json fixing the class indices (project-relative); '' = the dataset's, else VOC's 21 (voc) or the sorted tags (csv: written to classes.json and set here)
  corrections: review/corrections # hand-fixed masks <id>.png (VOC PNGs, project-relative) replacing pseudo-masks in segment; empty folder = none
synth:
  out: datasets/synthetic
  images: 240
  size: 128
  classes: 4
  val_fraction: 0.25
ingest:
  size: 128                   # long side of the working size in pixels (0 = keep original)
  concurrency: 4
  on_error: fail              # fail | skip
cam:
  backbone: resnet            # resnet (from scratch) | mobilenet (ImageNet-pretrained MobileNet v1; use it for photos)
  pretrained: ''              # mobilenet only: a model name, LayersModel dir / model.json / URL; '' = mobilenet_v1_1.0_224 (README: Pretrained weights)
  width: 16                   # resnet: channels of the first stage (stages: width x [1, 2, 4, 8])
  depth: [1, 1, 1, 1]         # resnet: basic blocks per stage
  output_stride: 8            # 8 | 16 (8: fewer downsamplings, no dilation)
  norm: batch                 # batch | group | frozen (frozen = pretrained BN statistics, mobilenet)
  probe_iters: 0              # fit the head alone on frozen pooled features first (LP-FT; 0 = off; for pretrained backbones)
  recam_weight: 0             # class re-activation loss weight (ReCAM: 1; 0 = off): softmax CE on CAM-masked pooled features, parts co-occurring classes
  optimizer: adamw            # sgd (IRN: lr 0.1, momentum 0.9) | adamw; adamw won on synthetic (bench/cam_synth.sh)
  lr: 0.003                   # base lr (backbone); poly decay, power 0.9
  head_lr_mult: 10            # lr multiplier of the new classifier (IRN: 10)
  weight_decay: 0.0001
  epochs: 12
  batch_size: 16
  crop: 112                   # training crop side (random resized crop)
  crop_scale: [0.35, 1.0]     # crop area range as a fraction of the image
  jitter: 0.3                 # colour jitter strength (brightness/contrast/saturation)
  scales: [1.0, 0.5, 1.5, 2.0] # CAM inference scales (each with its horizontal flip)
  flip: true                  # CAM inference: add the flipped image at every scale
  dtype: float16              # cams.arrow storage: float16 | float32
affinity:
  radius: 5                   # pair radius on the stride-4 label grid (PSA 5 at stride 8, IRN 10 at stride 4)
  conf_fg: 0.65               # with bg: a class where its CAM > this (IRN conf_fg_thres 0.30; synthetic: 0.30 -> 57-73, 0.65 -> 80 mIoU)
  conf_bg: 0.05               # with bg: bg where every CAM <= this (IRN conf_bg_thres)
  margin: 0.2                 # without bg: top CAM must beat the second by this
  floor: 0.3                  # without bg: top CAM must be at least this
  crf: true                   # refine both label maps with the dense CRF (IRN: true, gt_prob 0.7; synthetic: RW 81.9 -> 87.9 mIoU)
  dim: 448                    # embedding channels (PSA f9: 448)
  levels: [0, 1, 2, 3]        # backbone levels feeding the head, 0 = stride 4 (PSA: its last three; synthetic: + stride 4 -> RW 91.2)
  reduce: [32, 64, 128, 128]  # channels each level is reduced to (PSA 64/128/256 for three levels)
  optimizer: adamw            # sgd (PSA: lr 0.1, momentum 0.9) | adamw
  lr: 0.001                   # base lr (backbone); poly decay, power 0.9
  head_lr_mult: 10            # lr multiplier of the new affinity head (PSA: 10)
  weight_decay: 0.0001
  epochs: 6                   # PSA 8, IRN 3
  batch_size: 8
  crop: 96                    # training crop side in pixels (a multiple of 4; clamped to the smallest image)
  beta: 8                     # random walk: affinity exponent (PSA 8, IRN 10; with CRF labels + stride-4 level, synthetic: 4 / 8 / 16 -> 91.2 / 91.2 / 89.8)
  logt: 4                     # random walk: 2^logt steps (PSA/IRN 8; on 32x32 synthetic grids 8 loses: 91.2 at 4 vs 85.0 at 8)
  alpha: 16                   # bg map (1 - max CAM)^alpha for propagation (PSA 16)
contrast:
  region: cam                 # region of a tagged class: cam (RCA: coarse CAM softmax > its mean) | affinity (affinity_cams.arrow maps > their mean)
  pooling: mask               # region embedding: mask (RCA: mean over the binary region) | weighted (CAM-weighted mean)
  memory_size: 500            # embeddings per class queue (RCA 500)
  memory_update: replace      # replace (FIFO queue) | blend (RCA: slot <- 0.99 slot + 0.01 new)
  memory_momentum: 0.99       # blend only: weight of the old slot (RCA 0.99)
  enqueue_prob: 0.7           # enqueue a region when its refined class probability exceeds this (RCA 0.7)
  centroids: 10               # k-means centres per class, recomputed at every epoch start after the first (RCA 10)
  kmeans_iters: 10            # Lloyd iterations of that k-means
  dim: 64                     # aggregation Q/K/V channels (RCA 512 = its feature channels)
  similarity: softmax         # aggregation: softmax (attention) | raw (RCA's code: Q K^T x 20 / centroids, no softmax); RCA mIoU softmax vs raw: synthetic 84.0 vs 84.6, MSRC-v2 66.3 vs 31.3
  aggregation: true           # fuse the memory context before the refined head (false: contrast only; synthetic RCA 83.5 without, 84.0 with)
  contrast_weight: 0.01       # weight of the InfoNCE term (RCA 0.01; 0 = aggregation only: synthetic RCA 84.0 with or without it)
  temperature: 0.07           # InfoNCE temperature (RCA 0.07)
  contrast_from: 2            # first epoch (0-based) with the contrast term (RCA 2)
  coarse_weight: 0.4          # weight of the coarse head's loss (RCA 0.4)
  recam_weight: 0             # class re-activation loss on both heads (cam.recam_weight's loss; 0 = off)
  optimizer: adamw            # sgd (RCA: lr 0.001, Nesterov) | adamw
  lr: 0.0005                  # base lr (backbone, starts from models/cam); poly decay, power 0.9
  head_lr_mult: 10            # lr multiplier of the heads, aggregation and projection (RCA: 10 on its new layers)
  weight_decay: 0.0001        # (RCA 5e-4)
  epochs: 12                  # (RCA 30 from ImageNet VGG; here from the trained CAM model; synthetic RCA 83.2 at 6, 84.0 at 12)
  batch_size: 16              # (RCA 8)
  crop: 112                   # training crop side (random resized crop, as cam)
  crop_scale: [0.35, 1.0]     # crop area range as a fraction of the image
  jitter: 0.3                 # colour jitter strength (brightness/contrast/saturation)
  scales: [1.0, 0.5, 1.5, 2.0] # inference scales (each with its horizontal flip), as cam
  flip: true                  # inference: add the flipped image at every scale
  dtype: float16              # contrast_cams.arrow storage: float16 | float32
refine:
  source: contrast            # maps to refine: contrast (RCA + random walk: contrast_cams.arrow propagated) | affinity (random walk of the CAMs) | cam
  bg: threshold               # with a background class: threshold (constant bg score, IRN) | power (bg = (1 - max map)^bg_power, PSA)
  bg_threshold: 0.25          # constant bg score (IRN sem_seg_bg_thres 0.25 on random-walk maps)
  bg_power: 16                # exponent of (1 - max map) (PSA alpha 4 / 16 / 32)
  crf:                        # dense CRF on the original image (PSA crf_inference, with IRN's bilateral kernel)
    iterations: 10            # mean-field iterations (PSA/IRN 10; 0 = no CRF)
    gaussian_sxy: 3           # smoothness kernel width in original pixels (PSA 3)
    gaussian_compat: 3        # its Potts weight (PSA 3)
    bilateral_sxy: 50         # appearance kernel width in original pixels (PSA 80, IRN 50; MSRC-v2: PSA's -> 65.8 after the CRF, IRN's -> 70.1, maps 68.3)
    bilateral_srgb: 5         # its colour width, 0-255 RGB (PSA 13, IRN 5)
    bilateral_compat: 10      # its Potts weight (PSA/IRN 10)
  ignore: either              # pixels set to 255: margin (top-two posterior margin < ignore_margin) | disagree (CRF label != the maps' label) | either | none
  ignore_margin: 0.1          # minimum top1 - top2 posterior margin kept by margin / either
  mostly_ignore: 0.5          # flag an image 'mostly_ignore' when more than this fraction of it is ignore
  concurrency: 4              # images decoded and refined at once; CRFs run in min(this, cores) worker threads
  shards: 1                   # shards of the per-image pass (1 = one cache/pseudo_masks.arrow file; N: a folder of N parts; tagseg run refine --shard k/N runs one)
segment:
  labels: pseudo              # pseudo (cache/pseudo_masks.arrow) | gt (ground-truth masks: the oracle upper bound)
  val_fraction: 0.2           # share of dataset.train_split held out for validation (seeded hash of the id; never trained on)
  head_dim: 64                # context head channels (DeepLab v3+: 256)
  decoder: true               # DeepLab v3+ decoder: fuse the stride-4 backbone level before the classifier
  contrast: none              # auxiliary contrastive loss: none | pixel | reco | spml (methods.md 4-6)
  contrast_weight: 0.1        # weight of the contrastive loss (ContrastiveSeg 0.1 without memory)
  contrast_dim: 64            # projection head output channels (ContrastiveSeg/ReCo 256, SPML 64)
  pixel_memory: 5000          # contrast pixel: slots per class in each of its two queues (ContrastiveSeg 5000; 0 = contrast within the batch). Loss memory ~ 1024 anchors x 2 x slots x classes: MSRC-v2 at 5000 peaked at 12.2 GB RSS
  optimizer: adamw            # sgd (DeepLab: lr 0.007, momentum 0.9) | adamw
  lr: 0.002                   # base lr (backbone); poly decay, power 0.9
  head_lr_mult: 10            # lr multiplier of the new head (DeepLab: 10 on the classifier)
  weight_decay: 0.0001
  epochs: 12
  batch_size: 8
  crop: 96                    # training crop side in pixels (DeepLab 321-513)
  scale_range: [0.75, 1.25]   # random rescale of image + mask before the crop (DeepLab 0.5-2.0)
  jitter: 0.2                 # colour jitter strength (brightness/contrast/saturation)
  scales: [1.0]               # inference scales (DeepLab multi-scale test: 0.5-1.75)
  flip: true                  # inference: add the mirrored image at every scale
  crf:                        # inference: dense CRF on the network's probabilities (DeepLab's post-processing; SPML/RCA publish +CRF)
    iterations: 10            # mean-field iterations (0 = no CRF; MSRC-v2 val mIoU: pseudo-mask net 60.3 -> 63.6, oracle 73.8 -> 76.7)
    gaussian_sxy: 3           # smoothness kernel width in working-size pixels
    gaussian_compat: 3        # its Potts weight
    bilateral_sxy: 50         # appearance kernel width (refine.crf's, IRN's)
    bilateral_srgb: 5         # its colour width, 0-255 RGB
    bilateral_compat: 10      # its Potts weight
audit:
  rca_map: propagated         # contrast_cams.arrow column taken as the RCA labels: propagated (RCA + random walk) | cams (RCA alone)
  cam_threshold: 0.15         # with a background class: constant bg score for the CAM labels (IRN cam_eval_thres 0.15)
  random_walk_threshold: 0.25 # same for the random-walk labels (IRN sem_seg_bg_thres 0.25)
  rca_threshold: 0.25         # same for the RCA labels
  edge_quantile: 0.9          # a strong image edge = Sobel magnitude in the image's top 10%
  edge_floor: 16              # ... and above this (3x3 Sobel on 0-255 grey; a ~4-level step), so flat images have none
  edge_tolerance: 2           # mask outline pixels within this many px of a strong edge count as aligned
  large_area: 0.3             # tag consistency: a class covering >= this fraction ...
  low_confidence: 0.5         # ... with mean confidence below this is flagged large_low_confidence
  weights:                    # suspicion score = weighted mean of these terms (stages/audit/suspicion.ts)
    ignore: 1.0
    low_confidence: 1.0
    disagreement: 1.0
    empty_tags: 1.0
    fragmentation: 0.5        # lower: several real instances of a class also fragment a mask
    misalignment: 0.5         # lower: edges inside textured objects blur this term
    large_low_confidence: 0.5
  bad_miou: 0.5               # with ground truth: an image whose pseudo-mask mIoU is below this counts as bad (scores the ranking) ...
  bad_coverage: 0.5           # ... or one that labels (not ignore) less than this share of the ground truth
  top: 20                     # most suspicious images listed in metrics/audit.json (and scored against ground truth)
  thumb_size: 160             # report thumbnails: long side in pixels
  full_overlays: true         # report: the final mask over each original image at full size (img/full/)
`;

/** The defaults as a validated object (tests and `tagseg init`-like code start from these). */
export function defaultParams(): Params {
  return validateParams(YAML.parse(DEFAULT_PARAMS_YAML), 'DEFAULT_PARAMS_YAML');
}

// ---------------------------------------------------------------------------------------------
// Loading and validation

/**
 * Read, apply `overrides` (`a.b=value`, value parsed as YAML: `dataset.splits=[train,test]`) and
 * validate. Errors name the file (or `--set` for a bad override) and the dotted key.
 */
export async function loadParams(file = 'params.yaml', overrides: string[] = []): Promise<Params> {
  const label = displayPath(file);
  const text = await readText(file, label);
  const raw = parseYamlText(text, label);
  return applyAndValidate(raw, label, overrides);
}

/** Validate an already parsed params object; `source` names it in error messages. */
export function validateParams(raw: unknown, source = 'params.yaml', overrides: string[] = []): Params {
  return applyAndValidate(raw, source, overrides);
}

/** One parsed `--set key=value`. */
export interface Override {
  /** As given on the command line. */
  raw: string;
  key: string;
  path: string[];
  /** The value text after `=`. */
  text: string;
  value: unknown;
}

/**
 * Parse and check one override against the schema. The key must be a known dotted path.
 * Where the schema wants a string, a value YAML would read as a number/boolean (`2007`, `yes`)
 * is kept as its text: `--set dataset.train_split=2007` means the split named "2007".
 */
export function parseOverride(raw: string): Override {
  const eq = raw.indexOf('=');
  if (eq <= 0) {
    throw new TagsegError(`'${raw}' is not key=value`, { file: '--set', hint: 'e.g. --set ingest.size=256' });
  }
  const key = raw.slice(0, eq).trim();
  const text = raw.slice(eq + 1);
  const keyPath = key.split('.');
  if (keyPath.some((k) => k === '')) throw new TagsegError(`'${key}' is not a dotted key`, { file: '--set' });
  const leaf = schemaAt(paramsSchema, keyPath);
  if (!leaf) {
    const suggestion = suggestPath(keyPath);
    throw new TagsegError(`unknown key '${key}'${suggestion ? ` (did you mean '${suggestion}'?)` : ''}`, { file: '--set' });
  }
  let value: unknown;
  try {
    value = YAML.parse(text);
  } catch (err) {
    throw new TagsegError(`${key}: value '${text}' is not valid YAML: ${firstLine(messageOf(err))}`, { file: '--set' });
  }
  if (unwrap(leaf) instanceof z.ZodString && (typeof value === 'number' || typeof value === 'boolean')) value = text.trim();
  return { raw, key, path: keyPath, text, value };
}

function applyAndValidate(raw: unknown, source: string, overrideArgs: string[]): Params {
  const overrides = overrideArgs.map(parseOverride);
  let data = raw === null || raw === undefined ? raw : structuredClone(raw);
  for (const o of overrides) {
    if (!isPlainObject(data)) data = {};
    setIn(data as Record<string, unknown>, o.path, o.value);
  }
  const result = paramsSchema.safeParse(data);
  if (result.success) return result.data;
  // Unknown keys first: a typo is the usual root cause of the other complaints.
  const issues = [...result.error.issues].sort((a, b) => rank(a.code) - rank(b.code));
  // A typo `ingest.sise` also makes `ingest.size` missing: report the typo only.
  const suggested = new Set(
    issues.flatMap((i) => (i.code === 'unrecognized_keys' ? i.keys.map((k) => suggestPath([...i.path.map(String), k])) : [])),
  );
  const relevant = issues.filter((i) => !(getIn(data, i.path) === undefined && suggested.has(dotted(i.path))));
  const messages = relevant.map((issue) => {
    // Blame --set when the offending key lies inside a value that an override wrote.
    const full = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]!] : issue.path;
    const fromOverride = overrides.some((o) => startsWith(full, o.path));
    return { where: fromOverride ? '--set' : source, text: describeIssue(issue, data) };
  });
  const first = messages[0]!;
  const rest = messages.slice(1).map((m) => `${m.where}: ${m.text}`);
  throw new TagsegError(first.text + (rest.length ? `\n${rest.join('\n')}` : ''), { file: first.where });
}

const rank = (code: string) => (code === 'unrecognized_keys' ? 0 : 1);

type Issue = z.core.$ZodIssue;

function describeIssue(issue: Issue, data: unknown): string {
  const where = dotted(issue.path);
  const prefix = where ? `${where}: ` : '';
  const value = getIn(data, issue.path);
  if (value === undefined && issue.code !== 'unrecognized_keys') {
    const expected = issue.code === 'invalid_value' ? `one of ${issue.values.map(String).join(' | ')}` : article(issue.code === 'invalid_type' ? issue.expected : '');
    if (!where) return `empty file (expected ${expected})`;
    // A whole section missing is what a params.yaml from before a stage existed looks like.
    const fill = issue.path.length === 1 ? ` -- \`tagseg params --fill\` adds it with its defaults` : '';
    return `missing key '${where}' (expected ${expected})${fill}`;
  }
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys
        .map((k) => {
          const full = [...issue.path.map(String), k];
          const suggestion = suggestPath(full);
          return `unknown key '${dotted(full)}'${suggestion ? ` (did you mean '${suggestion}'?)` : ''}`;
        })
        .join('; ');
    case 'invalid_type': {
      return `${prefix}expected ${article(issue.expected)}, got ${describeValue(value)}`;
    }
    case 'invalid_value':
      return `${prefix}expected one of ${issue.values.map(String).join(' | ')}, got ${describeValue(value)}`;
    case 'too_small':
    case 'too_big': {
      const small = issue.code === 'too_small';
      const bound = small ? (issue as { minimum: number | bigint }).minimum : (issue as { maximum: number | bigint }).maximum;
      const op = small ? (issue.inclusive ? '>=' : '>') : issue.inclusive ? '<=' : '<';
      if (issue.origin === 'string') {
        return Number(bound) === 1 && small ? `${prefix}expected a non-empty string` : `${prefix}expected a string of length ${op} ${bound}`;
      }
      if (issue.origin === 'array') return `${prefix}expected a list of length ${op} ${bound}, got ${describeValue(value)}`;
      return `${prefix}expected a number ${op} ${bound}, got ${describeValue(value)}`;
    }
    default:
      return `${prefix}${issue.message}`;
  }
}

function article(expected: string): string {
  const names: Record<string, string> = {
    object: 'a mapping',
    array: 'a list',
    string: 'a string',
    number: 'a number',
    int: 'an integer',
    boolean: 'a boolean',
  };
  return names[expected] ?? (expected || 'a value');
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `a list ${flow(v)}`;
  if (typeof v === 'object') return `a mapping ${flow(v)}`;
  if (typeof v === 'string') return `string ${JSON.stringify(v)}`;
  return `${typeof v} ${String(v)}`;
}

// ---------------------------------------------------------------------------------------------
// Editing params.yaml in place

/**
 * Apply `overrides` to params.yaml and rewrite it atomically, keeping comments and layout: each
 * existing value is spliced in place (padding keeps aligned comments aligned); only a key that
 * does not exist yet makes the YAML library re-render the file. The result is validated before
 * anything is written, so a bad `--set` leaves params.yaml untouched. Returns the new params.
 */
export async function writeOverrides(file: string, overrides: string[]): Promise<Params> {
  const text = await applyOverridesToText(file, overrides);
  const written = validateParams(parseYamlText(text, displayPath(file)), displayPath(file));
  await writeFileAtomic(file, text);
  return written;
}

/** params.yaml's text with `overrides` spliced in (comments and layout kept); the file is not written. */
export async function applyOverridesToText(file: string, overrides: string[]): Promise<string> {
  const label = displayPath(file);
  let text = await readText(file, label);
  // Throws (naming --set or the file) before we touch anything.
  const expected = applyAndValidate(parseYamlText(text, label), label, overrides);
  for (const o of overrides.map(parseOverride)) text = spliceValue(text, o, label);
  const written = validateParams(parseYamlText(text, label), label);
  if (stableStringify(written) !== stableStringify(expected)) {
    // Defensive: the splice must mean exactly what the overrides mean.
    throw new TagsegError('internal error: editing params.yaml did not give the expected values', { file: label });
  }
  return text;
}

function spliceValue(text: string, o: Override, label: string): string {
  const doc = YAML.parseDocument(text);
  const node = doc.getIn(o.path, true);
  const rendered = renderInline(o.value);
  if ((isScalar(node) || isCollection(node)) && node.range && rendered !== undefined) {
    const [start, end] = node.range;
    // Keep a trailing comment in its column: eat or add spaces after the value.
    let after = text.slice(end);
    const delta = rendered.length - (end - start);
    const spaces = /^ +(?=#)/.exec(after)?.[0].length ?? 0;
    if (spaces > 0) {
      const newSpaces = Math.max(1, spaces - delta);
      after = ' '.repeat(newSpaces) + after.slice(spaces);
    }
    return text.slice(0, start) + rendered + after;
  }
  // New key (or a value that cannot be written inline): let the YAML library place it.
  doc.setIn(o.path, doc.createNode(o.value));
  if (doc.errors.length) throw new TagsegError(`cannot set ${o.key}: ${doc.errors[0]!.message}`, { file: label });
  return doc.toString();
}

/** One-line YAML for a value, or undefined when it needs several lines. */
function renderInline(value: unknown): string | undefined {
  const out = flow(value);
  return out.includes('\n') ? undefined : out;
}

function flow(value: unknown): string {
  return YAML.stringify(value, { collectionStyle: 'flow', flowCollectionPadding: false, lineWidth: 0 }).replace(/\n$/, '');
}

// ---------------------------------------------------------------------------------------------
// Access and hashing

/** Value at a dotted key (`ingest.size`, or a whole section `ingest`); unknown -> TagsegError. */
export function getParam(params: Params | Record<string, unknown>, key: string): unknown {
  const keyPath = key.split('.');
  const value = getIn(params, keyPath);
  if (value === undefined || key === '') {
    const suggestion = suggestIn(keyPath, params);
    throw new TagsegError(`unknown param '${key}'${suggestion ? ` (did you mean '${suggestion}'?)` : ''}`, { file: 'params.yaml' });
  }
  return value;
}

/**
 * Short stable hash (16 hex chars of sha256) of the values at `keys`. Independent of the order of
 * `keys` and of object key order in the values, so it only changes when a listed value changes.
 */
export function paramsHash(params: Params | Record<string, unknown>, keys: string[]): string {
  const picked: Record<string, unknown> = {};
  for (const k of [...new Set(keys)].sort()) picked[k] = getParam(params, k);
  return createHash('sha256').update(stableStringify(picked)).digest('hex').slice(0, 16);
}

/** JSON with object keys sorted at every level: equal values give equal strings. */
export function stableStringify(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (isPlainObject(v)) {
      const sorted: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) sorted[k] = v[k];
      return sorted;
    }
    return v;
  });
}

// ---------------------------------------------------------------------------------------------
// Small helpers shared with dvcfile.ts / dag.ts

/** The candidate closest to `word` by edit distance, if it is close enough to be a likely typo. */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = levenshtein(word, c);
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  const limit = Math.max(2, Math.floor(word.length / 3));
  return best !== undefined && bestD <= limit && bestD < word.length ? best : undefined;
}

function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}

/** Every dotted path the schema knows (sections and leaves). */
export function knownParamKeys(): string[] {
  const out: string[] = [];
  const walk = (schema: z.ZodType, prefix: string[]) => {
    const s = unwrap(schema);
    if (!(s instanceof z.ZodObject)) return;
    for (const [k, child] of Object.entries(s.shape as Record<string, z.ZodType>)) {
      out.push([...prefix, k].join('.'));
      walk(child, [...prefix, k]);
    }
  };
  walk(paramsSchema, []);
  return out;
}

/** Suggest a known dotted path for an unknown one: a sibling spelled alike, else the same leaf name elsewhere. */
function suggestPath(keyPath: string[]): string | undefined {
  const parent = keyPath.slice(0, -1);
  const last = keyPath[keyPath.length - 1]!;
  const parentSchema = schemaAt(paramsSchema, parent);
  const siblings = parentSchema && unwrap(parentSchema) instanceof z.ZodObject ? Object.keys((unwrap(parentSchema) as z.ZodObject).shape) : [];
  const near = closest(last, siblings);
  if (near) return [...parent, near].join('.');
  const all = knownParamKeys();
  const sameLeaf = all.filter((k) => k.split('.').pop() === last);
  if (sameLeaf.length === 1) return sameLeaf[0];
  return closest(keyPath.join('.'), all);
}

function suggestIn(keyPath: string[], data: unknown): string | undefined {
  const parent = keyPath.slice(0, -1);
  const container = parent.length ? getIn(data, parent) : data;
  if (!isPlainObject(container)) return undefined;
  const near = closest(keyPath[keyPath.length - 1]!, Object.keys(container));
  return near ? [...parent, near].join('.') : undefined;
}

function schemaAt(schema: z.ZodType, keyPath: string[]): z.ZodType | undefined {
  let cur: z.ZodType | undefined = schema;
  for (const k of keyPath) {
    const s: z.ZodType | undefined = cur ? unwrap(cur) : undefined;
    if (!(s instanceof z.ZodObject)) return undefined;
    cur = (s.shape as Record<string, z.ZodType>)[k];
    if (!cur || !Object.hasOwn(s.shape, k)) return undefined;
  }
  return cur;
}

/** Look through optional/default/nullable wrappers (later sections may use them). */
function unwrap(schema: z.ZodType): z.ZodType {
  let s = schema;
  while (s instanceof z.ZodOptional || s instanceof z.ZodDefault || s instanceof z.ZodNullable) {
    s = (s.def as unknown as { innerType: z.ZodType }).innerType;
  }
  return s;
}

function getIn(data: unknown, keyPath: readonly PropertyKey[]): unknown {
  let cur: unknown = data;
  for (const k of keyPath) {
    if (Array.isArray(cur) && typeof k === 'number') cur = cur[k];
    else if (isPlainObject(cur) && typeof k === 'string' && Object.hasOwn(cur, k)) cur = cur[k];
    else return undefined;
  }
  return cur;
}

export function setIn(data: Record<string, unknown>, keyPath: string[], value: unknown): void {
  let cur = data;
  for (const k of keyPath.slice(0, -1)) {
    if (!isPlainObject(cur[k])) cur[k] = {};
    cur = cur[k] as Record<string, unknown>;
  }
  cur[keyPath[keyPath.length - 1]!] = value;
}

function startsWith(full: readonly PropertyKey[], prefix: readonly PropertyKey[]): boolean {
  return prefix.length <= full.length && prefix.every((p, i) => String(p) === String(full[i]));
}

function dotted(keyPath: readonly PropertyKey[]): string {
  return keyPath.map((k, i) => (typeof k === 'number' ? `[${k}]` : `${i ? '.' : ''}${String(k)}`)).join('');
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

/** A path as the user would write it: relative to the cwd when inside it. */
function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), path.resolve(file));
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
}

async function readText(file: string, label: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new TagsegError('file not found', { file: label, hint: 'the defaults are DEFAULT_PARAMS_YAML in pipeline/params.ts' });
    }
    throw new TagsegError(`cannot read: ${messageOf(err)}`, { file: label, cause: err });
  }
}

function parseYamlText(text: string, label: string): unknown {
  const doc = YAML.parseDocument(text);
  if (doc.errors.length) throw new TagsegError(`invalid YAML: ${doc.errors[0]!.message}`, { file: label });
  return doc.toJS();
}
