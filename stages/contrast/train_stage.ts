/**
 * Stage `contrast_train` (RCA, regional semantic contrast and aggregation; methods.md section 3):
 * the CAM classifier retrained with a dataset-level regional memory -> models/contrast.
 *
 * ContrastNet (net.ts) from models/cam on the tags of `dataset.train_split`; region masks from the
 * coarse CAM (RCA) or from affinity_cams.arrow (`contrast.region`); memory queues + k-means
 * centroids (memory.ts), InfoNCE (contrastive.ts), aggregation (aggregate.ts); checkpoint per
 * epoch in the checkpoint store, .tagseg/checkpoints/contrast_train/ (an unfinished run is resumed
 * when its key, `contrastTrainHash` (io.ts) + the code, matches); the final model with its memory
 * -> models/contrast, after which the store is emptied; metrics/contrast_train.json and
 * plots/contrast_loss.json. The maps computed from it are the next stage, `contrast` (index.ts).
 */
import { decodeFloat16, decodeFloat32 } from '../../maps/f16.js';
import { joinedRows } from '../../maps/image_loop.js';
import { type ClassMap, classMap, tagTarget } from '../../maps/labels.js';
import { type JoinSource, RowReader, joinDataset } from '../../nn/dataset.js';
import { trainAndSave } from '../../nn/stage_training.js';
import { artifact } from '../../pipeline/artifacts.js';
import { type Row, hashTable, readInfo } from '../../pipeline/arrow.js';
import { hashFile } from '../../pipeline/fsutil.js';
import { PartPositions, tableShardCount } from '../../pipeline/shard.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError } from '../../pipeline/errors.js';
import { writeTrainingMetrics } from '../../pipeline/metrics_file.js';
import type { Params } from '../params.js';
import type { Stage } from '../../pipeline/stage.js';
import { CONTRAST_KEYS, CONTRAST_OUTPUTS, contrastTrainHash } from './io.js';
import { contrastNetFromCam, saveContrastModel } from './net.js';
import { type ContrastTrainImage, type ContrastTrainResult, trainContrast } from './train.js';

const INPUTS = { images: artifact('images'), cams: artifact('cams'), affinityCams: artifact('affinityCams'), camModel: artifact('camModel') } as const;

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections } from './params.js';

export const stage: Stage = {
  name: 'contrast_train',
  summary: 'retrain the CAM classifier with a regional memory (RCA) -> models/contrast',
  io: () => ({
    reads: [INPUTS.images, INPUTS.cams, INPUTS.affinityCams, INPUTS.camModel],
    writes: [CONTRAST_OUTPUTS.model],
    metrics: [CONTRAST_OUTPUTS.trainMetrics],
    plots: [CONTRAST_OUTPUTS.lossPlot],
    params: CONTRAST_KEYS.trainParams,
  }),
  async run(ctx) {
    const r = await runContrastTrain({ params: ctx.params, path: ctx.path });
    // Headline figures only (settings are params); the loss curve is a plot. Timings, and the contrast
    // losses / memory counts that cover only this run's epochs (not pure after a resume), go to the run log.
    const { seconds: _s, peakRssMiB: _m, training, settings: _set, ...stable } = r;
    await writeTrainingMetrics(ctx.path(CONTRAST_OUTPUTS.trainMetrics), ctx.path(CONTRAST_OUTPUTS.lossPlot), stable, training.losses);
    if (!ctx.json) process.stderr.write(`${formatContrastTrain(r)}\n`);
    return r as unknown as Record<string, unknown>;
  },
};

export interface ContrastTrainRunResult {
  epochs: number;
  trainImages: number;
  settings: Pick<Params['contrast'], 'region' | 'pooling' | 'memory_size' | 'memory_update' | 'similarity' | 'aggregation' | 'contrast_weight' | 'contrast_from'>;
  training: ContrastTrainResult;
  seconds: number;
  peakRssMiB: number;
}

export interface RunContrastTrainOptions {
  params: Params;
  path(rel: string): string;
  /** Tests: stop training after this many epochs in this run (simulates a kill; no model). */
  stopAfter?: number;
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

/** position: the image's row in images.arrow; affPosition: its row in affinity_cams.arrow (a part folder's order is by shard). */
type TrainRow = { position: number; affPosition: number; tags: number[]; target: Float32Array; h: number; w: number };

/** Training images (train split, with a foreground tag): row positions and targets; pixels and region maps are streamed later. */
async function trainingRows(o: RunContrastTrainOptions, map: ClassMap): Promise<TrainRow[]> {
  const train: (Omit<TrainRow, 'affPosition'> & { affAt: { k: number; i: number } })[] = [];
  let position = 0;
  const affRows = new PartPositions(await tableShardCount(o.path(INPUTS.affinityCams)));
  const joined = [['ingest', INPUTS.images], ['cam', INPUTS.cams], ['affinity', INPUTS.affinityCams]].map(([stage, name]) => ({ file: o.path(name), stage, name }));
  for await (const [, cr] of joinedRows(joined)) {
    const at = position++;
    const affAt = affRows.add(cr.id as string);
    if (cr.split !== o.params.dataset.train_split) continue;
    const tags = cr.tags as number[];
    const target = tagTarget(map, tags, cr.id as string);
    if (target.some((v) => v > 0)) train.push({ position: at, affAt, tags, target, h: cr.height as number, w: cr.width as number });
  }
  if (train.length === 0) throw new TagsegError(`no image of split '${o.params.dataset.train_split}' has a foreground tag`, { file: o.path(INPUTS.cams), hint: 'check dataset.train_split' });
  return train.map(({ affAt, ...t }) => ({ ...t, affPosition: affRows.position(affAt) }));
}

/** The dataset's class map and affinity_cams.arrow's dtype, after checking the three tables agree. */
async function tables(o: RunContrastTrainOptions): Promise<{ map: ClassMap; affDtype: string }> {
  const [camsInfo, affInfo, imgInfo] = await Promise.all([INPUTS.cams, INPUTS.affinityCams, INPUTS.images].map((f) => readInfo(o.path(f))));
  if (camsInfo.numRows !== imgInfo.numRows || affInfo.numRows !== camsInfo.numRows) {
    throw new TagsegError('cams.arrow, affinity_cams.arrow and images.arrow have different row counts', { file: o.path(INPUTS.affinityCams), hint: 'rerun `tagseg repro contrast_train`' });
  }
  const bg = camsInfo.meta.extra?.background;
  return { map: classMap(camsInfo.meta.classes, typeof bg === 'number' ? bg : null), affDtype: affInfo.meta.extra?.dtype === 'float32' ? 'float32' : 'float16' };
}

export async function runContrastTrain(o: RunContrastTrainOptions): Promise<ContrastTrainRunResult> {
  const t0 = performance.now();
  await initBackend();
  const p = o.params;
  const c = p.contrast;
  const [imagesFile, affFile] = [o.path(INPUTS.images), o.path(INPUTS.affinityCams)];
  const { map, affDtype } = await tables(o);
  const train = await trainingRows(o, map);
  // the data, and the CAM model the network starts from (map tables by their rows: the same however they were sharded)
  const mapTables = [o.path(INPUTS.cams), ...(c.region === 'affinity' ? [affFile] : [])];
  const data = [await hashFile(imagesFile), ...(await Promise.all(mapTables.map((f) => hashTable(f)))), await hashFile(`${o.path(INPUTS.camModel)}/weights/weights.bin`)];
  const hash = contrastTrainHash(p, data.join(':'));
  const training = await trainAndSave({
    module: import.meta.url,
    stage: 'contrast_train', hash, epochs: c.epochs, model: CONTRAST_OUTPUTS.model, path: o.path, save: saveContrastModel,
    build: () => contrastNetFromCam(o.path(INPUTS.camModel), {
      memorySize: c.memory_size, centroids: c.centroids, dim: c.dim, similarity: c.similarity, aggregation: c.aggregation, seed: p.seed,
    }),
    train: async (net, store) => {
      const aff = c.region === 'affinity' ? [{ reader: await RowReader.open(affFile, { stage: 'affinity' }), positions: train.map((t) => t.affPosition) }] : [];
      const sources: JoinSource[] = [{ reader: await RowReader.open(imagesFile, { stage: 'ingest' }), positions: train.map((t) => t.position) }, ...aff];
      const images = joinDataset<ContrastTrainImage>(sources, (rows, i) => {
        const [ir, ar] = rows as [Row, Row | undefined]; // every position is set: no null row
        const { tags, target, h, w } = train[i];
        const maps = ar ? (affDtype === 'float16' ? decodeFloat16(ar.cams as Uint8Array) : decodeFloat32(ar.cams as Uint8Array)) : null;
        const region = maps ? { maps: toOutputMaps(maps, tags, h, w, map), height: h, width: w } : undefined;
        return { id: ir.id as string, pixels: ir.pixels as Uint8Array, height: ir.height as number, width: ir.width as number, target, region };
      });
      return trainContrast({ net, images, contrast: c, seed: p.seed, checkpointDir: store.checkpointDir, hash: store.key, stopAfter: o.stopAfter })
        .finally(() => Promise.all(sources.map((s) => s.reader.close())));
    },
    // The memory the model is saved with is the one inference uses: summarise the final queues
    // (RCA's released model carries the centroids of its last epoch start; the final queue is newer).
    beforeSave: (net, t) => net.memory.summarize({ iters: c.kmeans_iters, seed: p.seed + t.epochs }),
  });
  const settings = {
    region: c.region, pooling: c.pooling, memory_size: c.memory_size, memory_update: c.memory_update, similarity: c.similarity,
    aggregation: c.aggregation, contrast_weight: c.contrast_weight, contrast_from: c.contrast_from,
  };
  return { epochs: training.epochs, trainImages: train.length, settings, training, seconds: (performance.now() - t0) / 1000, peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024) };
}

export function formatContrastTrain(r: ContrastTrainRunResult): string {
  const t = r.training;
  return [
    `contrast_train: ${r.epochs} epochs on ${r.trainImages} images (resumed from ${t.resumedFrom}), final loss ${t.losses.at(-1)?.toFixed(4) ?? '-'}, contrast loss ${t.contrastLosses.at(-1)?.toFixed(3) ?? '-'}, memory filled [${t.filled.join(', ')}]`,
    `${t.imagesPerSecond.toFixed(1)} train images/s, ${r.seconds.toFixed(1)} s, peak RSS ${r.peakRssMiB} MiB`,
  ].join('\n');
}
