/**
 * Stage `cam`: the trained classifier (models/cam, stage `cam_train`, train_stage.ts) -> class
 * activation maps of every image of every split.
 *
 * cache/images.arrow + models/cam in; multi-scale x flip CAMs (infer.ts), stored at stride 4
 * (maps/cams_table.ts) -> cache/cams.arrow; metrics/cam.json (CAM mIoU on the train split's masks,
 * classification mAP/F1 per split), plots/cam_threshold.json (mIoU against the constant
 * background threshold) and plots/cam_classes.json. Only `cam.scales`, `cam.flip`, `cam.dtype`
 * (and the split scored) are its params (io.ts), so changing them reruns this stage alone.
 *
 * float16 storage: on the default synthetic run the best mIoU from the float16 maps equals the
 * float32 one to 4 decimals (metrics/cam.json `cam.miou_float32` is computed alongside), and the
 * file is half the size, so float16 is the default.
 *
 * Memory: images.arrow is streamed row by row and cams.arrow written through TableWriter batches
 * (maps/image_loop.ts), so it is flat in the number of images.
 */
import { multiLabelScores } from '../../eval/metrics.js';
import { type CamsExtra, camColumns } from '../../maps/cams_table.js';
import { ThresholdSweep, summarizeSweep } from '../../maps/evaluate.js';
import { decodeFloat16, encodeFloat16, encodeFloat32 } from '../../maps/f16.js';
import { runImageLoop } from '../../maps/image_loop.js';
import { type ClassMap, classMap, foregroundTags, tagTarget } from '../../maps/labels.js';
import { CAM_STRIDE } from '../../maps/multiscale.js';
import { type CamNet, loadCamModel } from '../../nn/cam_net.js';
import { loadTrainedModel } from '../../nn/stage_training.js';
import { artifact } from '../../pipeline/artifacts.js';
import { type Row, readInfo } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { writeFileAtomic } from '../../pipeline/fsutil.js';
import { classPlotRows, headline, iouFigures, writeJsonMetrics } from '../../pipeline/metrics_file.js';
import { paramsHash } from '../../pipeline/params_core.js';
import type { Params } from '../params.js';
import { type Shard, shardMetricsFile, shardsToRun, tableShards, wholeRun } from '../../pipeline/shard.js';
import type { Stage } from '../../pipeline/stage.js';
import { CAM_KEYS, CAM_OUTPUTS } from './io.js';
import { type CamResult, computeCams } from './infer.js';

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections } from './params.js';

const INPUTS = { images: artifact('images') } as const;

export const stage: Stage = {
  name: 'cam',
  summary: 'class activation maps of every image from models/cam -> cache/cams.arrow',
  io: () => ({
    reads: [INPUTS.images, CAM_OUTPUTS.model],
    writes: [CAM_OUTPUTS.cams],
    metrics: [CAM_OUTPUTS.metrics],
    plots: [CAM_OUTPUTS.plot, CAM_OUTPUTS.classesPlot],
    params: CAM_KEYS.mapParams,
  }),
  sharded: tableShards('cam.shards', CAM_OUTPUTS.cams, CAM_OUTPUTS.metrics),
  async run(ctx) {
    const r = await runCam({ params: ctx.params, path: ctx.path, shard: ctx.shard });
    // Headline figures only; per-class IoU is a plot, timings go to the run log.
    const { seconds: _s, inferImagesPerSecond: _i, peakRssMiB: _m, ...stable } = r;
    await writeJsonMetrics(ctx.path(shardMetricsFile(CAM_OUTPUTS.metrics, ctx.shard)), { ...stable, cam: headline(r.cam) });
    // Plots need every image: a whole run only (one shard's part has its own metrics file).
    if (wholeRun(ctx.shard)) await writeJsonMetrics(ctx.path(CAM_OUTPUTS.classesPlot), classPlotRows({ cam: iouFigures(r.cam.iou) }));
    if (!ctx.json) process.stderr.write(`${formatCam(r)}\n`);
    return r as unknown as Record<string, unknown>;
  },
};

export interface SplitScores { images: number; mAP: number | null; macroF1: number | null; microF1: number | null }

export interface CamRunResult {
  cam: { miou: number | null; threshold: number | null; images: number; iou: Record<string, number | null>; miou_float32?: number | null; dtype: string };
  classification: Record<string, SplitScores>;
  rows: number;
  seconds: number;
  inferImagesPerSecond: number;
  peakRssMiB: number;
}

export interface RunCamOptions {
  params: Params;
  path(rel: string): string;
  /** Only this shard (of cam.shards); default every shard in turn. */
  shard?: Shard;
}

export async function runCam(o: RunCamOptions): Promise<CamRunResult> {
  const t0 = performance.now();
  await initBackend();
  const p = o.params;
  const cam = p.cam;
  const imagesFile = o.path(INPUTS.images);
  const info = await readInfo(imagesFile);
  const bg = info.meta.extra?.background;
  const map = classMap(info.meta.classes, typeof bg === 'number' ? bg : null);
  const net = await loadTrainedModel(CAM_OUTPUTS.model, {
    path: o.path, trainStage: 'cam_train', classes: map.classes, load: loadCamModel, classesOf: (n) => n.config.classes,
  });
  try {
    const scores = new CamScores(map, p.dataset.train_split, cam.dtype);
    const extra: CamsExtra = { background: map.background, stride: CAM_STRIDE, dtype: cam.dtype, scales: cam.scales, flip: cam.flip, model: CAM_OUTPUTS.model };
    const rows = await runImageLoop({
      label: 'cam maps', tables: [{ file: imagesFile, stage: 'ingest', name: INPUTS.images }], rows: info.numRows, concurrency: 2,
      shards: { n: cam.shards, run: shardsToRun(cam.shards, o.shard, 'cam.shards') },
      out: { file: o.path(CAM_OUTPUTS.cams), columns: camColumns(cam.dtype), meta: { stage: 'cam', paramsHash: paramsHash(p, CAM_KEYS.mapParams), classes: map.classes, extra: { ...extra } } },
      compute: ([row]) => camsOf(net, map, row, cam),
      consume: ([row], r) => scores.add(row, r),
    });
    const seconds = (performance.now() - t0) / 1000;
    const res = scores.result();
    if (wholeRun(o.shard)) await writeFileAtomic(o.path(CAM_OUTPUTS.plot), `${JSON.stringify(res.curve, null, 1)}\n`);
    return { ...res.scores, rows, seconds, inferImagesPerSecond: rows / seconds, peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024) };
  } finally {
    net.dispose();
  }
}

function camsOf(net: CamNet, map: ClassMap, row: Row, cam: Params['cam']): Promise<CamResult> {
  const tags = foregroundTags(map, row.tags as number[]);
  return computeCams(net, map, row.pixels as Uint8Array, row.height as number, row.width as number, tags, { scales: cam.scales, flip: cam.flip });
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/**
 * The cam stage's scores, fed in row order: the CAM threshold sweep on the train split's masks
 * (of the stored maps, and of the float32 maps beside float16 ones) and the classification scores
 * per split (held-out splits' tags are used for evaluation only, never for training).
 */
class CamScores {
  private readonly sweep: ThresholdSweep;
  private readonly sweep32?: ThresholdSweep;
  private readonly cls = new Map<string, { scores: Float32Array[]; labels: Float32Array[] }>();

  constructor(private readonly map: ClassMap, private readonly trainSplit: string, private readonly dtype: 'float16' | 'float32') {
    this.sweep = new ThresholdSweep(map.classes.length, map.background);
    if (dtype === 'float16') this.sweep32 = new ThresholdSweep(map.classes.length, map.background);
  }

  /** Score one image's maps; returns its cams.arrow row. */
  add(row: Row, r: CamResult): Row {
    const [H, W] = [row.height as number, row.width as number];
    const tags = foregroundTags(this.map, row.tags as number[]);
    const bytes = this.dtype === 'float16' ? encodeFloat16(r.maps) : encodeFloat32(r.maps);
    const split = row.split as string;
    if (split === this.trainSplit && row.mask) {
      const stored = this.dtype === 'float16' ? decodeFloat16(bytes) : r.maps;
      this.sweep.addStrided(stored, tags, r.height, r.width, row.mask as Uint8Array, H, W);
      this.sweep32?.addStrided(r.maps, tags, r.height, r.width, row.mask as Uint8Array, H, W);
    }
    let c = this.cls.get(split);
    if (!c) this.cls.set(split, (c = { scores: [], labels: [] }));
    c.scores.push(r.logits.map(sigmoid));
    c.labels.push(tagTarget(this.map, row.tags as number[], row.id as string));
    return { id: row.id, split, tags, height: r.height, width: r.width, image_height: H, image_width: W, cams: bytes };
  }

  result(): { scores: Pick<CamRunResult, 'cam' | 'classification'>; curve: { threshold: number | null; miou: number | null }[] } {
    const res = this.sweep.result();
    const classification: Record<string, SplitScores> = {};
    for (const [split, c] of [...this.cls].sort(([a], [b]) => a.localeCompare(b))) {
      const s = multiLabelScores(c.scores, c.labels);
      classification[split] = { images: c.scores.length, mAP: s.mAP, macroF1: s.macroF1, microF1: s.microF1 };
    }
    const cam = { ...summarizeSweep(res, this.map.classes), dtype: this.dtype, ...(this.sweep32 ? { miou_float32: this.sweep32.result().best.miou } : {}) };
    const curve = res.curve.map((pt) => ({ threshold: pt.threshold, miou: pt.miou === null ? null : Math.round(pt.miou * 1e4) / 1e4 }));
    return { scores: { cam, classification }, curve };
  }
}

export function formatCam(r: CamRunResult): string {
  const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : (100 * v).toFixed(1));
  const cls = Object.entries(r.classification).map(([s, c]) => `${s} mAP ${pct(c.mAP)} F1 ${pct(c.macroF1)}`).join(', ');
  return [
    `CAM mIoU ${pct(r.cam.miou)} on ${r.cam.images} ${r.cam.threshold === null ? '(argmax over tags)' : `images at bg threshold ${r.cam.threshold}`}${r.cam.miou_float32 !== undefined ? ` (float32 maps: ${pct(r.cam.miou_float32)})` : ''}`,
    `classification: ${cls}`,
    `${r.inferImagesPerSecond.toFixed(1)} CAM images/s, ${r.seconds.toFixed(1)} s, peak RSS ${r.peakRssMiB} MiB`,
  ].join('\n');
}
