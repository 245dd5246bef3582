/**
 * Stage `cam_train`: image-level tags -> the CAM classifier, models/cam.
 *
 * cache/images.arrow (+ dataset.arrow for a consistency check) in; a multi-label classifier
 * (backbone -> GAP -> 1x1 conv, multi-label soft-margin loss, train.ts) trained on the tags of
 * `dataset.train_split` only -> models/cam (config.json + weights/, nn/cam_net.ts);
 * metrics/cam_train.json (epochs, training images, final loss) and plots/cam_loss.json.
 * The maps computed from it are the next stage, `cam` (index.ts).
 *
 * Memory: training streams the train split's pixels from images.arrow by row position (only the
 * positions and targets are held; nn/dataset.ts).
 *
 * Resume: an unfinished training is resumed from the checkpoint store
 * (.tagseg/checkpoints/cam_train/, nn/train_store.ts) when its key matches: `trainHash` (io.ts:
 * seed, train split, every training key of `cam`, `epochs` included, the content hash of
 * images.arrow and of the pretrained weights) plus the stage's code. Any other change trains from
 * scratch; a finished training leaves only models/cam.
 */
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type ClassMap, classMap, tagTarget } from '../../maps/labels.js';
import { backboneConfig } from '../../nn/backbones/index.js';
import { CAM_MODEL_FORMAT, buildCamNet, saveCamModel } from '../../nn/cam_net.js';
import { RowReader, tableDataset } from '../../nn/dataset.js';
import { pretrainedModel } from '../../nn/pretrained.js';
import { trainAndSave } from '../../nn/stage_training.js';
import { filesFingerprint } from '../../nn/train_store.js';
import { artifact } from '../../pipeline/artifacts.js';
import { TableReader, readInfo } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError } from '../../pipeline/errors.js';
import { hashFile } from '../../pipeline/fsutil.js';
import { writeTrainingMetrics } from '../../pipeline/metrics_file.js';
import type { Params } from '../params.js';
import type { Stage } from '../../pipeline/stage.js';
import { CAM_KEYS, CAM_OUTPUTS, trainHash } from './io.js';
import { type TrainImage, type TrainResult, trainCam } from './train.js';

const INPUTS = { dataset: artifact('dataset'), images: artifact('images') } as const;

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections } from './params.js';

export const stage: Stage = {
  name: 'cam_train',
  summary: 'train a tag classifier -> models/cam',
  io: () => ({
    reads: [INPUTS.dataset, INPUTS.images],
    writes: [CAM_OUTPUTS.model],
    metrics: [CAM_OUTPUTS.trainMetrics],
    plots: [CAM_OUTPUTS.lossPlot],
    params: CAM_KEYS.trainParams,
  }),
  async run(ctx) {
    const r = await runCamTrain({ params: ctx.params, path: ctx.path });
    // Headline figures only; the losses are a plot, timings go to the run log.
    const { seconds: _s, trainImagesPerSecond: _t, peakRssMiB: _m, training, ...stable } = r;
    await writeTrainingMetrics(ctx.path(CAM_OUTPUTS.trainMetrics), ctx.path(CAM_OUTPUTS.lossPlot), stable, training.losses);
    if (!ctx.json) process.stderr.write(`${formatCamTrain(r)}\n`);
    return r as unknown as Record<string, unknown>;
  },
};

export interface CamTrainResult {
  backbone: string;
  optimizer: string;
  epochs: number;
  trainImages: number;
  classes: number;
  background: string | null;
  training: TrainResult;
  seconds: number;
  trainImagesPerSecond: number;
  peakRssMiB: number;
}

export interface RunCamTrainOptions {
  params: Params;
  path(rel: string): string;
  /**
   * Ids of the train split not trained on: the cv protocol's held-out fold (cli/cv.ts), so the
   * segmenter it starts from never saw the images it is scored on. Part of the training hash.
   */
  exclude?: readonly string[];
  /** Tests: stop training after this many epochs in this run (simulates a kill; no model). */
  stopAfter?: number;
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

/** The dataset's class map, after checking images.arrow against dataset.arrow. */
async function datasetClasses(o: RunCamTrainOptions): Promise<ClassMap> {
  const imagesFile = o.path(INPUTS.images);
  const info = await readInfo(imagesFile);
  const dsInfo = await readInfo(o.path(INPUTS.dataset));
  if (JSON.stringify(dsInfo.meta.classes) !== JSON.stringify(info.meta.classes) || dsInfo.numRows !== info.numRows) {
    throw new TagsegError(`${INPUTS.dataset} and ${INPUTS.images} disagree (classes or rows)`, { file: imagesFile, hint: 'rerun `tagseg run ingest`' });
  }
  const bg = info.meta.extra?.background;
  return classMap(info.meta.classes, typeof bg === 'number' ? bg : null);
}

/** Training images (train split, with a foreground tag, not excluded): their row positions and targets; pixels are streamed later. */
async function trainingRows(imagesFile: string, map: ClassMap, split: string, exclude: ReadonlySet<string>): Promise<{ positions: number[]; targets: Float32Array[] }> {
  const positions: number[] = [];
  const targets: Float32Array[] = [];
  const reader = await TableReader.open(imagesFile, { stage: 'ingest' });
  try {
    let pos = 0;
    for await (const row of reader.rows()) {
      const at = pos++;
      if (row.split !== split || exclude.has(row.id as string)) continue;
      const target = tagTarget(map, row.tags as number[], row.id as string);
      if (!target.some((v) => v > 0)) continue;
      positions.push(at);
      targets.push(target);
    }
  } finally {
    await reader.close();
  }
  if (positions.length === 0) throw new TagsegError(`no image of split '${split}' has a foreground tag`, { file: imagesFile, hint: 'check dataset.train_split' });
  return { positions, targets };
}

/**
 * The training hash of models/cam (recorded in its config): the training params, the data (the
 * images, the pretrained weights a MobileNet starts from) and the excluded ids, if any.
 */
export async function camTrainingHash(o: Pick<RunCamTrainOptions, 'params' | 'path' | 'exclude'>): Promise<string> {
  const cam = o.params.cam;
  const data = [await hashFile(o.path(INPUTS.images)), ...(cam.backbone === 'mobilenet' ? [await pretrainedFingerprint(cam.pretrained, o.path)] : [])];
  if (o.exclude?.length) data.push(`exclude:${createHash('sha256').update(JSON.stringify([...o.exclude].sort())).digest('hex')}`);
  return trainHash(o.params, data.join(':'));
}

export async function runCamTrain(o: RunCamTrainOptions): Promise<CamTrainResult> {
  const t0 = performance.now();
  await initBackend();
  const p = o.params;
  const cam = p.cam;
  const imagesFile = o.path(INPUTS.images);
  const map = await datasetClasses(o);
  const { positions, targets } = await trainingRows(imagesFile, map, p.dataset.train_split, new Set(o.exclude));
  const hash = await camTrainingHash(o);
  const training = await trainAndSave({
    module: import.meta.url,
    stage: 'cam_train', hash, epochs: cam.epochs, model: CAM_OUTPUTS.model, path: o.path, save: saveCamModel,
    build: async () => buildCamNet({
      format: CAM_MODEL_FORMAT, version: 1, backbone: await backboneConfig(cam.backbone, cam), classes: map.classes, background: map.background, outputs: map.outputs,
    }, p.seed, true),
    train: async (net, store) => {
      const rowReader = await RowReader.open(imagesFile, { stage: 'ingest' });
      const images = tableDataset<TrainImage>([rowReader], positions, ([row], i) => ({
        id: row.id as string, pixels: row.pixels as Uint8Array, height: row.height as number, width: row.width as number, target: targets[i],
      }));
      return trainCam({ net, images, cam, seed: p.seed, checkpointDir: store.checkpointDir, hash: store.key, stopAfter: o.stopAfter }).finally(() => rowReader.close());
    },
  });
  return {
    backbone: cam.backbone, optimizer: cam.optimizer, epochs: training.epochs, trainImages: positions.length, classes: map.outputs.length,
    background: map.background === null ? null : map.classes[map.background], training,
    seconds: (performance.now() - t0) / 1000, trainImagesPerSecond: training.imagesPerSecond, peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
  };
}

export function formatCamTrain(r: CamTrainResult): string {
  return [
    `cam_train: ${r.backbone}, ${r.optimizer}, ${r.epochs} epochs on ${r.trainImages} images (resumed from ${r.training.resumedFrom}), final loss ${r.training.losses.at(-1)?.toFixed(4) ?? '-'}`,
    `${r.trainImagesPerSecond.toFixed(1)} train images/s, ${r.seconds.toFixed(1)} s, peak RSS ${r.peakRssMiB} MiB`,
  ].join('\n');
}
