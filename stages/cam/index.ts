/**
 * Stage `cam`: image-level tags -> class activation maps.
 *
 * cache/images.arrow (+ dataset.arrow for a consistency check) in; a multi-label classifier
 * (backbone -> GAP -> 1x1 conv, multi-label soft-margin loss) trained on the tags of
 * `dataset.train_split` only; then multi-scale x flip CAMs of every image of every split, stored
 * at stride 4 (tables.ts) -> cache/cams.arrow; the model -> models/cam (config.json + weights/,
 * `loadCamModel` in net.ts; the resumable training state in the checkpoint store,
 * .tagseg/checkpoints/cam/, nn/train_store.ts);
 * metrics/cam.json (CAM mIoU on the train split's masks, classification mAP/F1 per split) and
 * plots/cam_threshold.json (mIoU against the constant background threshold).
 *
 * float16 storage: on the default synthetic run the best mIoU from the float16 maps equals the
 * float32 one to 4 decimals (metrics/cam.json `cam.miou_float32` is computed alongside), and the
 * file is half the size, so float16 is the default.
 *
 * Memory: training streams the train split's pixels from images.arrow by row position (only the
 * positions and targets are held; nn/dataset.ts), in the same seeded order as before; CAM inference streams images.arrow batch by batch and writes cams.arrow through
 * TableWriter batches, so it is flat in the number of images.
 *
 * Resume: an unfinished training is resumed when its key matches: `trainHash` (seed, train split,
 * every `cam` key but the inference-only ones (scales, flip, dtype), `epochs` included, and the
 * content hash of images.arrow) plus the stage's code. Any other change trains from scratch; a
 * finished training leaves only models/cam.
 */
import { artifact } from '../../pipeline/artifacts.js';
import { ownCodeDeps } from '../../pipeline/code_closure.js';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { backboneConfig } from '../../nn/backbones/index.js';
import { RowReader, tableDataset } from '../../nn/dataset.js';
import { finishTraining, trainingHash, trainingStore } from '../../nn/loop.js';
import { pretrainedModel } from '../../nn/pretrained.js';
import { filesFingerprint } from '../../nn/train_store.js';
import { TableReader, TableWriter, readInfo } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError } from '../../pipeline/errors.js';
import { hashFile, writeFileAtomic } from '../../pipeline/fsutil.js';
import { progress } from '../../pipeline/log.js';
import { classPlotRows, epochPlotRows, headline, iouFigures, writeJsonMetrics } from '../../pipeline/metrics_file.js';
import type { Params } from '../params.js';
import { paramsHash } from '../../pipeline/params_core.js';
import type { Stage } from '../../pipeline/stage.js';
import { multiLabelScores } from '../../eval/metrics.js';
import { ThresholdSweep, summarizeSweep } from '../../maps/evaluate.js';
import { decodeFloat16, encodeFloat16, encodeFloat32 } from '../../maps/f16.js';
import { CAM_STRIDE } from '../../maps/multiscale.js';
import { computeCams } from './infer.js';
import { type ClassMap, classMap, foregroundTags, tagTarget } from '../../maps/labels.js';
import { CAM_MODEL_FORMAT, type CamNet, buildCamNet, saveCamModel } from '../../nn/cam_net.js';
import { type CamsExtra, camColumns } from '../../maps/cams_table.js';
import { type TrainImage, type TrainResult, trainCam } from './train.js';

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections } from './params.js';

export const CAM_OUTPUTS = {
  cams: artifact('cams'),
  model: artifact('camModel'),
  metrics: artifact('camMetrics'),
  plot: artifact('camThresholdPlot'),
  classesPlot: artifact('camClassesPlot'),
  lossPlot: artifact('camLossPlot'),
} as const;

const PARAMS = ['seed', 'dataset.train_split', 'cam'];
const INPUTS = { dataset: artifact('dataset'), images: artifact('images') } as const;
/** cam keys that do not change the trained weights (inference only). */
const NOT_IN_TRAIN_HASH = ['scales', 'flip', 'dtype'];

export function trainHash(p: Params, dataHash: string): string {
  return trainingHash(p, 'cam', NOT_IN_TRAIN_HASH, dataHash);
}

/**
 * What names the pretrained weights a MobileNet starts from: a registered name ('' = the default
 * one; nn/pretrained.ts checks its files against recorded checksums) or an http(s) URL as given,
 * else the content of the local folder / model.json.
 */
async function pretrainedFingerprint(src: string, pathOf: (rel: string) => string): Promise<string> {
  if (src === '' || pretrainedModel(src) || /^https?:\/\//i.test(src)) return src;
  const where = /^file:\/\//i.test(src) ? fileURLToPath(src) : pathOf(src);
  const dir = where.endsWith('.json') ? path.dirname(where) : where;
  return filesFingerprint(dir, ['.']);
}

export const stage: Stage = {
  name: 'cam',
  summary: 'train a tag classifier, write class activation maps -> cache/cams.arrow + models/cam',
  io: () => ({
    reads: [INPUTS.dataset, INPUTS.images],
    writes: [CAM_OUTPUTS.cams, CAM_OUTPUTS.model],
    metrics: [CAM_OUTPUTS.metrics],
    plots: [CAM_OUTPUTS.plot, CAM_OUTPUTS.classesPlot, CAM_OUTPUTS.lossPlot],
    params: PARAMS,
  }),
  async run(ctx) {
    const r = await runCam({ params: ctx.params, path: ctx.path });
    // Headline figures only; per-class IoU and losses are plots, timings go to the run log.
    const { seconds: _s, trainImagesPerSecond: _t, inferImagesPerSecond: _i, peakRssMiB: _m, training: _tr, ...stable } = r;
    await writeJsonMetrics(ctx.path(CAM_OUTPUTS.metrics), { ...stable, cam: headline(r.cam) });
    await writeJsonMetrics(ctx.path(CAM_OUTPUTS.classesPlot), classPlotRows({ cam: iouFigures(r.cam.iou) }));
    await writeJsonMetrics(ctx.path(CAM_OUTPUTS.lossPlot), epochPlotRows({ loss: r.training.losses }));
    if (!ctx.json) process.stderr.write(`${formatCam(r)}\n`);
    return r as unknown as Record<string, unknown>;
  },
};

export interface SplitScores { images: number; mAP: number | null; macroF1: number | null; microF1: number | null }

export interface CamRunResult {
  backbone: string;
  optimizer: string;
  epochs: number;
  trainImages: number;
  classes: number;
  background: string | null;
  cam: { miou: number | null; threshold: number | null; images: number; iou: Record<string, number | null>; miou_float32?: number | null; dtype: string };
  classification: Record<string, SplitScores>;
  rows: number;
  training: TrainResult;
  seconds: number;
  trainImagesPerSecond: number;
  inferImagesPerSecond: number;
  peakRssMiB: number;
}

export interface RunCamOptions {
  params: Params;
  path(rel: string): string;
  /** Tests: stop training after this many epochs in this run (simulates a kill; no inference). */
  stopAfter?: number;
}

export async function runCam(o: RunCamOptions): Promise<CamRunResult> {
  const t0 = performance.now();
  await initBackend();
  const p = o.params;
  const cam = p.cam;
  const imagesFile = o.path(INPUTS.images);
  const info = await readInfo(imagesFile);
  const dsInfo = await readInfo(o.path(INPUTS.dataset));
  if (JSON.stringify(dsInfo.meta.classes) !== JSON.stringify(info.meta.classes) || dsInfo.numRows !== info.numRows) {
    throw new TagsegError(`${INPUTS.dataset} and ${INPUTS.images} disagree (classes or rows)`, { file: imagesFile, hint: 'rerun `tagseg run ingest`' });
  }
  const classes = info.meta.classes;
  const bgRaw = info.meta.extra?.background;
  const background = typeof bgRaw === 'number' ? bgRaw : null;
  const map = classMap(classes, background);

  // Training images (train split, with a foreground tag): their row positions and targets in
  // memory, their pixels streamed from images.arrow during training (nn/dataset.ts).
  const positions: number[] = [];
  const targets: Float32Array[] = [];
  {
    const reader = await TableReader.open(imagesFile, { stage: 'ingest' });
    try {
      let pos = 0;
      for await (const row of reader.rows()) {
        const at = pos++;
        if (row.split !== p.dataset.train_split) continue;
        const target = tagTarget(map, row.tags as number[], row.id as string);
        if (!target.some((v) => v > 0)) continue;
        positions.push(at);
        targets.push(target);
      }
    } finally {
      await reader.close();
    }
  }
  if (positions.length === 0) {
    throw new TagsegError(`no image of split '${p.dataset.train_split}' has a foreground tag`, { file: imagesFile, hint: 'check dataset.train_split' });
  }

  // the data: images, and the pretrained weights a MobileNet starts from
  const hash = trainHash(p, [await hashFile(imagesFile), ...(cam.backbone === 'mobilenet' ? [await pretrainedFingerprint(cam.pretrained, o.path)] : [])].join(':'));
  const store = await trainingStore('cam', await ownCodeDeps('cam'), hash, o.path);
  const modelDir = o.path(CAM_OUTPUTS.model);
  const net = await buildCamNet(
    {
      format: CAM_MODEL_FORMAT,
      version: 1,
      backbone: await backboneConfig(cam.backbone, cam),
      classes,
      background,
      outputs: map.outputs,
    },
    p.seed,
    true,
  );
  try {
    const rowReader = await RowReader.open(imagesFile, { stage: 'ingest' });
    const images = tableDataset<TrainImage>([rowReader], positions, ([row], i) => ({
      id: row.id as string, pixels: row.pixels as Uint8Array, height: row.height as number, width: row.width as number, target: targets[i],
    }));
    const training = await trainCam({ net, images, cam, seed: p.seed, checkpointDir: store.checkpointDir, hash: store.key, stopAfter: o.stopAfter })
      .finally(() => rowReader.close());
    const trainImages = positions.length;
    net.config.paramsHash = hash;
    net.config.epochs = training.epochs;
    if (training.epochs < cam.epochs) {
      // Only when stopAfter cut the run short (tests): no final model, no CAMs.
      return partialResult(p, training, map, trainImages, t0);
    }
    await saveCamModel(modelDir, net);
    await finishTraining(store.checkpointDir);
    const inf = await writeCams(o, net, map, info.numRows, imagesFile);
    const seconds = (performance.now() - t0) / 1000;
    return {
      backbone: cam.backbone,
      optimizer: cam.optimizer,
      epochs: training.epochs,
      trainImages,
      classes: map.outputs.length,
      background: background === null ? null : classes[background],
      ...inf.result,
      training,
      seconds,
      trainImagesPerSecond: training.imagesPerSecond,
      inferImagesPerSecond: inf.imagesPerSecond,
      peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    };
  } finally {
    net.dispose();
  }
}

function partialResult(p: Params, training: TrainResult, map: ClassMap, trainImages: number, t0: number): CamRunResult {
  return {
    backbone: p.cam.backbone, optimizer: p.cam.optimizer, epochs: training.epochs, trainImages, classes: map.outputs.length,
    background: null, cam: { miou: null, threshold: null, images: 0, iou: {}, dtype: p.cam.dtype }, classification: {}, rows: 0, training,
    seconds: (performance.now() - t0) / 1000, trainImagesPerSecond: training.imagesPerSecond, inferImagesPerSecond: 0,
    peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
  };
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

async function writeCams(o: RunCamOptions, net: CamNet, map: ClassMap, numRows: number, imagesFile: string) {
  const p = o.params;
  const cam = p.cam;
  const extra: CamsExtra = { background: map.background, stride: CAM_STRIDE, dtype: cam.dtype, scales: cam.scales, flip: cam.flip, model: CAM_OUTPUTS.model };
  const writer = await TableWriter.open(o.path(CAM_OUTPUTS.cams), camColumns(cam.dtype), {
    stage: 'cam', paramsHash: paramsHash(p, PARAMS), classes: map.classes, extra: { ...extra },
  }, { batchRows: 64, batchBytes: 32 * 2 ** 20 });
  const sweep = new ThresholdSweep(map.classes.length, map.background);
  const sweep32 = cam.dtype === 'float16' ? new ThresholdSweep(map.classes.length, map.background) : undefined;
  const cls = new Map<string, { scores: Float32Array[]; labels: Float32Array[] }>();
  const reader = await TableReader.open(imagesFile, { stage: 'ingest' });
  const bar = progress('cam maps', numRows);
  const t0 = performance.now();
  let rows = 0;
  try {
    for await (const row of reader.rows()) {
      const H = row.height as number;
      const W = row.width as number;
      const tags = foregroundTags(map, row.tags as number[]);
      const r = await computeCams(net, map, row.pixels as Uint8Array, H, W, tags, { scales: cam.scales, flip: cam.flip });
      const bytes = cam.dtype === 'float16' ? encodeFloat16(r.maps) : encodeFloat32(r.maps);
      await writer.write({ id: row.id, split: row.split, tags, height: r.height, width: r.width, image_height: H, image_width: W, cams: bytes });
      const split = row.split as string;
      if (split === p.dataset.train_split && row.mask) {
        const stored = cam.dtype === 'float16' ? decodeFloat16(bytes) : r.maps;
        sweep.addStrided(stored, tags, r.height, r.width, row.mask as Uint8Array, H, W);
        sweep32?.addStrided(r.maps, tags, r.height, r.width, row.mask as Uint8Array, H, W);
      }
      let c = cls.get(split);
      if (!c) cls.set(split, (c = { scores: [], labels: [] }));
      c.scores.push(r.logits.map(sigmoid));
      c.labels.push(tagTarget(map, row.tags as number[], row.id as string));
      rows++;
      bar.tick();
    }
    bar.stop();
    await writer.close();
  } catch (err) {
    bar.stop();
    await writer.abort();
    throw err;
  } finally {
    await reader.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  const res = sweep.result();
  await writeFileAtomic(o.path(CAM_OUTPUTS.plot), `${JSON.stringify(res.curve.map((pt) => ({ threshold: pt.threshold, miou: pt.miou === null ? null : Math.round(pt.miou * 1e4) / 1e4 })), null, 1)}\n`);
  const classification: Record<string, SplitScores> = {};
  for (const [split, c] of [...cls].sort(([a], [b]) => a.localeCompare(b))) {
    const s = multiLabelScores(c.scores, c.labels);
    // Held-out splits' tags are used for evaluation only, never for training.
    classification[split] = { images: c.scores.length, mAP: s.mAP, macroF1: s.macroF1, microF1: s.microF1 };
  }
  return {
    imagesPerSecond: rows / seconds,
    result: {
      cam: {
        ...summarizeSweep(res, map.classes), dtype: cam.dtype,
        ...(sweep32 ? { miou_float32: sweep32.result().best.miou } : {}),
      },
      classification,
      rows,
    },
  };
}

export function formatCam(r: CamRunResult): string {
  const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : (100 * v).toFixed(1));
  const cls = Object.entries(r.classification).map(([s, c]) => `${s} mAP ${pct(c.mAP)} F1 ${pct(c.macroF1)}`).join(', ');
  return [
    `cam: ${r.backbone}, ${r.optimizer}, ${r.epochs} epochs (resumed from ${r.training.resumedFrom}), final loss ${r.training.losses.at(-1)?.toFixed(4) ?? '-'}`,
    `CAM mIoU ${pct(r.cam.miou)} on ${r.cam.images} ${r.cam.threshold === null ? '(argmax over tags)' : `images at bg threshold ${r.cam.threshold}`}${r.cam.miou_float32 !== undefined ? ` (float32 maps: ${pct(r.cam.miou_float32)})` : ''}`,
    `classification: ${cls}`,
    `${r.trainImagesPerSecond.toFixed(1)} train images/s, ${r.inferImagesPerSecond.toFixed(1)} CAM images/s, ${r.seconds.toFixed(1)} s, peak RSS ${r.peakRssMiB} MiB`,
  ].join('\n');
}
