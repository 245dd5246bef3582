/**
 * Stage `affinity`: CAMs -> AffinityNet -> random walk -> cache/affinity_cams.arrow.
 *
 * 1. Labels: for each image of `dataset.train_split`, affinity labels (labels.ts) from its CAMs in
 *    cache/cams.arrow on the stride-4 grid of that file (IRN: 1/4 resolution), optionally refined by
 *    the dense CRF (`affinity.crf`, infer.ts).
 * 2. Train (train.ts): the backbone of models/cam + a new AffinityHead, balanced loss, checkpoint
 *    per epoch in the checkpoint store, .tagseg/checkpoints/affinity/ (an unfinished run is resumed
 *    when its key, `affinityTrainHash` + the code, matches); the final model -> models/affinity
 *    (config.json + weights/, net.ts), after which the store is emptied.
 * 3. Infer: for every row of cams.arrow (every split), affinities in 'full' layout, random walk of
 *    [bg = (1 - max CAM)^alpha, CAMs] (PSA) or of the CAMs alone (no background class), beta and
 *    2^logt steps; each propagated fg channel divided by its max -> affinity_cams.arrow with the
 *    columns and metadata layout of cams.arrow (maps/cams_table.ts; fg channels only, so later
 *    stages read it exactly like cams.arrow), written row by row.
 * 4. Evaluate (maps/evaluate.ts): mIoU of the CAMs and of the propagated maps on the train
 *    split's masks, computed the same way in the same pass (bg threshold sweep, or argmax over tags
 *    without a background class) -> metrics/affinity.json { cam, random_walk }; with a background
 *    class also `random_walk_bg`: PSA's argmax over the propagated [bg, fg] before normalisation.
 */
import { artifact } from '../../pipeline/artifacts.js';
import { ownCodeDeps } from '../../pipeline/code_closure.js';
import * as tf from '@tensorflow/tfjs';
import { ConfusionMatrix, segmentationScores } from '../../eval/metrics.js';
import { neighbourOffsets } from '../../ops/randomwalk.js';
import { finishTraining, trainingHash, trainingStore } from '../../nn/loop.js';
import { RowReader, tableDataset } from '../../nn/dataset.js';
import { type Row, TableReader, TableWriter, readInfo } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError } from '../../pipeline/errors.js';
import { hashFile } from '../../pipeline/fsutil.js';
import { progress } from '../../pipeline/log.js';
import { classPlotRows, epochPlotRows, headline, iouFigures, writeJsonMetrics } from '../../pipeline/metrics_file.js';
import type { Params } from '../params.js';
import { paramsHash } from '../../pipeline/params_core.js';
import type { Stage } from '../../pipeline/stage.js';
import { type MapScores, ThresholdSweep, camLabels, resizeBilinear, summarizeSweep } from '../../maps/evaluate.js';
import { decodeFloat16, decodeFloat32, encodeFloat16, encodeFloat32 } from '../../maps/f16.js';
import { camColumns } from '../../maps/cams_table.js';
import { walkImage } from '../../maps/random_walk.js';
import { imageAffinityLabels } from './image_labels.js';
import { IGNORE } from './pairs.js';
import { affinityNetFromCam, saveAffinityModel } from '../../nn/affinity_net.js';
import { type AffinityTrainImage, type AffinityTrainResult, LABEL_STRIDE, trainAffinity } from './train.js';

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections } from './params.js';

/** bg thresholds 0.05, 0.10, ..., 0.95. */
const SWEEP: number[] = Array.from({ length: 19 }, (_, i) => Math.round((i + 1) * 5) / 100);
const PARAMS = ['seed', 'dataset.train_split', 'affinity'];
export const AFFINITY_OUTPUTS = {
  cams: artifact('affinityCams'),
  model: artifact('affinityModel'),
  metrics: artifact('affinityMetrics'),
  classesPlot: artifact('affinityClassesPlot'),
  lossPlot: artifact('affinityLossPlot'),
} as const;
const INPUTS = { images: artifact('images'), cams: artifact('cams'), camModel: artifact('camModel') } as const;
/** affinity keys that do not change the trained weights (inference only). */
const NOT_IN_TRAIN_HASH = ['beta', 'logt', 'alpha'];
/** Label keys that only apply with a background class (labels.ts), and those that only apply without one. */
const BG_LABEL_KEYS = ['conf_fg', 'conf_bg'];
const NO_BG_LABEL_KEYS = ['margin', 'floor'];

/**
 * Resume key of the training: seed, split, the affinity keys that shape the weights and the data.
 * `background` (the dataset's bg class or null) drops the label keys that do not apply to it, so
 * e.g. a new conf_bg default does not retrain an MSRC-v2 model.
 */
export function affinityTrainHash(p: Params, dataHash: string, background: number | null = null): string {
  return trainingHash(p, 'affinity', [...NOT_IN_TRAIN_HASH, ...(background === null ? BG_LABEL_KEYS : NO_BG_LABEL_KEYS)], dataHash);
}

export const stage: Stage = {
  name: 'affinity',
  summary: 'train AffinityNet on CAM labels, random-walk the CAMs -> cache/affinity_cams.arrow + models/affinity',
  io: () => ({
    reads: [INPUTS.images, INPUTS.cams, INPUTS.camModel],
    writes: [AFFINITY_OUTPUTS.cams, AFFINITY_OUTPUTS.model],
    metrics: [AFFINITY_OUTPUTS.metrics],
    plots: [AFFINITY_OUTPUTS.classesPlot, AFFINITY_OUTPUTS.lossPlot],
    params: PARAMS,
  }),
  async run(ctx) {
    const r = await runAffinity({ params: ctx.params, path: ctx.path });
    // Headline figures only; per-class IoU and losses are plots, timings go to the run log.
    const { seconds: _s, walkSecondsPerImage: _w, peakRssMiB: _m, training, ...stable } = r;
    await writeJsonMetrics(ctx.path(AFFINITY_OUTPUTS.metrics), { ...stable, cam: headline(r.cam), random_walk: headline(r.random_walk) });
    await writeJsonMetrics(ctx.path(AFFINITY_OUTPUTS.classesPlot), classPlotRows({ cam: iouFigures(r.cam.iou), random_walk: iouFigures(r.random_walk.iou) }));
    await writeJsonMetrics(ctx.path(AFFINITY_OUTPUTS.lossPlot), epochPlotRows({ loss: training.losses }));
    if (!ctx.json) process.stderr.write(`${formatAffinity(r)}\n`);
    return r as unknown as Record<string, unknown>;
  },
};

export interface AffinityRunResult {
  epochs: number;
  trainImages: number;
  /** Fraction of label-grid cells of the training images that got a label (not 255). */
  labelledFraction: number;
  crf: boolean;
  cam: MapScores;
  random_walk: MapScores;
  random_walk_bg?: { miou: number | null; images: number };
  rows: number;
  training: AffinityTrainResult;
  seconds: number;
  walkSecondsPerImage: number;
  peakRssMiB: number;
}

export interface RunAffinityOptions {
  params: Params;
  path(rel: string): string;
}

function decodeMaps(row: Row, dtype: string): Float32Array {
  const bytes = row.cams as Uint8Array;
  return dtype === 'float16' ? decodeFloat16(bytes) : decodeFloat32(bytes);
}

export async function runAffinity(o: RunAffinityOptions): Promise<AffinityRunResult> {
  const t0 = performance.now();
  await initBackend();
  const p = o.params;
  const a = p.affinity;
  const camsFile = o.path(INPUTS.cams);
  const imagesFile = o.path(INPUTS.images);
  const camsInfo = await readInfo(camsFile);
  const imgInfo = await readInfo(imagesFile);
  const extra = camsInfo.meta.extra ?? {};
  const background = typeof extra.background === 'number' ? extra.background : null;
  const dtype = extra.dtype === 'float32' ? 'float32' : 'float16';
  if (extra.stride !== LABEL_STRIDE) throw new TagsegError(`cams.arrow has stride ${String(extra.stride)}, the affinity stage needs ${LABEL_STRIDE}`, { file: camsFile });
  if (camsInfo.numRows !== imgInfo.numRows) throw new TagsegError('cams.arrow and images.arrow have different row counts', { file: camsFile, hint: 'rerun `tagseg run cam`' });
  const classes = camsInfo.meta.classes;
  const labelSettings = { background, confFg: a.conf_fg, confBg: a.conf_bg, margin: a.margin, floor: a.floor, crf: a.crf };

  // 1. training images and their affinity labels (both tables are in the same row order): the
  // labels (stride 4, 1/48 of the pixels' bytes) in memory, the pixels streamed during training
  type Labelled = { id: string; height: number; width: number; labels: Uint8Array; position: number };
  const train: Labelled[] = [];
  let labelled = 0;
  let cells = 0;
  let position = 0;
  await zipRows(camsFile, imagesFile, async (cr, ir) => {
    const at = position++;
    if (cr.split !== p.dataset.train_split) return;
    const H = ir.height as number;
    const W = ir.width as number;
    const tags = cr.tags as number[];
    const h = cr.height as number;
    const w = cr.width as number;
    const pixels = ir.pixels as Uint8Array;
    const labels = imageAffinityLabels(decodeMaps(cr, dtype), tags, h, w, { pixels, height: H, width: W }, labelSettings, LABEL_STRIDE);
    for (const v of labels) if (v !== IGNORE) labelled++;
    cells += labels.length;
    train.push({ id: ir.id as string, height: H, width: W, labels, position: at });
  });
  if (train.length === 0) throw new TagsegError(`no image of split '${p.dataset.train_split}' in cams.arrow`, { file: camsFile, hint: 'check dataset.train_split' });

  // 2. training
  // the data: CAM labels, images, and the CAM model whose backbone the network starts from
  const camWeights = `${o.path(INPUTS.camModel)}/weights/weights.bin`;
  const hash = affinityTrainHash(p, `${await hashFile(camsFile)}:${await hashFile(imagesFile)}:${await hashFile(camWeights)}`, background);
  const store = await trainingStore('affinity', await ownCodeDeps('affinity'), hash, o.path);
  const modelDir = o.path(AFFINITY_OUTPUTS.model);
  const net = await affinityNetFromCam(o.path(INPUTS.camModel), {
    dim: a.dim, radius: a.radius, stride: LABEL_STRIDE, seed: p.seed, levels: a.levels, reduce: a.reduce,
  });
  try {
    const rowReader = await RowReader.open(imagesFile, { stage: 'ingest' });
    const images = tableDataset<AffinityTrainImage>([rowReader], train.map((t) => t.position), ([row], i) => ({ ...train[i], pixels: row.pixels as Uint8Array }));
    const training = await trainAffinity({ net, images, sizes: train, affinity: a, background, seed: p.seed, checkpointDir: store.checkpointDir, hash: store.key })
      .finally(() => rowReader.close());
    const trainImages = train.length;
    train.length = 0;
    net.config.paramsHash = hash;
    net.config.epochs = training.epochs;
    await saveAffinityModel(modelDir, net);
    await finishTraining(store.checkpointDir);

    // 3. + 4. random walk of every image, written row by row, scored on the train split
    const offsets = neighbourOffsets(a.radius);
    const walk = { offsets, radius: a.radius, beta: a.beta, logt: a.logt, alpha: background === null ? null : a.alpha };
    const writer = await TableWriter.open(o.path(AFFINITY_OUTPUTS.cams), camColumns(dtype), {
      stage: 'affinity', paramsHash: paramsHash(p, PARAMS), classes,
      extra: { ...extra, stride: LABEL_STRIDE, dtype, model: AFFINITY_OUTPUTS.model, cams: INPUTS.cams, beta: a.beta, logt: a.logt, alpha: walk.alpha, radius: a.radius },
    }, { batchRows: 64, batchBytes: 32 * 2 ** 20 });
    // One sweep for both, wider than the cam stage's 0.05-0.60: propagated maps are smoother than
    // CAMs, and their best constant bg score lies higher (IRN's is 0.25 on its own scale).
    const camSweep = new ThresholdSweep(classes.length, background, SWEEP);
    const rwSweep = new ThresholdSweep(classes.length, background, SWEEP);
    const bgArgmax = background === null ? null : new ConfusionMatrix(classes.length);
    let bgImages = 0;
    const bar = progress('affinity random walk', camsInfo.numRows);
    let rows = 0;
    let walkSeconds = 0;
    let walked = 0;
    try {
      await zipRows(camsFile, imagesFile, async (cr, ir) => {
        const H = ir.height as number;
        const W = ir.width as number;
        const h = cr.height as number;
        const w = cr.width as number;
        const tags = cr.tags as number[];
        const cams = decodeMaps(cr, dtype);
        const before = tf.memory().numTensors;
        const r = await walkImage(net, ir.pixels as Uint8Array, H, W, cams, tags.length, h, w, walk);
        if (tf.memory().numTensors !== before) throw new Error(`affinity: the random walk leaked ${tf.memory().numTensors - before} tensors`);
        if (tags.length > 0) {
          walkSeconds += r.walkSeconds;
          walked++;
        }
        const bytes = dtype === 'float16' ? encodeFloat16(r.maps) : encodeFloat32(r.maps);
        await writer.write({ id: cr.id, split: cr.split, tags, height: h, width: w, image_height: H, image_width: W, cams: bytes });
        if (cr.split === p.dataset.train_split && ir.mask) {
          const mask = ir.mask as Uint8Array;
          camSweep.addStrided(cams, tags, h, w, mask, H, W);
          rwSweep.addStrided(dtype === 'float16' ? decodeFloat16(bytes) : r.maps, tags, h, w, mask, H, W);
          if (bgArgmax && background !== null) {
            const ids = [background, ...tags];
            const up = r.raw ? resizeBilinear(r.raw, ids.length, h, w, H, W) : new Float32Array(H * W);
            bgArgmax.add(r.raw ? camLabels(up, ids, H, W, null) : new Uint8Array(H * W).fill(background), mask);
            bgImages++;
          }
        }
        rows++;
        bar.tick();
      });
      bar.stop();
      await writer.close();
    } catch (err) {
      bar.stop();
      await writer.abort();
      throw err;
    }
    const score = (s: ThresholdSweep): MapScores => summarizeSweep(s.result(), classes);
    return {
      epochs: training.epochs,
      trainImages,
      labelledFraction: cells > 0 ? labelled / cells : 0,
      crf: a.crf,
      cam: score(camSweep),
      random_walk: score(rwSweep),
      ...(bgArgmax ? { random_walk_bg: { miou: segmentationScores(bgArgmax).miou, images: bgImages } } : {}),
      rows,
      training,
      seconds: (performance.now() - t0) / 1000,
      walkSecondsPerImage: walked > 0 ? walkSeconds / walked : 0,
      peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    };
  } finally {
    net.dispose();
  }
}

/** Iterate cams.arrow and images.arrow together (same row order: the cam stage writes images.arrow's). */
async function zipRows(camsFile: string, imagesFile: string, fn: (cams: Row, image: Row) => Promise<void>): Promise<void> {
  const cr = await TableReader.open(camsFile, { stage: 'cam' });
  const ir = await TableReader.open(imagesFile, { stage: 'ingest' });
  try {
    const it = ir.rows()[Symbol.asyncIterator]();
    for await (const c of cr.rows()) {
      const n = await it.next();
      if (n.done || n.value.id !== c.id) {
        throw new TagsegError(`cams.arrow row '${String(c.id)}' does not match images.arrow row '${n.done ? 'end of table' : String(n.value.id)}'`, {
          file: camsFile, hint: 'rerun `tagseg run cam`',
        });
      }
      await fn(c, n.value);
    }
  } finally {
    await cr.close();
    await ir.close();
  }
}

export function formatAffinity(r: AffinityRunResult): string {
  const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : (100 * v).toFixed(1));
  const at = (s: MapScores) => (s.threshold === null ? '(argmax over tags)' : `(bg threshold ${s.threshold})`);
  return [
    `affinity: ${r.epochs} epochs (resumed from ${r.training.resumedFrom}), crop ${r.training.crop}, final loss ${r.training.losses.at(-1)?.toFixed(4) ?? '-'}, ${pct(r.labelledFraction)}% of label cells confident${r.crf ? ' (CRF)' : ''}`,
    `mIoU on ${r.cam.images} train images: CAM ${pct(r.cam.miou)} ${at(r.cam)} -> random walk ${pct(r.random_walk.miou)} ${at(r.random_walk)}${r.random_walk_bg ? `; PSA bg argmax ${pct(r.random_walk_bg.miou)}` : ''}`,
    `${r.training.imagesPerSecond.toFixed(1)} train images/s, random walk ${(1000 * r.walkSecondsPerImage).toFixed(0)} ms/image, ${r.seconds.toFixed(1)} s, peak RSS ${r.peakRssMiB} MiB`,
  ].join('\n');
}
