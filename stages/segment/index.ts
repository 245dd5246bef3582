/**
 * Stage `segment`: pseudo-masks (or ground truth) -> a segmentation network -> models/segment.
 *
 * 1. Split: the images of `dataset.train_split` minus a validation carve (labels.ts: seeded hash
 *    of the id < `segment.val_fraction`), identical in both label modes; never trained on. A caller
 *    may give the training and held-out ids instead (`split`: the CV protocol's folds, cli/cv.ts).
 * 2. Labels: `segment.labels: pseudo` takes cache/pseudo_masks.arrow (stage refine, original size,
 *    resized to the working size by nearest); `gt` takes images.arrow's ground-truth masks (the
 *    oracle, the upper bound weak labels are measured against). pseudo_masks.arrow stays a
 *    declared dep in both modes (io is static), but gt mode does not open it. Nothing holds the
 *    split (data.ts): images and labels are read by row position, step by step (issue 26).
 * 3. Train (train.ts): backbone of models/cam + the head of `segment.head` (nn/seg_heads, net.ts), cross-entropy
 *    ignoring 255 (+ the optional contrastive loss of `segment.contrast`), checkpoint per epoch in
 *    the checkpoint store, .tagseg/checkpoints/segment/ (an unfinished run is resumed when its key,
 *    `segmentTrainHash` + the code, matches) -> models/segment (config.json, classes.json,
 *    weights/, val_ids.txt), self-contained for `tagseg predict`; then the store is emptied. The
 *    wiring is the train stages' (nn/stage_training.ts trainAndSave); the head is `segment.head`'s.
 * 4. Validate (validate.ts, batch by batch): predictions at the working size with `segment.scales` x flip and the dense CRF of
 *    `segment.crf` (infer.ts), probabilities upsampled bilinearly to the original size, scored
 *    against the masks at mask_path (original resolution) -> mIoU, pixel accuracy, per-class IoU. In pseudo mode the pseudo-masks of the
 *    same validation images are scored too (does the network beat its own labels?).
 * 5. metrics/segment.json, with `chain`: the rows of metrics/refine.json's `table` (CAM -> random
 *    walk -> RCA -> pseudo-masks, scored by refine on the train split) + pseudo-masks and the
 *    segmentation network on the validation carve, in one table.
 */
import { artifact } from '../../pipeline/artifacts.js';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { resolveDatasetPath } from '../../data/manifest.js';
import { DECISIONS_FILE, readDecisions } from '../../data/review.js';
import { loadCamModel } from '../../nn/cam_net.js';
import { type Dataset, RowReader } from '../../nn/dataset.js';
import { loadTrainedModel, sectionKeys, sectionTrainHash, trainAndSave } from '../../nn/stage_training.js';
import { trainingStore } from '../../nn/loop.js';
import { storeOf } from '../../nn/train_store.js';
import { ownCodeDeps } from '../../pipeline/code_closure.js';
import { hashTable, readAll, readInfo } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError, messageOf } from '../../pipeline/errors.js';
import { exists, hashFile } from '../../pipeline/fsutil.js';
import { log } from '../../pipeline/log.js';
import { classPlotRows, epochPlotRows, iouFigures, writeJsonMetrics } from '../../pipeline/metrics_file.js';
import type { Params } from '../params.js';
import type { Stage } from '../../pipeline/stage.js';
import { type ImageRef, type LabelContext, type StreamReaders, type TrainRef, indexImages, joinPseudo, meanLabelledFraction, pseudoPositions, trainDataset } from './data.js';
import { carveVal, explicitSplit, idsKey } from './labels.js';
import { listCorrections } from '../../data/review.js';
import { type ReviewPlan, planReview } from './review.js';
import { type SegNet, saveSegModel, segNetOnCam } from './net.js';
import { createSegAux } from './contrast.js';
import { segmentKeyed, segmentParams, selfTrainRounds } from './params.js';
import { earlierRounds, roundsDir } from './self_train.js';
import { type SegTrainImage, type SegTrainResult, trainSegNet } from './train.js';
import { type SegScores, inferCrf, validate } from './validate.js';

export { type SegScores, inferCrf } from './validate.js';

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
/** segment keys that do not change the trained weights (inference only); every other key is in the training hash. */
const SEGMENT_KEYS = sectionKeys('segment', Object.keys(segmentParams.shape), ['scales', 'flip', 'crf']);

export function segmentTrainHash(p: Params, dataHash: string): string {
  const keyed = segmentKeyed(p.segment);
  return sectionTrainHash(p, SEGMENT_KEYS, dataHash, Object.keys(p.segment).filter((k) => !(k in keyed)));
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
  /** Self-training rounds before the last (segment.self_train). */
  selfTrain: number;
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
  /** Explicit training and held-out ids of the train split (the CV protocol's folds, cli/cv.ts) instead of the `val_fraction` carve. */
  split?: { train: readonly string[]; val: readonly string[] };
}

interface DatasetRow {
  split: string;
  maskPath: string | null;
  origWidth: number;
  origHeight: number;
}

/** What the stage reads before choosing images: images.arrow's metadata and dataset.arrow's rows. */
interface Inputs {
  imagesFile: string;
  classes: string[];
  background: number | null;
  workingSize: number;
  dataset: Map<string, DatasetRow>;
}

/** The images of a run: training refs (review applied, labels' rows joined) and validation refs. */
interface Selection {
  carve: { train: string[]; val: string[] };
  review: Awaited<ReturnType<typeof reviewPlan>> | null;
  train: TrainRef[];
  val: ImageRef[];
}

/** The stage (also the CV protocol's trainer, cli/cv.ts): choose the images, open their tables once, train and score. */
export async function runSegment(o: RunSegmentOptions): Promise<SegmentRunResult> {
  const t0 = performance.now();
  await initBackend();
  const inputs = await readInputs(o);
  const sel = await selectImages(o, inputs);
  // training and validation read their rows by position through these, never the whole split
  const images = await RowReader.open(inputs.imagesFile, { stage: 'ingest' });
  let pseudo: RowReader | null = null;
  try {
    if (o.params.segment.labels === 'pseudo') pseudo = await RowReader.open(o.path(INPUTS.pseudo), { stage: 'refine' });
    return await trainAndScore(o, inputs, sel, { images, pseudo }, t0);
  } finally {
    await images.close();
    await pseudo?.close();
  }
}

/** images.arrow's classes and sizes, dataset.arrow's rows: everything later steps look up by id. */
async function readInputs(o: RunSegmentOptions): Promise<Inputs> {
  const imagesFile = o.path(INPUTS.images);
  const info = await readInfo(imagesFile);
  const bgRaw = info.meta.extra?.background;
  return {
    imagesFile, classes: info.meta.classes,
    background: typeof bgRaw === 'number' ? bgRaw : null,
    workingSize: typeof info.meta.extra?.working_size === 'number' ? info.meta.extra.working_size : 0,
    dataset: await readDataset(o.path(INPUTS.dataset), info.numRows, o.path(o.params.dataset.root)),
  };
}

/** Steps 1-2: the train split's carve (or the caller's split), the review, and each image's rows (data.ts). */
async function selectImages(o: RunSegmentOptions, inputs: Inputs): Promise<Selection> {
  const p = o.params;
  const trainIds: string[] = [];
  for (const [id, d] of inputs.dataset) if (d.split === p.dataset.train_split) trainIds.push(id);
  if (trainIds.length === 0) throw new TagsegError(`no image of split '${p.dataset.train_split}'`, { file: o.path(INPUTS.dataset), hint: 'check dataset.train_split' });
  const carve = o.split ? explicitSplit(trainIds, o.split, p.dataset.train_split) : carveVal(trainIds, p.segment.val_fraction, p.seed);
  const review = p.segment.labels === 'pseudo' ? await reviewPlan(o, carve.train, inputs.classes, inputs.dataset) : null;
  const trainSet = new Set(review ? review.plan.train : carve.train);
  const refs = await indexImages(inputs.imagesFile, trainSet, new Set(carve.val));
  const train: TrainRef[] = refs.train.map((t) => ({
    ...t, correction: review?.corrections.get(t.id) ?? null, ignore: review?.plan.ignoreClasses.get(t.id) ?? [],
  }));
  if (p.segment.labels === 'pseudo') {
    const file = o.path(INPUTS.pseudo);
    joinPseudo(train, refs.val, await pseudoPositions(file, inputs.classes, new Set([...trainSet, ...carve.val])), file);
  }
  return { carve, review, train, val: refs.val };
}

/** Steps 3-5: the labelled fraction, training (self-training rounds first) and saving (nn/stage_training.ts), validation; a run stopped early returns no scores. */
async function trainAndScore(o: RunSegmentOptions, inputs: Inputs, sel: Selection, readers: StreamReaders, t0: number): Promise<SegmentRunResult> {
  const s = o.params.segment;
  const ctx: LabelContext = {
    labels: s.labels, numClasses: inputs.classes.length, imagesFile: inputs.imagesFile, pseudoFile: o.path(INPUTS.pseudo),
    origSize: (id) => ({ width: inputs.dataset.get(id)!.origWidth, height: inputs.dataset.get(id)!.origHeight }),
  };
  const labelled = await meanLabelledFraction(sel.train, readers, ctx);
  let scores: Pick<SegmentRunResult, 'val' | 'pseudo_val' | 'chain'> = { val: { miou: null, miou_labelled: null, pixel_accuracy: null, coverage: null, images: 0, iou: {} }, chain: [] };
  const hash = await trainHash(o, inputs, sel);
  const rounds = await earlierRounds({
    rounds: selfTrainRounds(s), store: async () => trainingStore('segment', await ownCodeDeps(import.meta.url), hash, o.path), refs: sel.train, readers, ctx,
    segment: s, background: inputs.background, build: () => buildNet(o, inputs), train: (net, images, store) => trainNet(o, inputs, net, images, store),
  });
  let training: SegTrainResult;
  try {
    training = rounds.stopped ? rounds.rounds.at(-1)! : await trainAndSave({
      module: import.meta.url,
      stage: 'segment', hash, epochs: s.epochs, model: SEGMENT_OUTPUTS.model, path: o.path,
      build: () => buildNet(o, inputs),
      // the last round: on the pseudo-masks, or on the labels of the round before it
      train: (net, store) => trainNet(o, inputs, net, trainDataset(rounds.refs, { images: readers.images, pseudo: rounds.labels ?? readers.pseudo }, ctx), store),
      beforeSave: (net) => {
        net.config.labels = s.labels;
      },
      save: (dir, net) => saveSegModel(dir, net, { 'val_ids.txt': `${sel.carve.val.join('\n')}\n` }),
      afterSave: async (net) => {
        await fs.rm(roundsDir(o.path(storeOf('segment'))), { recursive: true, force: true });
        scores = await scoreModel(o, inputs, sel, readers, net);
      },
    });
  } finally {
    await rounds.labels?.close();
  }
  return {
    labels: s.labels, contrast: s.contrast, epochs: training.epochs, selfTrain: rounds.rounds.length, trainImages: sel.train.length, valImages: sel.val.length, labelledFraction: labelled,
    ...(sel.review ? { review: { decisions: sel.review.decisions, ...sel.review.plan.counts } } : {}),
    ...scores, training, seconds: (performance.now() - t0) / 1000, peakRssMiB: peakRss(),
  };
}

/** The CAM model's backbone (models/cam, checked against the images' classes) + a fresh head of `segment.head`. */
async function buildNet(o: RunSegmentOptions, inputs: Inputs): Promise<SegNet> {
  const s = o.params.segment;
  const cam = await loadTrainedModel(INPUTS.camModel, { path: o.path, trainStage: 'cam_train', classes: inputs.classes, load: loadCamModel, classesOf: (n) => n.config.classes });
  return segNetOnCam(cam, {
    classes: inputs.classes, background: inputs.background, head: s.head, dim: s.head_dim, decoder: s.decoder, workingSize: inputs.workingSize,
    scales: s.scales, flip: s.flip, crf: inferCrf(s), seed: o.params.seed,
  });
}

/** Step 3: train `net` on `images`, with the auxiliary loss of `segment.contrast` (its variables live for the training only). */
async function trainNet(o: RunSegmentOptions, inputs: Inputs, net: SegNet, images: Dataset<SegTrainImage>, store: { checkpointDir: string; key: string }): Promise<SegTrainResult> {
  const s = o.params.segment;
  const aux = createSegAux(s, { classes: inputs.classes.length, background: inputs.background, inChannels: s.head_dim, seed: o.params.seed, startIter: Math.ceil(images.size / s.batch_size) });
  try {
    return await trainSegNet({ net, images, segment: s, seed: o.params.seed, checkpointDir: store.checkpointDir, hash: store.key, aux, stopAfter: o.stopAfter });
  } finally {
    aux?.dispose();
  }
}

/** The training hash: params, images.arrow's bytes, the pseudo-masks' rows (however sharded), models/cam, the review and an explicit split. */
async function trainHash(o: RunSegmentOptions, inputs: Inputs, sel: Selection): Promise<string> {
  const camWeights = path.join(o.path(INPUTS.camModel), 'weights', 'weights.bin');
  const pseudo = o.params.segment.labels === 'pseudo' ? await hashTable(o.path(INPUTS.pseudo)) : 'gt';
  const dataHash = [await hashFile(inputs.imagesFile), await hashFile(camWeights), pseudo, ...(sel.review ? [sel.review.hash] : [])].join(':');
  return segmentTrainHash(o.params, o.split ? `${dataHash}:${idsKey(sel.carve.train)}` : dataHash);
}

/** Step 4-5: validation scores and the chain table (refine's rows, then this stage's). */
async function scoreModel(o: RunSegmentOptions, inputs: Inputs, sel: Selection, readers: StreamReaders, net: SegNet): Promise<Pick<SegmentRunResult, 'val' | 'pseudo_val' | 'chain'>> {
  const { scores, pseudoScores } = await validate(net, sel.val, readers, (id) => inputs.dataset.get(id)!, inputs.classes, o.params.segment);
  const chain = [
    ...(await refineChain(o.path(INPUTS.refineMetrics))),
    ...(pseudoScores ? [{ step: 'pseudo_masks', miou: pseudoScores.miou, split: 'val', images: pseudoScores.images }] : []),
    { step: o.params.segment.labels === 'gt' ? 'segmentation (gt oracle)' : 'segmentation', miou: scores.miou, split: 'val', images: scores.images },
  ];
  return { val: scores, ...(pseudoScores ? { pseudo_val: pseudoScores } : {}), chain };
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
    labels: r.labels, contrast: r.contrast, epochs: r.epochs, ...(r.selfTrain ? { self_train: r.selfTrain } : {}), trainImages: r.trainImages, valImages: r.valImages, labelledFraction: r.labelledFraction,
    val: head(r.val),
    ...(r.pseudo_val ? { pseudo_val: head(r.pseudo_val) } : {}),
    chain,
  };
}

export function formatSegment(r: SegmentRunResult): string {
  const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : (100 * v).toFixed(1));
  const width = Math.max(12, ...r.chain.map((c) => c.step.length));
  return [
    `segment: ${r.labels === 'gt' ? 'ground-truth masks (oracle)' : 'pseudo-masks'}${r.contrast !== 'none' ? ` + ${r.contrast} contrast` : ''}${r.selfTrain ? `, self-trained (${r.selfTrain} round${r.selfTrain > 1 ? 's' : ''} before this one)` : ''}, ${r.epochs} epochs (resumed from ${r.training.resumedFrom}) on ${r.trainImages} images (${pct(r.labelledFraction)}% of pixels labelled), final loss ${r.training.losses.at(-1)?.toFixed(4) ?? '-'}`,
    ...(r.review && (r.review.rejected || r.review.corrected || r.review.rejected_classes) ? [`review: ${r.review.rejected} rejected images left out, ${r.review.corrected} corrected masks used, ${r.review.rejected_classes} rejected classes ignored`] : []),
    `validation (${r.valImages} images): mIoU ${pct(r.val.miou)}, pixel accuracy ${pct(r.val.pixel_accuracy)}${r.pseudo_val ? `; its pseudo-masks: mIoU ${pct(r.pseudo_val.miou)} at ${pct(r.pseudo_val.coverage)}% coverage` : ''}`,
    `${'step'.padEnd(width)}  split  mIoU`,
    ...r.chain.map((c) => `${c.step.padEnd(width)}  ${c.split.padEnd(5)}  ${pct(c.miou).padStart(5)}`),
    `${r.training.imagesPerSecond.toFixed(1)} train images/s, ${r.seconds.toFixed(1)} s, peak RSS ${r.peakRssMiB} MiB`,
  ].join('\n');
}
