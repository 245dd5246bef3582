/**
 * Stage `contrast` (RCA, regional semantic contrast and aggregation; methods.md section 3):
 * the CAM classifier retrained with a dataset-level regional memory, its refined CAMs, and those
 * maps propagated by the affinity stage's random walk.
 *
 * 1. Train (train.ts): ContrastNet (net.ts) from models/cam on the tags of `dataset.train_split`;
 *    region masks from the coarse CAM (RCA) or from affinity_cams.arrow (`contrast.region`);
 *    memory queues + k-means centroids (memory.ts), InfoNCE (contrastive.ts), aggregation
 *    (aggregate.ts); checkpoint per epoch in the checkpoint store, .tagseg/checkpoints/contrast/
 *    (an unfinished run is resumed when its key, `contrastTrainHash` + the code, matches); the
 *    final model with its memory -> models/contrast, after which the store is emptied.
 * 2. Infer: for every row of cams.arrow (every split), refined CAMs multi-scale x flip (infer.ts),
 *    then the random walk with models/affinity and the walk settings stored in
 *    affinity_cams.arrow's metadata (maps/random_walk.ts walkImage) ->
 *    cache/contrast_cams.arrow (tables.ts), written row by row.
 * 3. Evaluate in the same pass on the train split's masks, all four with one bg-threshold sweep
 *    (0.05..0.95, as the affinity stage) or argmax over the tags without a background class:
 *    metrics/contrast.json { cam, random_walk, rca, rca_random_walk }.
 * No saliency maps (RCA's published masks use them): the random walk takes their place.
 */
import { artifact } from '../../pipeline/artifacts.js';
import { ownCodeDeps } from '../../pipeline/code_closure.js';
import * as tf from '@tensorflow/tfjs';
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
import { walkImage } from '../../maps/random_walk.js';
import { loadAffinityModel } from '../../nn/affinity_net.js';
import { type MapScores, ThresholdSweep, summarizeSweep } from '../../maps/evaluate.js';
import { decodeFloat16, decodeFloat32, encodeFloat16, encodeFloat32 } from '../../maps/f16.js';
import { CAM_STRIDE } from '../../maps/multiscale.js';
import { type ClassMap, classMap, tagTarget } from '../../maps/labels.js';
import { computeRcaCams } from './infer.js';
import { contrastNetFromCam, saveContrastModel } from './net.js';
import { CONTRAST_OUTPUTS, contrastColumns } from './tables.js';
import { type ContrastTrainImage, type ContrastTrainResult, trainContrast } from './train.js';

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections } from './params.js';

/** bg thresholds 0.05, 0.10, ..., 0.95 (the affinity stage's sweep, so the figures compare). */
const SWEEP: number[] = Array.from({ length: 19 }, (_, i) => Math.round((i + 1) * 5) / 100);
const PARAMS = ['seed', 'dataset.train_split', 'contrast'];
const INPUTS = {
  images: artifact('images'),
  cams: artifact('cams'),
  affinityCams: artifact('affinityCams'),
  camModel: artifact('camModel'),
  affinityModel: artifact('affinityModel'),
} as const;
/** contrast keys that do not change the trained weights (inference only). */
const NOT_IN_TRAIN_HASH = ['scales', 'flip', 'dtype'];

export function contrastTrainHash(p: Params, dataHash: string): string {
  return trainingHash(p, 'contrast', NOT_IN_TRAIN_HASH, dataHash);
}

export const stage: Stage = {
  name: 'contrast',
  summary: 'retrain the CAM classifier with a regional memory (RCA), random-walk its CAMs -> cache/contrast_cams.arrow + models/contrast',
  io: () => ({
    reads: [INPUTS.images, INPUTS.cams, INPUTS.affinityCams, INPUTS.camModel, INPUTS.affinityModel],
    writes: [CONTRAST_OUTPUTS.cams, CONTRAST_OUTPUTS.model],
    metrics: [CONTRAST_OUTPUTS.metrics],
    plots: [CONTRAST_OUTPUTS.classesPlot, CONTRAST_OUTPUTS.lossPlot],
    params: PARAMS,
  }),
  async run(ctx) {
    const r = await runContrast({ params: ctx.params, path: ctx.path });
    // Headline figures only (settings are params); per-class IoU and the loss curve are plots. Timings,
    // and the contrast losses / memory counts that cover only this run's epochs (not pure after a resume), go to the run log.
    const { seconds: _s, inferSecondsPerImage: _i, peakRssMiB: _m, training, settings: _set, ...stable } = r;
    const maps = { cam: r.cam, random_walk: r.random_walk, rca: r.rca, rca_random_walk: r.rca_random_walk };
    await writeJsonMetrics(ctx.path(CONTRAST_OUTPUTS.metrics), { ...stable, ...Object.fromEntries(Object.entries(maps).map(([k, s]) => [k, headline(s)])) });
    await writeJsonMetrics(ctx.path(CONTRAST_OUTPUTS.classesPlot), classPlotRows(Object.fromEntries(Object.entries(maps).map(([k, s]) => [k, iouFigures(s.iou)]))));
    await writeJsonMetrics(ctx.path(CONTRAST_OUTPUTS.lossPlot), epochPlotRows({ loss: training.losses }));
    if (!ctx.json) process.stderr.write(`${formatContrast(r)}\n`);
    return r as unknown as Record<string, unknown>;
  },
};

export interface ContrastRunResult {
  epochs: number;
  trainImages: number;
  settings: Pick<Params['contrast'], 'region' | 'pooling' | 'memory_size' | 'memory_update' | 'similarity' | 'aggregation' | 'contrast_weight' | 'contrast_from'>;
  /** The four maps scored in one pass on the train split's masks. */
  cam: MapScores;
  random_walk: MapScores;
  rca: MapScores;
  rca_random_walk: MapScores;
  rows: number;
  training: ContrastTrainResult;
  seconds: number;
  inferSecondsPerImage: number;
  peakRssMiB: number;
}

export interface RunContrastOptions {
  params: Params;
  path(rel: string): string;
  /** Tests: stop training after this many epochs in this run (simulates a kill; no inference). */
  stopAfter?: number;
}

function decodeMaps(bytes: Uint8Array, dtype: string): Float32Array {
  return dtype === 'float16' ? decodeFloat16(bytes) : decodeFloat32(bytes);
}

/** Stored maps [C, h, w] of `tags` -> channel-last [h, w, K] over the classifier outputs (0 for untagged). */
export function toOutputMaps(maps: Float32Array, tags: readonly number[], h: number, w: number, map: ClassMap): Float32Array {
  const K = map.outputs.length;
  const out = new Float32Array(h * w * K);
  tags.forEach((t, c) => {
    const k = map.toOutput[t];
    if (k < 0) return;
    for (let i = 0; i < h * w; i++) out[i * K + k] = maps[c * h * w + i];
  });
  return out;
}

export async function runContrast(o: RunContrastOptions): Promise<ContrastRunResult> {
  const t0 = performance.now();
  await initBackend();
  const p = o.params;
  const c = p.contrast;
  const camsFile = o.path(INPUTS.cams);
  const imagesFile = o.path(INPUTS.images);
  const affFile = o.path(INPUTS.affinityCams);
  const camsInfo = await readInfo(camsFile);
  const affInfo = await readInfo(affFile);
  const imgInfo = await readInfo(imagesFile);
  const extra = camsInfo.meta.extra ?? {};
  const affExtra = affInfo.meta.extra ?? {};
  const background = typeof extra.background === 'number' ? extra.background : null;
  const camDtype = extra.dtype === 'float32' ? 'float32' : 'float16';
  const affDtype = affExtra.dtype === 'float32' ? 'float32' : 'float16';
  if (extra.stride !== CAM_STRIDE) throw new TagsegError(`cams.arrow has stride ${String(extra.stride)}, the contrast stage needs ${CAM_STRIDE}`, { file: camsFile });
  if (camsInfo.numRows !== imgInfo.numRows || affInfo.numRows !== camsInfo.numRows) {
    throw new TagsegError('cams.arrow, affinity_cams.arrow and images.arrow have different row counts', { file: affFile, hint: 'rerun `tagseg repro contrast`' });
  }
  const radius = affExtra.radius;
  const beta = affExtra.beta;
  const logt = affExtra.logt;
  if (typeof radius !== 'number' || typeof beta !== 'number' || typeof logt !== 'number') {
    throw new TagsegError('affinity_cams.arrow metadata lacks the random walk settings (radius, beta, logt)', { file: affFile, hint: 'rerun `tagseg run affinity`' });
  }
  const alpha = background === null ? null : typeof affExtra.alpha === 'number' ? affExtra.alpha : null;
  if (background !== null && alpha === null) throw new TagsegError('affinity_cams.arrow metadata lacks alpha (the bg exponent)', { file: affFile });
  const classes = camsInfo.meta.classes;
  const map = classMap(classes, background);

  // 1. training images (train split, with a foreground tag): row positions and targets in memory;
  // pixels (and the affinity region maps) streamed from the tables during training (nn/dataset.ts)
  const train: Array<{ position: number; tags: number[]; target: Float32Array; h: number; w: number }> = [];
  let position = 0;
  await zipRows(camsFile, imagesFile, affFile, async (cr) => {
    const at = position++;
    if (cr.split !== p.dataset.train_split) return;
    const tags = cr.tags as number[];
    const target = tagTarget(map, tags, cr.id as string);
    if (!target.some((v) => v > 0)) return;
    train.push({ position: at, tags, target, h: cr.height as number, w: cr.width as number });
  });
  if (train.length === 0) throw new TagsegError(`no image of split '${p.dataset.train_split}' has a foreground tag`, { file: camsFile, hint: 'check dataset.train_split' });

  // 2. training
  // the data, and the CAM model the network starts from
  const dataFiles = [imagesFile, camsFile, ...(c.region === 'affinity' ? [affFile] : []), `${o.path(INPUTS.camModel)}/weights/weights.bin`];
  const hash = contrastTrainHash(p, (await Promise.all(dataFiles.map((f) => hashFile(f)))).join(':'));
  const store = await trainingStore('contrast', await ownCodeDeps('contrast'), hash, o.path);
  const modelDir = o.path(CONTRAST_OUTPUTS.model);
  const net = await contrastNetFromCam(o.path(INPUTS.camModel), {
    memorySize: c.memory_size, centroids: c.centroids, dim: c.dim, similarity: c.similarity, aggregation: c.aggregation, seed: p.seed,
  });
  try {
    const readers = [await RowReader.open(imagesFile, { stage: 'ingest' }), ...(c.region === 'affinity' ? [await RowReader.open(affFile, { stage: 'affinity' })] : [])];
    const images = tableDataset<ContrastTrainImage>(readers, train.map((t) => t.position), ([ir, ar], i) => {
      const { tags, target, h, w } = train[i];
      const region = ar ? { maps: toOutputMaps(decodeMaps(ar.cams as Uint8Array, affDtype), tags, h, w, map), height: h, width: w } : undefined;
      return { id: ir.id as string, pixels: ir.pixels as Uint8Array, height: ir.height as number, width: ir.width as number, target, region };
    });
    const training = await trainContrast({ net, images, contrast: c, seed: p.seed, checkpointDir: store.checkpointDir, hash: store.key, stopAfter: o.stopAfter })
      .finally(() => Promise.all(readers.map((r) => r.close())));
    const trainImages = train.length;
    train.length = 0;
    const settings = {
      region: c.region, pooling: c.pooling, memory_size: c.memory_size, memory_update: c.memory_update, similarity: c.similarity,
      aggregation: c.aggregation, contrast_weight: c.contrast_weight, contrast_from: c.contrast_from,
    };
    const empty: MapScores = { miou: null, threshold: null, images: 0, iou: {} };
    if (training.epochs < c.epochs) {
      // only when stopAfter cut the run short (tests): no model, no maps
      return {
        epochs: training.epochs, trainImages, settings, cam: empty, random_walk: empty, rca: empty, rca_random_walk: empty, rows: 0, training,
        seconds: (performance.now() - t0) / 1000, inferSecondsPerImage: 0, peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
      };
    }
    // The memory the model is saved with is the one inference uses: summarise the final queues
    // (RCA's released model carries the centroids of its last epoch start; the final queue is newer).
    net.memory.summarize({ iters: c.kmeans_iters, seed: p.seed + training.epochs });
    net.config.paramsHash = hash;
    net.config.epochs = training.epochs;
    await saveContrastModel(modelDir, net);
    await finishTraining(store.checkpointDir);

    // 3. + 4. refined CAMs, random walk, scores
    const aff = await loadAffinityModel(o.path(INPUTS.affinityModel));
    const dtype = c.dtype;
    const walk = { offsets: neighbourOffsets(radius), radius, beta, logt, alpha };
    const writer = await TableWriter.open(o.path(CONTRAST_OUTPUTS.cams), contrastColumns(dtype), {
      stage: 'contrast', paramsHash: paramsHash(p, PARAMS), classes,
      extra: {
        background, stride: CAM_STRIDE, dtype, scales: c.scales, flip: c.flip, model: CONTRAST_OUTPUTS.model,
        affinity_model: INPUTS.affinityModel, cams: INPUTS.cams, beta, logt, alpha, radius,
      },
    }, { batchRows: 64, batchBytes: 32 * 2 ** 20 });
    const sweeps = {
      cam: new ThresholdSweep(classes.length, background, SWEEP),
      random_walk: new ThresholdSweep(classes.length, background, SWEEP),
      rca: new ThresholdSweep(classes.length, background, SWEEP),
      rca_random_walk: new ThresholdSweep(classes.length, background, SWEEP),
    };
    const bar = progress('contrast maps', camsInfo.numRows);
    let rows = 0;
    let inferSeconds = 0;
    try {
      await zipRows(camsFile, imagesFile, affFile, async (cr, ir, ar) => {
        const H = ir.height as number;
        const W = ir.width as number;
        const h = cr.height as number;
        const w = cr.width as number;
        const tags = cr.tags as number[];
        const pixels = ir.pixels as Uint8Array;
        const before = tf.memory().numTensors;
        const i0 = performance.now();
        const r = await computeRcaCams(net, map, pixels, H, W, tags, { scales: c.scales, flip: c.flip });
        if (r.height !== h || r.width !== w) throw new TagsegError(`contrast: maps of '${String(cr.id)}' are ${r.height} x ${r.width}, cams.arrow says ${h} x ${w}`, { file: camsFile });
        const encode = (m: Float32Array) => (dtype === 'float16' ? encodeFloat16(m) : encodeFloat32(m));
        const camBytes = encode(r.maps);
        const stored = decodeMaps(camBytes, dtype);
        const rw = await walkImage(aff, pixels, H, W, stored, tags.length, h, w, walk);
        inferSeconds += (performance.now() - i0) / 1000;
        if (tf.memory().numTensors !== before) throw new Error(`contrast: inference leaked ${tf.memory().numTensors - before} tensors`);
        const rwBytes = encode(rw.maps);
        await writer.write({ id: cr.id, split: cr.split, tags, height: h, width: w, image_height: H, image_width: W, cams: camBytes, propagated: rwBytes });
        if (cr.split === p.dataset.train_split && ir.mask) {
          const mask = ir.mask as Uint8Array;
          sweeps.cam.addStrided(decodeMaps(cr.cams as Uint8Array, camDtype), tags, h, w, mask, H, W);
          sweeps.random_walk.addStrided(decodeMaps(ar.cams as Uint8Array, affDtype), tags, h, w, mask, H, W);
          sweeps.rca.addStrided(stored, tags, h, w, mask, H, W);
          sweeps.rca_random_walk.addStrided(decodeMaps(rwBytes, dtype), tags, h, w, mask, H, W);
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
    } finally {
      aff.dispose();
    }
    const score = (s: ThresholdSweep): MapScores => summarizeSweep(s.result(), classes);
    return {
      epochs: training.epochs,
      trainImages,
      settings,
      cam: score(sweeps.cam),
      random_walk: score(sweeps.random_walk),
      rca: score(sweeps.rca),
      rca_random_walk: score(sweeps.rca_random_walk),
      rows,
      training,
      seconds: (performance.now() - t0) / 1000,
      inferSecondsPerImage: rows > 0 ? inferSeconds / rows : 0,
      peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    };
  } finally {
    net.dispose();
  }
}

/** Iterate cams.arrow, images.arrow and affinity_cams.arrow together (same row order, checked by id). */
async function zipRows(camsFile: string, imagesFile: string, affFile: string, fn: (cams: Row, image: Row, aff: Row) => Promise<void>): Promise<void> {
  const cr = await TableReader.open(camsFile, { stage: 'cam' });
  const ir = await TableReader.open(imagesFile, { stage: 'ingest' });
  const ar = await TableReader.open(affFile, { stage: 'affinity' });
  try {
    const it = ir.rows()[Symbol.asyncIterator]();
    const at = ar.rows()[Symbol.asyncIterator]();
    for await (const c of cr.rows()) {
      const n = await it.next();
      const a = await at.next();
      if (n.done || n.value.id !== c.id) {
        throw new TagsegError(`cams.arrow row '${String(c.id)}' does not match images.arrow row '${n.done ? 'end of table' : String(n.value.id)}'`, { file: camsFile, hint: 'rerun `tagseg run cam`' });
      }
      if (a.done || a.value.id !== c.id) {
        throw new TagsegError(`cams.arrow row '${String(c.id)}' does not match affinity_cams.arrow row '${a.done ? 'end of table' : String(a.value.id)}'`, { file: affFile, hint: 'rerun `tagseg run affinity`' });
      }
      await fn(c, n.value, a.value);
    }
  } finally {
    await cr.close();
    await ir.close();
    await ar.close();
  }
}

export function formatContrast(r: ContrastRunResult): string {
  const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : (100 * v).toFixed(1));
  const at = (s: MapScores) => (s.threshold === null ? '' : ` @${s.threshold}`);
  const t = r.training;
  return [
    `contrast: ${r.epochs} epochs (resumed from ${t.resumedFrom}), final loss ${t.losses.at(-1)?.toFixed(4) ?? '-'}, contrast loss ${t.contrastLosses.at(-1)?.toFixed(3) ?? '-'}, memory filled [${t.filled.join(', ')}]`,
    `mIoU on ${r.rca.images} train images: CAM ${pct(r.cam.miou)}${at(r.cam)} -> RCA ${pct(r.rca.miou)}${at(r.rca)}; random walk ${pct(r.random_walk.miou)}${at(r.random_walk)} -> RCA + random walk ${pct(r.rca_random_walk.miou)}${at(r.rca_random_walk)}`,
    `${t.imagesPerSecond.toFixed(1)} train images/s, inference ${(1000 * r.inferSecondsPerImage).toFixed(0)} ms/image, ${r.seconds.toFixed(1)} s, peak RSS ${r.peakRssMiB} MiB`,
  ].join('\n');
}
