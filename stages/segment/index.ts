/**
 * Stage `segment`: pseudo-masks (or ground truth) -> a segmentation network -> models/segment.
 *
 * 1. Split: the images of `dataset.train_split` minus a validation carve (labels.ts: seeded hash
 *    of the id < `segment.val_fraction`), identical in both label modes; never trained on. A caller
 *    may give the training and held-out ids instead (`split`: the CV protocol's folds, eval/cv.ts).
 * 2. Labels: `segment.labels: pseudo` takes cache/pseudo_masks.arrow (stage refine, original size,
 *    resized to the working size by nearest); `gt` takes images.arrow's ground-truth masks (the
 *    oracle, the upper bound weak labels are measured against). pseudo_masks.arrow stays a
 *    declared dep in both modes (io is static), but gt mode does not open it.
 * 3. Train (train.ts): backbone of models/cam + ContextHead (head.ts, net.ts), cross-entropy
 *    ignoring 255 (+ the optional contrastive loss of `segment.contrast`), checkpoint per epoch in
 *    the checkpoint store, .tagseg/checkpoints/segment/ (an unfinished run is resumed when its key,
 *    `segmentTrainHash` + the code, matches) -> models/segment (config.json, classes.json,
 *    weights/, val_ids.txt), self-contained for `tagseg predict`; then the store is emptied.
 * 4. Validate: predictions at the working size with `segment.scales` x flip and the dense CRF of
 *    `segment.crf` (infer.ts), probabilities upsampled bilinearly to the original size, scored
 *    against the masks at mask_path (original resolution) -> mIoU, pixel accuracy, per-class IoU. In pseudo mode the pseudo-masks of the
 *    same validation images are scored too (does the network beat its own labels?).
 * 5. metrics/segment.json, with `chain`: the rows of metrics/refine.json's `table` (CAM -> random
 *    walk -> RCA -> pseudo-masks, scored by refine on the train split) + pseudo-masks and the
 *    segmentation network on the validation carve, in one table.
 */
import { artifact } from '../../pipeline/artifacts.js';
import { ownCodeDeps } from '../../pipeline/code_closure.js';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { readMask } from '../../data/decode.js';
import { resolveDatasetPath } from '../../data/manifest.js';
import { DECISIONS_FILE, readDecisions } from '../../data/review.js';
import { ConfusionMatrix, segmentationScores } from '../../eval/metrics.js';
import { finishTraining, trainingHash, trainingStore } from '../../nn/loop.js';
import { type DenseCrfOptions, crfFromKeys } from '../../ops/crf.js';
import { RowReader, tableDataset } from '../../nn/dataset.js';
import { TableReader, hashTable, readAll, readInfo } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError, messageOf } from '../../pipeline/errors.js';
import { exists, hashFile } from '../../pipeline/fsutil.js';
import { log, progress } from '../../pipeline/log.js';
import { classPlotRows, epochPlotRows, iouFigures, writeJsonMetrics } from '../../pipeline/metrics_file.js';
import type { Params } from '../params.js';
import type { Stage } from '../../pipeline/stage.js';
import { segmentBatch } from './infer.js';
import { carveVal, explicitSplit, idsKey, labelledFraction, labelsAtWorkingSize } from './labels.js';
import { listCorrections } from '../../data/review.js';
import { type ReviewPlan, ignoreClassPixels, planReview } from './review.js';
import { type SegNet, saveSegModel, segNetFromCam } from './net.js';
import { type SegAux, createSegAux } from './contrast.js';
import { type SegTrainImage, type SegTrainResult, trainSegNet } from './train.js';

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections } from './params.js';

const PARAMS = ['seed', 'dataset.train_split', 'dataset.corrections', 'segment'];
export const SEGMENT_OUTPUTS = {
  model: artifact('segmentModel'), metrics: artifact('segmentMetrics'), classesPlot: artifact('segmentClassesPlot'), lossPlot: artifact('segmentLossPlot'),
} as const;
const INPUTS = {
  dataset: artifact('dataset'),
  images: artifact('images'),
  pseudo: artifact('pseudoMasks'),
  camModel: artifact('camModel'),
  refineMetrics: artifact('refineMetrics'),
  decisions: DECISIONS_FILE,
} as const;
/** segment keys that do not change the trained weights (inference only). */
const NOT_IN_TRAIN_HASH = ['scales', 'flip', 'crf'];
/** Images per inference batch during validation (same-size images only). */
const VAL_BATCH = 4;

export function segmentTrainHash(p: Params, dataHash: string): string {
  return trainingHash(p, 'segment', NOT_IN_TRAIN_HASH, dataHash);
}

export const stage: Stage = {
  name: 'segment',
  summary: 'train the segmentation network on the pseudo-masks (or ground truth), score it on a validation carve -> models/segment',
  io: (p) => ({
    // review: rejected images leave training, corrected masks replace pseudo-masks (review.ts)
    reads: [INPUTS.dataset, INPUTS.images, INPUTS.pseudo, INPUTS.camModel, INPUTS.refineMetrics, INPUTS.decisions, ...(p.dataset.corrections ? [p.dataset.corrections] : [])],
    writes: [SEGMENT_OUTPUTS.model],
    metrics: [SEGMENT_OUTPUTS.metrics],
    plots: [SEGMENT_OUTPUTS.classesPlot, SEGMENT_OUTPUTS.lossPlot],
    params: PARAMS,
  }),
  async run(ctx) {
    const r = await runSegment({ params: ctx.params, path: ctx.path });
    await writeJsonMetrics(ctx.path(SEGMENT_OUTPUTS.metrics), segmentMetrics(r));
    await writeJsonMetrics(ctx.path(SEGMENT_OUTPUTS.classesPlot), classPlotRows({ val: iouFigures(r.val.iou), pseudo_val: iouFigures(r.pseudo_val?.iou) }));
    await writeJsonMetrics(ctx.path(SEGMENT_OUTPUTS.lossPlot), epochPlotRows({ loss: r.training.losses }));
    if (!ctx.json) process.stderr.write(`${formatSegment(r)}\n`);
    return r as unknown as Record<string, unknown>;
  },
};

export interface SegScores {
  /** Full coverage: a pseudo-mask's ignore pixels count as wrong (eval/metrics.ts). */
  miou: number | null;
  /** Over the labelled pixels only. */
  miou_labelled: number | null;
  pixel_accuracy: number | null;
  /** Labelled fraction of the valid pixels (1 for a network; < 1 for pseudo-masks with 255). */
  coverage: number | null;
  images: number;
  iou: Record<string, number | null>;
}

export interface ChainRow {
  step: string;
  miou: number | null;
  split: string;
  images?: number;
}

export interface SegmentRunResult {
  labels: 'pseudo' | 'gt';
  /** pseudo mode: review/decisions.csv rows read, training images rejected / with a corrected mask, classes ignored, corrections not used (not in the training carve). */
  review?: { decisions: number } & ReviewPlan['counts'];
  contrast: string;
  epochs: number;
  trainImages: number;
  valImages: number;
  /** Fraction of training-label pixels that carry a class (not 255). */
  labelledFraction: number;
  val: SegScores;
  /** pseudo mode: the pseudo-masks of the validation images, scored the same way. */
  pseudo_val?: SegScores;
  chain: ChainRow[];
  training: SegTrainResult;
  seconds: number;
  peakRssMiB: number;
}

export interface RunSegmentOptions {
  params: Params;
  path(rel: string): string;
  /** Tests: stop training after this many epochs in this run (simulates a kill; no model, no scores). */
  stopAfter?: number;
  /** Explicit training and held-out ids of the train split (the CV protocol's folds, eval/cv.ts) instead of the `val_fraction` carve. */
  split?: { train: readonly string[]; val: readonly string[] };
}

interface DatasetRow {
  split: string;
  maskPath: string | null;
  origWidth: number;
  origHeight: number;
}

export async function runSegment(o: RunSegmentOptions): Promise<SegmentRunResult> {
  const t0 = performance.now();
  await initBackend();
  const p = o.params;
  const s = p.segment;
  const imagesFile = o.path(INPUTS.images);
  const info = await readInfo(imagesFile);
  const classes = info.meta.classes;
  const bgRaw = info.meta.extra?.background;
  const background = typeof bgRaw === 'number' ? bgRaw : null;
  const workingSize = typeof info.meta.extra?.working_size === 'number' ? info.meta.extra.working_size : 0;
  const dataset = await readDataset(o.path(INPUTS.dataset), info.numRows, o.path(p.dataset.root));

  // 1. train split ids in images.arrow order, the validation carve
  const trainIds: string[] = [];
  for (const [id, d] of dataset) if (d.split === p.dataset.train_split) trainIds.push(id);
  if (trainIds.length === 0) throw new TagsegError(`no image of split '${p.dataset.train_split}'`, { file: o.path(INPUTS.dataset), hint: 'check dataset.train_split' });
  const carve = o.split ? explicitSplit(trainIds, o.split, p.dataset.train_split) : carveVal(trainIds, s.val_fraction, p.seed);
  const valSet = new Set(carve.val);
  const review = s.labels === 'pseudo' ? await reviewPlan(o, carve.train, classes, dataset) : null;
  const trainSet = new Set(review ? review.plan.train : carve.train);

  // 2. training labels at the working size; validation pixels kept for scoring
  const pseudo = s.labels === 'pseudo' ? await readPseudoMasks(o.path(INPUTS.pseudo), classes, trainSet, valSet) : null;
  // training pixels are streamed from images.arrow by row position (nn/dataset.ts); labels stay here
  const train: Array<Omit<SegTrainImage, 'pixels'> & { position: number }> = [];
  const val: { id: string; pixels: Uint8Array; height: number; width: number }[] = [];
  let labelled = 0;
  {
    const reader = await TableReader.open(imagesFile, { stage: 'ingest' });
    let position = 0;
    try {
      for await (const row of reader.rows()) {
        const at = position++;
        const id = row.id as string;
        const H = row.height as number;
        const W = row.width as number;
        if (valSet.has(id)) val.push({ id, pixels: row.pixels as Uint8Array, height: H, width: W });
        if (!trainSet.has(id)) continue;
        let labels: Uint8Array;
        if (pseudo) {
          const fixed = review?.corrections.get(id);
          const d = dataset.get(id)!;
          const m = fixed ? await readMask(fixed, d.origWidth, d.origHeight).then((c) => ({ mask: c.data, height: c.height, width: c.width })) : pseudo.train.get(id);
          if (!m) throw new TagsegError(`image '${id}' of the train split has no pseudo-mask`, { file: o.path(INPUTS.pseudo), hint: 'rerun `tagseg run refine`' });
          labels = labelsAtWorkingSize(m.mask, m.height, m.width, H, W, classes.length, { file: fixed ?? o.path(INPUTS.pseudo), id });
          ignoreClassPixels(labels, review?.plan.ignoreClasses.get(id) ?? []);
        } else {
          if (!row.mask) throw new TagsegError(`image '${id}' of the train split has no ground-truth mask; segment.labels: gt needs one for every training image`, { file: imagesFile, hint: 'use segment.labels: pseudo' });
          labels = labelsAtWorkingSize(row.mask as Uint8Array, H, W, H, W, classes.length, { file: imagesFile, id });
        }
        labelled += labelledFraction(labels);
        train.push({ id, height: H, width: W, labels, tags: row.tags as number[], position: at });
      }
    } finally {
      await reader.close();
    }
  }

  // 3. training
  const camWeights = path.join(o.path(INPUTS.camModel), 'weights', 'weights.bin');
  const dataHash = [await hashFile(imagesFile), await hashFile(camWeights), pseudo ? await hashTable(o.path(INPUTS.pseudo)) : 'gt', ...(review ? [review.hash] : [])].join(':');
  const hash = segmentTrainHash(p, o.split ? `${dataHash}:${idsKey(carve.train)}` : dataHash);
  const store = await trainingStore('segment', await ownCodeDeps(import.meta.url), hash, o.path);
  const modelDir = o.path(SEGMENT_OUTPUTS.model);
  const net = await segNetFromCam(o.path(INPUTS.camModel), {
    classes, background, dim: s.head_dim, decoder: s.decoder, workingSize, scales: s.scales, flip: s.flip, crf: inferCrf(s), seed: p.seed,
  });
  let aux: SegAux | undefined;
  try {
    aux = createSegAux(s, { classes: classes.length, background, inChannels: s.head_dim, seed: p.seed, startIter: Math.ceil(train.length / s.batch_size) });
    const rowReader = await RowReader.open(imagesFile, { stage: 'ingest' });
    const images = tableDataset<SegTrainImage>([rowReader], train.map((t) => t.position), ([row], i) => ({ ...train[i], pixels: row.pixels as Uint8Array }));
    const training = await trainSegNet({ net, images, segment: s, seed: p.seed, checkpointDir: store.checkpointDir, hash: store.key, aux, stopAfter: o.stopAfter })
      .finally(() => rowReader.close());
    const trainImages = train.length;
    train.length = 0;
    net.config.labels = s.labels;
    net.config.paramsHash = hash;
    net.config.epochs = training.epochs;
    const base = {
      labels: s.labels, contrast: s.contrast, epochs: training.epochs, trainImages, valImages: val.length,
      labelledFraction: trainImages ? labelled / trainImages : 0,
      ...(review ? { review: { decisions: review.decisions, ...review.plan.counts } } : {}),
    };
    if (training.epochs < s.epochs) {
      const empty: SegScores = { miou: null, miou_labelled: null, pixel_accuracy: null, coverage: null, images: 0, iou: {} };
      return { ...base, val: empty, chain: [], training, seconds: (performance.now() - t0) / 1000, peakRssMiB: peakRss() };
    }
    await saveSegModel(modelDir, net, { 'val_ids.txt': `${carve.val.join('\n')}\n` });
    await finishTraining(store.checkpointDir);

    // 4. validation at the original resolution
    const { scores, pseudoScores } = await validate(net, val, dataset, classes, s, pseudo?.val ?? null);
    const chain = [
      ...(await refineChain(o.path(INPUTS.refineMetrics))),
      ...(pseudoScores ? [{ step: 'pseudo_masks', miou: pseudoScores.miou, split: 'val', images: pseudoScores.images }] : []),
      { step: s.labels === 'gt' ? 'segmentation (gt oracle)' : 'segmentation', miou: scores.miou, split: 'val', images: scores.images },
    ];
    return {
      ...base, val: scores, ...(pseudoScores ? { pseudo_val: pseudoScores } : {}), chain, training,
      seconds: (performance.now() - t0) / 1000, peakRssMiB: peakRss(),
    };
  } finally {
    net.dispose();
    aux?.dispose();
  }
}

/** segment.crf as inference options: null when its iterations are 0. */
export function inferCrf(s: Params['segment']): DenseCrfOptions | null {
  return s.crf.iterations > 0 ? crfFromKeys(s.crf) : null;
}

const peakRss = () => Math.round(process.resourceUsage().maxRSS / 1024);

/** The review's effect on the training ids (review.ts), with a hash of what it read for the resume check. */
async function reviewPlan(o: RunSegmentOptions, trainIds: string[], classes: string[], dataset: Map<string, DatasetRow>) {
  const file = o.path(INPUTS.decisions);
  const decisions = await readDecisions(file);
  const dir = o.params.dataset.corrections;
  const found = dir ? await listCorrections(o.path(dir), new Set(dataset.keys())) : new Map<string, string>();
  if (found === null) log.warn(`segment: corrections folder ${dir} not found; no corrected masks used`);
  const corrections = found ?? new Map<string, string>();
  const plan = planReview(trainIds, decisions, new Set(corrections.keys()), classes, file);
  if (plan.counts.unused_corrections) log.warn(`segment: ${plan.counts.unused_corrections} corrected masks are not of training images (validation carve or other splits) and are not used`);
  const used = [...plan.corrected].sort();
  // What changes the training data, not the file: an `accept` or a note keeps a resumable checkpoint.
  const fixes = await Promise.all(used.map(async (id) => [id, await hashFile(corrections.get(id)!)]));
  const hash = createHash('sha256').update(JSON.stringify({ train: plan.train, ignore: [...plan.ignoreClasses].sort(), fixes })).digest('hex');
  return { plan, corrections: new Map(used.map((id) => [id, corrections.get(id)!])), decisions: decisions.length, hash };
}

/** dataset.arrow's rows by id, mask paths resolved against `root` (dataset.root). */
async function readDataset(file: string, expectRows: number, root: string): Promise<Map<string, DatasetRow>> {
  const rows = await readAll(file, { stage: 'ingest' });
  if (rows.length !== expectRows) throw new TagsegError(`${INPUTS.dataset} and ${INPUTS.images} have different row counts`, { file, hint: 'rerun `tagseg run ingest`' });
  return new Map(rows.map((r) => [r.id as string, {
    split: r.split as string, maskPath: r.mask_path ? resolveDatasetPath(root, r.mask_path as string) : null, origWidth: r.orig_width as number, origHeight: r.orig_height as number,
  }]));
}

interface PseudoMask { mask: Uint8Array; height: number; width: number }

/** The pseudo-masks of the training and validation images (original size), checked against the classes. */
async function readPseudoMasks(file: string, classes: string[], train: Set<string>, val: Set<string>): Promise<{ train: Map<string, PseudoMask>; val: Map<string, PseudoMask> }> {
  const reader = await TableReader.open(file, { stage: 'refine' });
  const out = { train: new Map<string, PseudoMask>(), val: new Map<string, PseudoMask>() };
  try {
    if (JSON.stringify(reader.info.meta.classes) !== JSON.stringify(classes)) {
      throw new TagsegError('pseudo_masks.arrow has another class list than images.arrow', { file, hint: 'rerun the pipeline from ingest' });
    }
    for await (const row of reader.rows()) {
      const id = row.id as string;
      const target = train.has(id) ? out.train : val.has(id) ? out.val : null;
      if (!target) continue;
      const m: PseudoMask = { mask: row.mask as Uint8Array, height: row.height as number, width: row.width as number };
      if (m.mask.length !== m.height * m.width) throw new TagsegError(`row '${id}': mask has ${m.mask.length} values, expected ${m.height} x ${m.width}`, { file });
      target.set(id, m);
    }
  } finally {
    await reader.close();
  }
  return out;
}

function scoresOf(cm: ConfusionMatrix, classes: readonly string[], images: number): SegScores {
  const r = segmentationScores(cm);
  const round = (v: number | null) => (v === null ? null : Math.round(v * 1e4) / 1e4);
  return {
    miou: round(r.fullMiou), miou_labelled: round(r.miou), pixel_accuracy: round(r.fullPixelAccuracy), coverage: round(r.coverage), images,
    iou: Object.fromEntries(classes.map((c, i) => [c, round(r.fullIou[i])])),
  };
}

async function validate(
  net: SegNet, val: { id: string; pixels: Uint8Array; height: number; width: number }[], dataset: Map<string, DatasetRow>,
  classes: string[], s: Params['segment'], pseudoVal: Map<string, PseudoMask> | null,
): Promise<{ scores: SegScores; pseudoScores: SegScores | null }> {
  const cm = new ConfusionMatrix(classes.length);
  const pcm = pseudoVal ? new ConfusionMatrix(classes.length) : null;
  const scored = val.filter((v) => dataset.get(v.id)?.maskPath);
  if (scored.length < val.length) log.warn(`segment: ${val.length - scored.length} validation images have no ground-truth mask and are not scored`);
  const bar = progress('segment validation', scored.length);
  let pseudoImages = 0;
  const crf = inferCrf(s);
  // Consecutive images of one working and original size go through the network together.
  for (let i = 0; i < scored.length;) {
    const first = scored[i];
    const d0 = dataset.get(first.id)!;
    const batch = [first];
    while (batch.length < VAL_BATCH && i + batch.length < scored.length) {
      const nx = scored[i + batch.length];
      const d = dataset.get(nx.id)!;
      if (nx.height !== first.height || nx.width !== first.width || d.origHeight !== d0.origHeight || d.origWidth !== d0.origWidth) break;
      batch.push(nx);
    }
    const preds = await segmentBatch(net, batch.map((b) => b.pixels), first.height, first.width, [d0.origHeight, d0.origWidth], { scales: s.scales, flip: s.flip, crf });
    for (let k = 0; k < batch.length; k++) {
      const d = dataset.get(batch[k].id)!;
      const gt = await readMask(d.maskPath!, d.origWidth, d.origHeight);
      cm.add(preds[k], gt.data);
      const pm = pseudoVal?.get(batch[k].id);
      if (pcm && pm) {
        if (pm.height !== gt.height || pm.width !== gt.width) {
          throw new TagsegError(`pseudo-mask of '${batch[k].id}' is ${pm.width}x${pm.height}, its mask ${gt.width}x${gt.height}`, { file: INPUTS.pseudo });
        }
        pcm.add(pm.mask, gt.data);
        pseudoImages++;
      }
      bar.tick();
    }
    i += batch.length;
  }
  bar.stop();
  return { scores: scoresOf(cm, classes, scored.length), pseudoScores: pcm ? scoresOf(pcm, classes, pseudoImages) : null };
}

/**
 * The rows of metrics/refine.json's `table` (step -> mIoU on the train split). Accepts the table
 * as { step: { miou } | number } or [{ step | name, miou }]. A missing file gives no rows and a
 * warning (dvc.yaml makes the refine stage run first, so this happens only in hand-run tests).
 */
export async function refineChain(file: string): Promise<ChainRow[]> {
  if (!(await exists(file))) {
    log.warn(`segment: ${file} not found; the chain table has no CAM / random walk / RCA / pseudo-mask rows`);
    return [];
  }
  let json: { table?: unknown; split?: unknown };
  try {
    json = JSON.parse(await fs.readFile(file, 'utf8')) as typeof json;
  } catch (err) {
    throw new TagsegError(`cannot read the refine metrics: ${messageOf(err)}`, { file, hint: 'rerun `tagseg run refine`' });
  }
  const split = typeof json.split === 'string' ? json.split : 'train';
  const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const rowOf = (step: string, v: unknown): ChainRow => {
    if (v !== null && typeof v === 'object') {
      const r = v as Record<string, unknown>;
      return { step, miou: num(r.miou), split: typeof r.split === 'string' ? r.split : split, ...(typeof r.images === 'number' ? { images: r.images } : {}) };
    }
    return { step, miou: num(v), split };
  };
  const t = json.table;
  if (Array.isArray(t)) {
    return t.map((r: unknown, i) => {
      const o = (r ?? {}) as Record<string, unknown>;
      const step = [o.step, o.name, o.stage].find((x): x is string => typeof x === 'string') ?? `row ${i}`;
      return rowOf(step, o);
    });
  }
  if (t !== null && typeof t === 'object') return Object.entries(t as Record<string, unknown>).map(([k, v]) => rowOf(k, v));
  throw new TagsegError("has no 'table' field (the CAM -> pseudo-mask chain)", { file, hint: 'rerun `tagseg run refine`' });
}

/**
 * metrics/segment.json: headline figures only (the chain as step -> mIoU, validation mIoU with its
 * coverage). Per-class IoU: plots/segment_classes.json; losses: plots/segment_loss.json; timings: the run log.
 */
export function segmentMetrics(r: SegmentRunResult): Record<string, unknown> {
  const head = ({ iou: _iou, ...s }: SegScores) => s;
  // A step can appear twice (pseudo_masks on the train split from refine, on val here): the second gets its split.
  const chain: Record<string, Omit<ChainRow, 'step'>> = {};
  for (const { step, ...row } of r.chain) chain[step in chain ? `${step}_${row.split}` : step] = row;
  return {
    labels: r.labels, contrast: r.contrast, epochs: r.epochs, trainImages: r.trainImages, valImages: r.valImages, labelledFraction: r.labelledFraction,
    val: head(r.val),
    ...(r.pseudo_val ? { pseudo_val: head(r.pseudo_val) } : {}),
    chain,
  };
}

export function formatSegment(r: SegmentRunResult): string {
  const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : (100 * v).toFixed(1));
  const width = Math.max(12, ...r.chain.map((c) => c.step.length));
  return [
    `segment: ${r.labels === 'gt' ? 'ground-truth masks (oracle)' : 'pseudo-masks'}${r.contrast !== 'none' ? ` + ${r.contrast} contrast` : ''}, ${r.epochs} epochs (resumed from ${r.training.resumedFrom}) on ${r.trainImages} images (${pct(r.labelledFraction)}% of pixels labelled), final loss ${r.training.losses.at(-1)?.toFixed(4) ?? '-'}`,
    ...(r.review && (r.review.rejected || r.review.corrected || r.review.rejected_classes) ? [`review: ${r.review.rejected} rejected images left out, ${r.review.corrected} corrected masks used, ${r.review.rejected_classes} rejected classes ignored`] : []),
    `validation (${r.valImages} images): mIoU ${pct(r.val.miou)}, pixel accuracy ${pct(r.val.pixel_accuracy)}${r.pseudo_val ? `; its pseudo-masks: mIoU ${pct(r.pseudo_val.miou)} at ${pct(r.pseudo_val.coverage)}% coverage` : ''}`,
    `${'step'.padEnd(width)}  split  mIoU`,
    ...r.chain.map((c) => `${c.step.padEnd(width)}  ${c.split.padEnd(5)}  ${pct(c.miou).padStart(5)}`),
    `${r.training.imagesPerSecond.toFixed(1)} train images/s, ${r.seconds.toFixed(1)} s, peak RSS ${r.peakRssMiB} MiB`,
  ].join('\n');
}
