/**
 * Stage `affinity_train`: CAMs -> affinity labels -> AffinityNet, models/affinity.
 *
 * 1. Labels: for each image of `dataset.train_split`, affinity labels (labels.ts,
 *    image_labels.ts) from its CAMs in cache/cams.arrow on the stride-4 grid of that file (IRN:
 *    1/4 resolution), optionally refined by the dense CRF (`affinity.crf`).
 * 2. Train (train.ts): the backbone of models/cam + a new AffinityHead (nn/affinity_head.ts),
 *    balanced loss, checkpoint per epoch in the checkpoint store,
 *    .tagseg/checkpoints/affinity_train/ (an unfinished run is resumed when its key,
 *    `affinityTrainHash` (io.ts) + the code, matches); the final model -> models/affinity
 *    (config.json + weights/, nn/affinity_net.ts), after which the store is emptied;
 *    metrics/affinity_train.json and plots/affinity_loss.json.
 * The random walk with the trained net is the next stage, `affinity` (index.ts).
 */
import { joinedRows } from '../../maps/image_loop.js';
import { decodeFloat16, decodeFloat32 } from '../../maps/f16.js';
import { affinityNetFromCam, saveAffinityModel } from '../../nn/affinity_net.js';
import { RowReader, tableDataset } from '../../nn/dataset.js';
import { trainAndSave } from '../../nn/stage_training.js';
import { artifact } from '../../pipeline/artifacts.js';
import { hashTable, readInfo } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError } from '../../pipeline/errors.js';
import { hashFile } from '../../pipeline/fsutil.js';
import { writeTrainingMetrics } from '../../pipeline/metrics_file.js';
import type { Params } from '../params.js';
import type { Stage } from '../../pipeline/stage.js';
import { type LabelSettings, imageAffinityLabels } from './image_labels.js';
import { AFFINITY_KEYS, AFFINITY_OUTPUTS, affinityTrainHash } from './io.js';
import { IGNORE } from './pairs.js';
import { type AffinityTrainImage, type AffinityTrainResult, LABEL_STRIDE, trainAffinity } from './train.js';

const INPUTS = { images: artifact('images'), cams: artifact('cams'), camModel: artifact('camModel') } as const;

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections } from './params.js';

export const stage: Stage = {
  name: 'affinity_train',
  summary: 'train AffinityNet on labels from the CAMs -> models/affinity',
  io: () => ({
    reads: [INPUTS.images, INPUTS.cams, INPUTS.camModel],
    writes: [AFFINITY_OUTPUTS.model],
    metrics: [AFFINITY_OUTPUTS.trainMetrics],
    plots: [AFFINITY_OUTPUTS.lossPlot],
    params: AFFINITY_KEYS.trainParams,
  }),
  async run(ctx) {
    const r = await runAffinityTrain({ params: ctx.params, path: ctx.path });
    // Headline figures only; the losses are a plot, timings go to the run log.
    const { seconds: _s, peakRssMiB: _m, training, ...stable } = r;
    await writeTrainingMetrics(ctx.path(AFFINITY_OUTPUTS.trainMetrics), ctx.path(AFFINITY_OUTPUTS.lossPlot), stable, training.losses);
    if (!ctx.json) process.stderr.write(`${formatAffinityTrain(r)}\n`);
    return r as unknown as Record<string, unknown>;
  },
};

export interface AffinityTrainRunResult {
  epochs: number;
  trainImages: number;
  /** Fraction of label-grid cells of the training images that got a label (not 255). */
  labelledFraction: number;
  crf: boolean;
  training: AffinityTrainResult;
  seconds: number;
  peakRssMiB: number;
}

export interface RunAffinityTrainOptions {
  params: Params;
  path(rel: string): string;
}

type Labelled = { id: string; height: number; width: number; labels: Uint8Array; position: number };

/** The cams.arrow facts training needs: its background class and dtype, after checking it against images.arrow. */
async function camsTable(camsFile: string, imagesFile: string): Promise<{ background: number | null; dtype: 'float16' | 'float32' }> {
  const camsInfo = await readInfo(camsFile);
  const extra = camsInfo.meta.extra ?? {};
  if (extra.stride !== LABEL_STRIDE) throw new TagsegError(`cams.arrow has stride ${String(extra.stride)}, the affinity stage needs ${LABEL_STRIDE}`, { file: camsFile });
  if (camsInfo.numRows !== (await readInfo(imagesFile)).numRows) throw new TagsegError('cams.arrow and images.arrow have different row counts', { file: camsFile, hint: 'rerun `tagseg run cam`' });
  return { background: typeof extra.background === 'number' ? extra.background : null, dtype: extra.dtype === 'float32' ? 'float32' : 'float16' };
}

/**
 * Affinity labels of the train split's images (both tables are in the same row order): the
 * labels (stride 4, 1/48 of the pixels' bytes) in memory, the pixels streamed during training.
 */
async function trainingLabels(o: RunAffinityTrainOptions, s: LabelSettings, dtype: string): Promise<{ train: Labelled[]; labelledFraction: number }> {
  const train: Labelled[] = [];
  let labelled = 0;
  let cells = 0;
  let position = 0;
  for await (const [ir, cr] of joinedRows([{ file: o.path(INPUTS.images), stage: 'ingest', name: INPUTS.images }, { file: o.path(INPUTS.cams), stage: 'cam', name: INPUTS.cams }])) {
    const at = position++;
    if (cr.split !== o.params.dataset.train_split) continue;
    const [H, W] = [ir.height as number, ir.width as number];
    const cams = dtype === 'float16' ? decodeFloat16(cr.cams as Uint8Array) : decodeFloat32(cr.cams as Uint8Array);
    const labels = imageAffinityLabels(cams, cr.tags as number[], cr.height as number, cr.width as number, { pixels: ir.pixels as Uint8Array, height: H, width: W }, s, LABEL_STRIDE);
    for (const v of labels) if (v !== IGNORE) labelled++;
    cells += labels.length;
    train.push({ id: ir.id as string, height: H, width: W, labels, position: at });
  }
  if (train.length === 0) throw new TagsegError(`no image of split '${o.params.dataset.train_split}' in cams.arrow`, { file: o.path(INPUTS.cams), hint: 'check dataset.train_split' });
  return { train, labelledFraction: cells > 0 ? labelled / cells : 0 };
}

export async function runAffinityTrain(o: RunAffinityTrainOptions): Promise<AffinityTrainRunResult> {
  const t0 = performance.now();
  await initBackend();
  const p = o.params;
  const a = p.affinity;
  const [camsFile, imagesFile] = [o.path(INPUTS.cams), o.path(INPUTS.images)];
  const { background, dtype } = await camsTable(camsFile, imagesFile);
  const { train, labelledFraction } = await trainingLabels(o, { background, confFg: a.conf_fg, confBg: a.conf_bg, margin: a.margin, floor: a.floor, crf: a.crf }, dtype);
  const trainImages = train.length;
  // the data: CAM labels (cams.arrow by its rows, however sharded), images, and the CAM model whose backbone the network starts from
  const camWeights = `${o.path(INPUTS.camModel)}/weights/weights.bin`;
  const hash = affinityTrainHash(p, `${await hashTable(camsFile)}:${await hashFile(imagesFile)}:${await hashFile(camWeights)}`, background);
  const training = await trainAndSave({
    module: import.meta.url,
    stage: 'affinity_train', hash, epochs: a.epochs, model: AFFINITY_OUTPUTS.model, path: o.path, save: saveAffinityModel,
    build: () => affinityNetFromCam(o.path(INPUTS.camModel), { dim: a.dim, radius: a.radius, stride: LABEL_STRIDE, seed: p.seed, levels: a.levels, reduce: a.reduce }),
    train: async (net, store) => {
      const rowReader = await RowReader.open(imagesFile, { stage: 'ingest' });
      const images = tableDataset<AffinityTrainImage>([rowReader], train.map((t) => t.position), ([row], i) => ({ ...train[i], pixels: row.pixels as Uint8Array }));
      return trainAffinity({ net, images, sizes: train, affinity: a, background, seed: p.seed, checkpointDir: store.checkpointDir, hash: store.key })
        .finally(() => rowReader.close());
    },
  });
  return {
    epochs: training.epochs, trainImages, labelledFraction, crf: a.crf, training,
    seconds: (performance.now() - t0) / 1000, peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
  };
}

export function formatAffinityTrain(r: AffinityTrainRunResult): string {
  const pct = (v: number) => (100 * v).toFixed(1);
  return [
    `affinity_train: ${r.epochs} epochs on ${r.trainImages} images (resumed from ${r.training.resumedFrom}), crop ${r.training.crop}, final loss ${r.training.losses.at(-1)?.toFixed(4) ?? '-'}, ${pct(r.labelledFraction)}% of label cells confident${r.crf ? ' (CRF)' : ''}`,
    `${r.training.imagesPerSecond.toFixed(1)} train images/s, ${r.seconds.toFixed(1)} s, peak RSS ${r.peakRssMiB} MiB`,
  ].join('\n');
}
