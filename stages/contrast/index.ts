/**
 * Stage `contrast` (RCA; methods.md section 3): the retrained classifier with its memory
 * (models/contrast, stage `contrast_train`, train_stage.ts) -> its refined CAMs, and those maps
 * propagated by the affinity stage's random walk.
 *
 * 1. Infer: for every row of cams.arrow (every split), refined CAMs multi-scale x flip (infer.ts),
 *    then the random walk with models/affinity and the walk settings stored in
 *    affinity_cams.arrow's metadata (maps/random_walk.ts walkImage) ->
 *    cache/contrast_cams.arrow (tables.ts), written row by row (maps/image_loop.ts).
 * 2. Evaluate in the same pass on the train split's masks, all four with one bg-threshold sweep
 *    (0.05..0.95, as the affinity stage) or argmax over the tags without a background class:
 *    metrics/contrast.json { cam, random_walk, rca, rca_random_walk }.
 * No saliency maps (RCA's published masks use them): the random walk takes their place.
 * Only `contrast.scales`, `.flip`, `.dtype` (and the split scored) are its params (io.ts).
 */
import { type MapScores, ThresholdSweep, summarizeSweep } from '../../maps/evaluate.js';
import { decodeFloat16, decodeFloat32, encodeFloat16, encodeFloat32 } from '../../maps/f16.js';
import { runImageLoop } from '../../maps/image_loop.js';
import { type ClassMap, classMap } from '../../maps/labels.js';
import { CAM_STRIDE } from '../../maps/multiscale.js';
import { type WalkSettings, walkImage } from '../../maps/random_walk.js';
import { type AffinityNet, loadAffinityModel } from '../../nn/affinity_net.js';
import { loadTrainedModel } from '../../nn/stage_training.js';
import { neighbourOffsets } from '../../ops/randomwalk.js';
import { artifact } from '../../pipeline/artifacts.js';
import { type Row, type TableInfo, readInfo } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError } from '../../pipeline/errors.js';
import { classPlotRows, headline, iouFigures, writeJsonMetrics } from '../../pipeline/metrics_file.js';
import { paramsHash } from '../../pipeline/params_core.js';
import type { Params } from '../params.js';
import { type Shard, shardMetricsFile, shardsToRun, tableShards, wholeRun } from '../../pipeline/shard.js';
import type { Stage } from '../../pipeline/stage.js';
import { computeRcaCams } from './infer.js';
import { CONTRAST_KEYS, CONTRAST_OUTPUTS } from './io.js';
import { type ContrastNet, loadContrastModel } from './net.js';
import { contrastColumns } from './tables.js';

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections } from './params.js';

/** bg thresholds 0.05, 0.10, ..., 0.95 (the affinity stage's sweep, so the figures compare). */
const SWEEP: number[] = Array.from({ length: 19 }, (_, i) => Math.round((i + 1) * 5) / 100);
const INPUTS = { images: artifact('images'), cams: artifact('cams'), affinityCams: artifact('affinityCams'), affinityModel: artifact('affinityModel') } as const;
const STEPS = ['cam', 'random_walk', 'rca', 'rca_random_walk'] as const;
type Step = (typeof STEPS)[number];

export const stage: Stage = {
  name: 'contrast',
  summary: 'refined CAMs of every image from models/contrast, random-walked -> cache/contrast_cams.arrow',
  io: () => ({
    reads: [INPUTS.images, INPUTS.cams, INPUTS.affinityCams, CONTRAST_OUTPUTS.model, INPUTS.affinityModel],
    writes: [CONTRAST_OUTPUTS.cams],
    metrics: [CONTRAST_OUTPUTS.metrics],
    plots: [CONTRAST_OUTPUTS.classesPlot],
    params: CONTRAST_KEYS.mapParams,
  }),
  sharded: tableShards('contrast.shards', CONTRAST_OUTPUTS.cams, CONTRAST_OUTPUTS.metrics),
  async run(ctx) {
    const r = await runContrast({ params: ctx.params, path: ctx.path, shard: ctx.shard });
    // Headline figures only; per-class IoU is a plot, timings go to the run log.
    const { seconds: _s, inferSecondsPerImage: _i, peakRssMiB: _m, ...stable } = r;
    await writeJsonMetrics(ctx.path(shardMetricsFile(CONTRAST_OUTPUTS.metrics, ctx.shard)), { ...stable, ...Object.fromEntries(STEPS.map((k) => [k, headline(r[k])])) });
    // Plots need every image: a whole run only (one shard's part has its own metrics file).
    if (wholeRun(ctx.shard)) await writeJsonMetrics(ctx.path(CONTRAST_OUTPUTS.classesPlot), classPlotRows(Object.fromEntries(STEPS.map((k) => [k, iouFigures(r[k].iou)]))));
    if (!ctx.json) process.stderr.write(`${formatContrast(r)}\n`);
    return r as unknown as Record<string, unknown>;
  },
};

export interface ContrastRunResult extends Record<Step, MapScores> {
  rows: number;
  seconds: number;
  inferSecondsPerImage: number;
  peakRssMiB: number;
}

export interface RunContrastOptions {
  params: Params;
  path(rel: string): string;
  /** Only this shard (of contrast.shards); default every shard in turn. */
  shard?: Shard;
}

const decodeMaps = (bytes: Uint8Array, dtype: string): Float32Array => (dtype === 'float16' ? decodeFloat16(bytes) : decodeFloat32(bytes));
const dtypeOf = (info: TableInfo) => (info.meta.extra?.dtype === 'float32' ? 'float32' : 'float16');

/** The walk settings the affinity stage used, from affinity_cams.arrow's metadata (checked). */
function walkOf(affInfo: TableInfo, background: number | null, file: string): WalkSettings {
  const { radius, beta, logt, alpha } = affInfo.meta.extra ?? {};
  if (typeof radius !== 'number' || typeof beta !== 'number' || typeof logt !== 'number') {
    throw new TagsegError('affinity_cams.arrow metadata lacks the random walk settings (radius, beta, logt)', { file, hint: 'rerun `tagseg run affinity`' });
  }
  const bgAlpha = background === null ? null : typeof alpha === 'number' ? alpha : null;
  if (background !== null && bgAlpha === null) throw new TagsegError('affinity_cams.arrow metadata lacks alpha (the bg exponent)', { file });
  return { offsets: neighbourOffsets(radius), radius, beta, logt, alpha: bgAlpha };
}

export async function runContrast(o: RunContrastOptions): Promise<ContrastRunResult> {
  const t0 = performance.now();
  await initBackend();
  const [camsInfo, affInfo, imgInfo] = await Promise.all([INPUTS.cams, INPUTS.affinityCams, INPUTS.images].map((f) => readInfo(o.path(f))));
  const camsFile = o.path(INPUTS.cams);
  if (camsInfo.meta.extra?.stride !== CAM_STRIDE) throw new TagsegError(`cams.arrow has stride ${String(camsInfo.meta.extra?.stride)}, the contrast stage needs ${CAM_STRIDE}`, { file: camsFile });
  if (camsInfo.numRows !== imgInfo.numRows || affInfo.numRows !== camsInfo.numRows) {
    throw new TagsegError('cams.arrow, affinity_cams.arrow and images.arrow have different row counts', { file: o.path(INPUTS.affinityCams), hint: 'rerun `tagseg repro contrast`' });
  }
  const bg = camsInfo.meta.extra?.background;
  const map = classMap(camsInfo.meta.classes, typeof bg === 'number' ? bg : null);
  const walk = walkOf(affInfo, map.background, o.path(INPUTS.affinityCams));
  const loaded = { path: o.path, classes: map.classes };
  const net = await loadTrainedModel(CONTRAST_OUTPUTS.model, { ...loaded, trainStage: 'contrast_train', load: loadContrastModel, classesOf: (n) => n.config.cam.classes });
  try {
    const aff = await loadTrainedModel(INPUTS.affinityModel, { ...loaded, trainStage: 'affinity_train', load: loadAffinityModel, classesOf: (n) => n.config.cam.classes });
    try {
      return await rcaMaps(o, { net, aff, map, walk, camsDtype: dtypeOf(camsInfo), affDtype: dtypeOf(affInfo), rows: camsInfo.numRows, t0 });
    } finally {
      aff.dispose();
    }
  } finally {
    net.dispose();
  }
}

interface RcaContext { net: ContrastNet; aff: AffinityNet; map: ClassMap; walk: WalkSettings; camsDtype: string; affDtype: string; rows: number; t0: number }

/** contrast_cams.arrow's columns and metadata: the settings its maps were made with (the walk's, without its offsets). */
function contrastTableOut(o: RunContrastOptions, x: RcaContext) {
  const c = o.params.contrast;
  const dtype = c.dtype;
  const { offsets: _o, ...walkMeta } = x.walk;
  return {
    file: o.path(CONTRAST_OUTPUTS.cams), columns: contrastColumns(dtype), meta: {
      stage: 'contrast', paramsHash: paramsHash(o.params, CONTRAST_KEYS.mapParams), classes: x.map.classes,
      extra: {
        background: x.map.background, stride: CAM_STRIDE, dtype, scales: c.scales, flip: c.flip, model: CONTRAST_OUTPUTS.model,
        affinity_model: INPUTS.affinityModel, cams: INPUTS.cams, beta: walkMeta.beta, logt: walkMeta.logt, alpha: walkMeta.alpha, radius: walkMeta.radius,
      },
    },
  };
}

/** The per-image loop: refined CAMs, their random walk, the four scores; written to contrast_cams.arrow. */
async function rcaMaps(o: RunContrastOptions, x: RcaContext): Promise<ContrastRunResult> {
  const c = o.params.contrast;
  const dtype = c.dtype;
  const encode = (m: Float32Array) => (dtype === 'float16' ? encodeFloat16(m) : encodeFloat32(m));
  const sweeps = Object.fromEntries(STEPS.map((k) => [k, new ThresholdSweep(x.map.classes.length, x.map.background, SWEEP)])) as Record<Step, ThresholdSweep>;
  let inferSeconds = 0;
  const rows = await runImageLoop({
    label: 'contrast maps', rows: x.rows, concurrency: 2,
    shards: { n: c.shards, run: shardsToRun(c.shards, o.shard, 'contrast.shards') },
    tables: [['ingest', INPUTS.images], ['cam', INPUTS.cams], ['affinity', INPUTS.affinityCams]].map(([stage, name]) => ({ file: o.path(name), stage, name })),
    out: contrastTableOut(o, x),
    compute: async ([ir, cr]) => {
      const [H, W, h, w] = [ir.height as number, ir.width as number, cr.height as number, cr.width as number];
      const tags = cr.tags as number[];
      const i0 = performance.now();
      const r = await computeRcaCams(x.net, x.map, ir.pixels as Uint8Array, H, W, tags, { scales: c.scales, flip: c.flip });
      if (r.height !== h || r.width !== w) throw new TagsegError(`contrast: maps of '${String(cr.id)}' are ${r.height} x ${r.width}, cams.arrow says ${h} x ${w}`, { file: o.path(INPUTS.cams) });
      const camBytes = encode(r.maps);
      const stored = decodeMaps(camBytes, dtype);
      const rw = await walkImage(x.aff, ir.pixels as Uint8Array, H, W, stored, tags.length, h, w, x.walk);
      inferSeconds += (performance.now() - i0) / 1000;
      return { camBytes, stored, rwBytes: encode(rw.maps) };
    },
    consume: ([ir, cr, ar], r) => {
      const [H, W, h, w] = [ir.height as number, ir.width as number, cr.height as number, cr.width as number];
      const tags = cr.tags as number[];
      if (cr.split === o.params.dataset.train_split && ir.mask) {
        const add = (k: Step, maps: Float32Array) => sweeps[k].addStrided(maps, tags, h, w, ir.mask as Uint8Array, H, W);
        add('cam', decodeMaps(cr.cams as Uint8Array, x.camsDtype));
        add('random_walk', decodeMaps(ar.cams as Uint8Array, x.affDtype));
        add('rca', r.stored);
        add('rca_random_walk', decodeMaps(r.rwBytes, dtype));
      }
      return { id: cr.id, split: cr.split, tags, height: h, width: w, image_height: H, image_width: W, cams: r.camBytes, propagated: r.rwBytes } as Row;
    },
  });
  const scores = Object.fromEntries(STEPS.map((k) => [k, summarizeSweep(sweeps[k].result(), x.map.classes)])) as Record<Step, MapScores>;
  return {
    ...scores, rows, seconds: (performance.now() - x.t0) / 1000, inferSecondsPerImage: rows > 0 ? inferSeconds / rows : 0,
    peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
  };
}

export function formatContrast(r: ContrastRunResult): string {
  const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : (100 * v).toFixed(1));
  const at = (s: MapScores) => (s.threshold === null ? '' : ` @${s.threshold}`);
  return [
    `mIoU on ${r.rca.images} train images: CAM ${pct(r.cam.miou)}${at(r.cam)} -> RCA ${pct(r.rca.miou)}${at(r.rca)}; random walk ${pct(r.random_walk.miou)}${at(r.random_walk)} -> RCA + random walk ${pct(r.rca_random_walk.miou)}${at(r.rca_random_walk)}`,
    `inference ${(1000 * r.inferSecondsPerImage).toFixed(0)} ms/image, ${r.seconds.toFixed(1)} s, peak RSS ${r.peakRssMiB} MiB`,
  ].join('\n');
}
