/**
 * Stage `affinity`: the trained AffinityNet (models/affinity, stage `affinity_train`,
 * train_stage.ts) -> the CAMs random-walked -> cache/affinity_cams.arrow.
 *
 * 1. Walk: for every row of cams.arrow (every split), affinities in 'full' layout, random walk of
 *    [bg = (1 - max CAM)^alpha, CAMs] (PSA) or of the CAMs alone (no background class), beta and
 *    2^logt steps, at the radius the model was trained for (maps/random_walk.ts); each
 *    propagated fg channel divided by its max -> affinity_cams.arrow with the columns and metadata
 *    layout of cams.arrow (maps/cams_table.ts; fg channels only, so later stages read it exactly
 *    like cams.arrow), written row by row (maps/image_loop.ts).
 * 2. Evaluate (maps/evaluate.ts): mIoU of the CAMs and of the propagated maps on the train
 *    split's masks, computed the same way in the same pass (bg threshold sweep, or argmax over tags
 *    without a background class) -> metrics/affinity.json { cam, random_walk }; with a background
 *    class also `random_walk_bg`: PSA's argmax over the propagated [bg, fg] before normalisation.
 * Only `affinity.beta`, `.logt`, `.alpha` (and the split scored) are its params (io.ts).
 */
import { ConfusionMatrix, segmentationScores } from '../../eval/metrics.js';
import { camColumns } from '../../maps/cams_table.js';
import { type MapScores, ThresholdSweep, camLabels, resizeBilinear, summarizeSweep } from '../../maps/evaluate.js';
import { decodeFloat16, decodeFloat32, encodeFloat16, encodeFloat32 } from '../../maps/f16.js';
import { runImageLoop } from '../../maps/image_loop.js';
import { type WalkResult, type WalkSettings, walkImage } from '../../maps/random_walk.js';
import { loadAffinityModel } from '../../nn/affinity_net.js';
import { loadTrainedModel } from '../../nn/stage_training.js';
import { neighbourOffsets } from '../../ops/randomwalk.js';
import { artifact } from '../../pipeline/artifacts.js';
import { type Row, readInfo } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError } from '../../pipeline/errors.js';
import { classPlotRows, headline, iouFigures, writeJsonMetrics } from '../../pipeline/metrics_file.js';
import { paramsHash } from '../../pipeline/params_core.js';
import type { Params } from '../params.js';
import { type Shard, shardMetricsFile, shardsToRun, tableShards, wholeRun } from '../../pipeline/shard.js';
import type { Stage } from '../../pipeline/stage.js';
import { AFFINITY_KEYS, AFFINITY_OUTPUTS } from './io.js';

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections } from './params.js';

/** bg thresholds 0.05, 0.10, ..., 0.95. */
const SWEEP: number[] = Array.from({ length: 19 }, (_, i) => Math.round((i + 1) * 5) / 100);
const INPUTS = { images: artifact('images'), cams: artifact('cams') } as const;

export const stage: Stage = {
  name: 'affinity',
  summary: 'random-walk the CAMs with the trained AffinityNet -> cache/affinity_cams.arrow',
  io: () => ({
    reads: [INPUTS.images, INPUTS.cams, AFFINITY_OUTPUTS.model],
    writes: [AFFINITY_OUTPUTS.cams],
    metrics: [AFFINITY_OUTPUTS.metrics],
    plots: [AFFINITY_OUTPUTS.classesPlot],
    params: AFFINITY_KEYS.mapParams,
  }),
  sharded: tableShards('affinity.shards', AFFINITY_OUTPUTS.cams, AFFINITY_OUTPUTS.metrics),
  async run(ctx) {
    const r = await runAffinity({ params: ctx.params, path: ctx.path, shard: ctx.shard });
    // Headline figures only; per-class IoU is a plot, timings go to the run log.
    const { seconds: _s, walkSecondsPerImage: _w, peakRssMiB: _m, ...stable } = r;
    await writeJsonMetrics(ctx.path(shardMetricsFile(AFFINITY_OUTPUTS.metrics, ctx.shard)), { ...stable, cam: headline(r.cam), random_walk: headline(r.random_walk) });
    // Plots need every image: a whole run only (one shard's part has its own metrics file).
    if (wholeRun(ctx.shard)) await writeJsonMetrics(ctx.path(AFFINITY_OUTPUTS.classesPlot), classPlotRows({ cam: iouFigures(r.cam.iou), random_walk: iouFigures(r.random_walk.iou) }));
    if (!ctx.json) process.stderr.write(`${formatAffinity(r)}\n`);
    return r as unknown as Record<string, unknown>;
  },
};

export interface AffinityRunResult {
  cam: MapScores;
  random_walk: MapScores;
  random_walk_bg?: { miou: number | null; images: number };
  rows: number;
  seconds: number;
  walkSecondsPerImage: number;
  peakRssMiB: number;
}

export interface RunAffinityOptions {
  params: Params;
  path(rel: string): string;
  /** Only this shard (of affinity.shards); default every shard in turn. */
  shard?: Shard;
}

const decodeMaps = (bytes: Uint8Array, dtype: string): Float32Array => (dtype === 'float16' ? decodeFloat16(bytes) : decodeFloat32(bytes));

export async function runAffinity(o: RunAffinityOptions): Promise<AffinityRunResult> {
  const t0 = performance.now();
  await initBackend();
  const p = o.params;
  const [camsFile, imagesFile] = [o.path(INPUTS.cams), o.path(INPUTS.images)];
  const camsInfo = await readInfo(camsFile);
  if (camsInfo.numRows !== (await readInfo(imagesFile)).numRows) throw new TagsegError('cams.arrow and images.arrow have different row counts', { file: camsFile, hint: 'rerun `tagseg run cam`' });
  const extra = camsInfo.meta.extra ?? {};
  const background = typeof extra.background === 'number' ? extra.background : null;
  const dtype = extra.dtype === 'float32' ? 'float32' : 'float16';
  const classes = camsInfo.meta.classes;
  const net = await loadTrainedModel(AFFINITY_OUTPUTS.model, {
    path: o.path, trainStage: 'affinity_train', classes, load: loadAffinityModel, classesOf: (n) => n.config.cam.classes,
  });
  try {
    const { radius, stride } = net.config;
    if (extra.stride !== stride) throw new TagsegError(`cams.arrow has stride ${String(extra.stride)}, ${AFFINITY_OUTPUTS.model} was trained at ${stride}`, { file: camsFile });
    const walk: WalkSettings = { offsets: neighbourOffsets(radius), radius, beta: p.affinity.beta, logt: p.affinity.logt, alpha: background === null ? null : p.affinity.alpha };
    const scores = new WalkScores(classes, background, p.dataset.train_split, dtype);
    const rows = await runImageLoop({
      label: 'affinity random walk', rows: camsInfo.numRows, concurrency: 2,
      shards: { n: p.affinity.shards, run: shardsToRun(p.affinity.shards, o.shard, 'affinity.shards') },
      tables: [{ file: imagesFile, stage: 'ingest', name: INPUTS.images }, { file: camsFile, stage: 'cam', name: INPUTS.cams }],
      out: {
        file: o.path(AFFINITY_OUTPUTS.cams), columns: camColumns(dtype), meta: {
          stage: 'affinity', paramsHash: paramsHash(p, AFFINITY_KEYS.mapParams), classes,
          extra: { ...extra, stride, dtype, model: AFFINITY_OUTPUTS.model, cams: INPUTS.cams, beta: walk.beta, logt: walk.logt, alpha: walk.alpha, radius },
        },
      },
      compute: ([ir, cr]) => walkImage(net, ir.pixels as Uint8Array, ir.height as number, ir.width as number,
        decodeMaps(cr.cams as Uint8Array, dtype), (cr.tags as number[]).length, cr.height as number, cr.width as number, walk),
      consume: ([ir, cr], r) => scores.add(ir, cr, r),
    });
    return { ...scores.result(), rows, seconds: (performance.now() - t0) / 1000, walkSecondsPerImage: scores.walkSecondsPerImage(), peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024) };
  } finally {
    net.dispose();
  }
}

/**
 * The affinity stage's scores, fed in row order. One sweep for the CAMs and the walked maps,
 * wider than the cam stage's 0.05-0.60: propagated maps are smoother than CAMs, and their best
 * constant bg score lies higher (IRN's is 0.25 on its own scale).
 */
class WalkScores {
  private readonly camSweep: ThresholdSweep;
  private readonly rwSweep: ThresholdSweep;
  private readonly bgArgmax: ConfusionMatrix | null;
  private bgImages = 0;
  private walkSeconds = 0;
  private walked = 0;

  constructor(private readonly classes: string[], private readonly background: number | null, private readonly trainSplit: string, private readonly dtype: 'float16' | 'float32') {
    this.camSweep = new ThresholdSweep(classes.length, background, SWEEP);
    this.rwSweep = new ThresholdSweep(classes.length, background, SWEEP);
    this.bgArgmax = background === null ? null : new ConfusionMatrix(classes.length);
  }

  /** Score one image's walk; returns its affinity_cams.arrow row. */
  add(ir: Row, cr: Row, r: WalkResult): Row {
    const [H, W, h, w] = [ir.height as number, ir.width as number, cr.height as number, cr.width as number];
    const tags = cr.tags as number[];
    if (tags.length > 0) {
      this.walkSeconds += r.walkSeconds;
      this.walked++;
    }
    const bytes = this.dtype === 'float16' ? encodeFloat16(r.maps) : encodeFloat32(r.maps);
    if (cr.split === this.trainSplit && ir.mask) {
      const mask = ir.mask as Uint8Array;
      this.camSweep.addStrided(decodeMaps(cr.cams as Uint8Array, this.dtype), tags, h, w, mask, H, W);
      this.rwSweep.addStrided(this.dtype === 'float16' ? decodeFloat16(bytes) : r.maps, tags, h, w, mask, H, W);
      if (this.bgArgmax && this.background !== null) {
        const ids = [this.background, ...tags];
        const up = r.raw ? resizeBilinear(r.raw, ids.length, h, w, H, W) : new Float32Array(H * W);
        this.bgArgmax.add(r.raw ? camLabels(up, ids, H, W, null) : new Uint8Array(H * W).fill(this.background), mask);
        this.bgImages++;
      }
    }
    return { id: cr.id, split: cr.split, tags, height: h, width: w, image_height: H, image_width: W, cams: bytes };
  }

  result(): Pick<AffinityRunResult, 'cam' | 'random_walk' | 'random_walk_bg'> {
    const score = (s: ThresholdSweep): MapScores => summarizeSweep(s.result(), this.classes);
    return {
      cam: score(this.camSweep),
      random_walk: score(this.rwSweep),
      ...(this.bgArgmax ? { random_walk_bg: { miou: segmentationScores(this.bgArgmax).miou, images: this.bgImages } } : {}),
    };
  }

  walkSecondsPerImage(): number {
    return this.walked > 0 ? this.walkSeconds / this.walked : 0;
  }
}

export function formatAffinity(r: AffinityRunResult): string {
  const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : (100 * v).toFixed(1));
  const at = (s: MapScores) => (s.threshold === null ? '(argmax over tags)' : `(bg threshold ${s.threshold})`);
  return [
    `mIoU on ${r.cam.images} train images: CAM ${pct(r.cam.miou)} ${at(r.cam)} -> random walk ${pct(r.random_walk.miou)} ${at(r.random_walk)}${r.random_walk_bg ? `; PSA bg argmax ${pct(r.random_walk_bg.miou)}` : ''}`,
    `random walk ${(1000 * r.walkSecondsPerImage).toFixed(0)} ms/image, ${r.seconds.toFixed(1)} s, peak RSS ${r.peakRssMiB} MiB`,
  ].join('\n');
}
