/**
 * Stage `refine`: class maps -> pseudo-masks at the original image size.
 *
 * For every image of dataset.arrow (every split, in its order; map tables joined by id), with the maps of `refine.source`
 * (contrast: contrast_cams.arrow `propagated` = RCA + random walk; affinity: affinity_cams.arrow;
 * cam: cams.arrow) and the original image decoded from dataset.arrow's image_path (refine.ts):
 * 1. scores at the original size, background by a constant or (1 - max)^power, argmax over the
 *    tags without a background class (labels.ts);
 *    then refine.above's part order (order.ts: 'upper/lower' classes swap where the upper lies lower);
 * 2. dense CRF on the original RGB (ops/crf.ts: permutohedral lattice, Gaussian + bilateral, Potts,
 *    mean field; PSA's crf_inference with IRN's bilateral kernel, sxy 50 srgb 5, by default);
 * 3. ignore (255) where the ignore rule says the label is unsure (confidence.ts);
 * 4. flags: a tag with no pixel, an image that is mostly ignore (sanity.ts);
 * 5. cache/pseudo_masks.arrow (tables.ts) and outputs/pseudo_masks/<id>.png (export.ts).
 *    With refine.shards N > 1: a folder of parts, part-<k>-of-<N>.arrow and pseudo_masks/part-<k>-of-<N>/,
 *    one per shard (pipeline/shard.ts: the shard is a hash of the id); `--shard k/N` writes one.
 * Images are decoded and refined `refine.concurrency` at a time (pipeline/concurrency.ts orderedMap
 * keeps row order); the CRF is synchronous JS, so each image's runs in a worker thread (pool.ts, as many
 * threads as the concurrency and the machine's cores allow).
 * metrics/refine.json: the chain table (evaluate.ts: CAM -> random walk -> RCA -> RCA + random
 * walk -> pseudo-masks, all scored at the original size on the train split's masks), the
 * CRF/ignore ablation of the pseudo-masks, ignore fraction, flags, time and throughput.
 */
import { artifact } from '../../pipeline/artifacts.js';
import { decodeImage, readMask } from '../../data/decode.js';
import { resolveDatasetPath } from '../../data/manifest.js';
import { classPalette } from '../../data/palette.js';
import { ConfusionMatrix, segmentationScores } from '../../eval/metrics.js';
import { crfFromKeys } from '../../ops/crf.js';
import { type Row, type TableMeta, TableWriter, readAll, readInfo } from '../../pipeline/arrow.js';
import { joinedRows } from '../../pipeline/joined_rows.js';
import { orderedMap } from '../../pipeline/concurrency.js';
import { TagsegError } from '../../pipeline/errors.js';
import { exists } from '../../pipeline/fsutil.js';
import { log, progress } from '../../pipeline/log.js';
import { classPlotRows, writeJsonMetrics } from '../../pipeline/metrics_file.js';
import type { Params } from '../params.js';
import { paramsHash } from '../../pipeline/params_core.js';
import { type PartOutput, type Shard, SequentialParts, partName, partPath, prepareFolderFor, prepareTableFor, rowsByShard, shardMetricsFile, shardOf, shardsToRun, wholeRun } from '../../pipeline/shard.js';
import type { Stage } from '../../pipeline/stage.js';
import { decodeFloat16, decodeFloat32 } from '../../maps/f16.js';
import { ChainScorer, type ChainTable, type MapStep, stepScores, type StepScores } from './evaluate.js';
import { PngExport } from '../../data/mask_png.js';
import { resolveAbove } from './order.js';
import { RefinePool } from './pool.js';
import type { RefinedImage, RefineSettings } from './refine.js';
import { classPixelCounts, imageFlags } from './sanity.js';
import { PSEUDO_MASK_COLUMNS, REFINE_OUTPUTS, type RefineExtra, type RefineSource } from './tables.js';

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections } from './params.js';

const PARAMS = ['dataset.train_split', 'refine'];
export const REFINE_INPUTS = {
  dataset: artifact('dataset'),
  cams: artifact('cams'),
  affinity: artifact('affinityCams'),
  contrast: artifact('contrastCams'),
} as const;

/** The map tables: file, the stage that writes it, and the chain steps read from it (column -> step). */
const MAP_TABLES = {
  cam: { file: REFINE_INPUTS.cams, stage: 'cam', columns: { cams: 'cam' } },
  affinity: { file: REFINE_INPUTS.affinity, stage: 'affinity', columns: { cams: 'random_walk' } },
  contrast: { file: REFINE_INPUTS.contrast, stage: 'contrast', columns: { cams: 'rca', propagated: 'rca_random_walk' } },
} as const satisfies Record<RefineSource, { file: string; stage: string; columns: Record<string, MapStep> }>;

/** Where each `refine.source` takes its maps. */
export const SOURCE_MAPS: Record<RefineSource, { table: string; column: string }> = {
  contrast: { table: REFINE_INPUTS.contrast, column: 'propagated' },
  affinity: { table: REFINE_INPUTS.affinity, column: 'cams' },
  cam: { table: REFINE_INPUTS.cams, column: 'cams' },
};

export const stage: Stage = {
  name: 'refine',
  summary: 'class maps -> dense CRF -> pseudo-masks at the original size with ignore -> cache/pseudo_masks.arrow + outputs/pseudo_masks/*.png',
  io: (p) => ({
    // dataset.root: the original images (decoded at their own size for the CRF) and the masks.
    reads: [p.dataset.root, REFINE_INPUTS.dataset, REFINE_INPUTS.cams, REFINE_INPUTS.affinity, REFINE_INPUTS.contrast],
    writes: [REFINE_OUTPUTS.masks, REFINE_OUTPUTS.pngs],
    metrics: [REFINE_OUTPUTS.metrics],
    plots: [REFINE_OUTPUTS.classesPlot],
    params: PARAMS,
  }),
  sharded: {
    param: 'refine.shards',
    outputs: (s) => ({ writes: [partPath(REFINE_OUTPUTS.masks, s), pngFolder(s)], metrics: [metricsFile(s)] }),
  },
  async run(ctx) {
    const r = await runRefine({ params: ctx.params, path: ctx.path, shard: ctx.shard });
    await writeJsonMetrics(ctx.path(metricsFile(ctx.shard)), refineMetrics(r));
    // The per-class plot needs every image: a whole run only (one shard's part has its own metrics file).
    if (wholeRun(ctx.shard)) {
      const t = r.table;
      const perClass = { cam: t.cam, random_walk: t.random_walk, rca: t.rca, rca_random_walk: t.rca_random_walk, pseudo_masks: t.pseudo_masks };
      await writeJsonMetrics(ctx.path(REFINE_OUTPUTS.classesPlot), classPlotRows(Object.fromEntries(Object.entries(perClass).map(([k, s]) => [k, s?.classes]))));
    }
    if (!ctx.json) process.stderr.write(`${formatRefine(r)}\n`);
    return r as unknown as Record<string, unknown>;
  },
};

export interface RefineRunResult {
  source: RefineSource;
  /** Name of the background class, or null (argmax over the tags). */
  background: string | null;
  split: string;
  /** The chain, scored on `split`'s masks at the original size. */
  table: ChainTable;
  /** The pseudo-masks' own steps on the same images: the maps with refine's bg rule (no CRF), the CRF argmax (no ignore). */
  ablation: { maps: StepScores; crf: StepScores };
  settings: Omit<RefineExtra, 'background' | 'source' | 'maps'>;
  /** Rows written (every split). */
  images: number;
  /** Mean over every image of its ignore fraction, and of its mean margin. */
  ignore_fraction: number;
  mean_margin: number;
  flagged: { images: number; empty_tags: number; mostly_ignore: number };
  pngs: number;
  seconds: number;
  images_per_second: number;
  crf_seconds_per_image: number;
  concurrency: number;
  /** CRF threads used (pool.ts; 1 = the main thread). */
  threads: number;
}

export interface RunRefineOptions {
  params: Params;
  path(rel: string): string;
  /** Only this shard (of refine.shards); default every shard in turn. */
  shard?: Shard;
}

interface DatasetEntry { imagePath: string; maskPath: string | null; width: number; height: number }

/** One row of every map table that exists, for the same image. */
type Zipped = Partial<Record<RefineSource, Row>> & { cam: Row };

/** The map tables found (file, dtype) and cams.arrow's classes, background and row count. */
interface MapTables {
  present: Partial<Record<RefineSource, { file: string; dtype: 'float16' | 'float32' }>>;
  classes: string[];
  background: number | null;
  numRows: number;
}

/** An image refined by the pool, with its rows, original size and ground truth (train split only). */
interface Refined { z: Zipped; H: number; W: number; gt: Uint8Array | null; r: RefinedImage }

/** Refine every row of cams.arrow (or of one shard) in row order, writing each as it comes and tallying the chain table. */
export async function runRefine(o: RunRefineOptions): Promise<RefineRunResult> {
  const t0 = performance.now();
  const rp = o.params.refine;
  const maps = await openMapTables(o.path, rp.source);
  const dataset = await readDataset(o.path, o.params.dataset.root);
  const settings = refineSettings(rp, maps);
  const shards = shardsToRun(rp.shards, o.shard, 'refine.shards');
  const meta = { stage: 'refine', paramsHash: paramsHash(o.params, PARAMS), classes: maps.classes, extra: settings.extra as unknown as Record<string, unknown> };
  const outputs = await openOutputs(o.path, rp.shards, shards, meta, maps.background);
  const tally = new RefineTally(maps, o.params.dataset.train_split);
  const pool = new RefinePool(rp.concurrency);
  const threads = pool.size; // before close() empties the pool
  const work = (z: Zipped) => refineImage(z, { maps, dataset, split: tally.split, source: rp.source, pool, settings: settings.refine });
  const bar = progress('refine', imagesToRun(shards, rp.shards, maps.numRows, dataset.entries));
  const loopStart = performance.now();
  try {
    for await (const w of orderedMap(rowsByShard(shards, () => zipTables(dataset.file, maps.present), (x) => x.cam.id as string), work, { concurrency: rp.concurrency })) {
      const row = await writeRefined(w, await outputs.for(shardOf(w.z.cam.id as string, rp.shards)), maps.classes, rp.mostly_ignore);
      tally.add(w, row);
      bar.tick();
    }
    bar.stop();
    await outputs.finish();
  } catch (err) {
    bar.stop();
    await outputs.abort();
    throw err;
  } finally {
    await pool.close();
  }
  const loopSeconds = (performance.now() - loopStart) / 1000;
  return tally.result(rp, settings.reported, { seconds: (performance.now() - t0) / 1000, loopSeconds, threads });
}

/** One image of refineImages: its pseudo-mask and ground truth (null off the train split or without a mask), original size. */
export interface RefinedMask { id: string; mask: Uint8Array; gt: Uint8Array | null; height: number; width: number }

/**
 * Refine only the images `ids` (in dataset.arrow's order) and write nothing: the masks the stage
 * would write for them with `params.refine` (same maps, CRF and pool). The CV choice of refine
 * settings (cli/cv_pseudo.ts) scores its candidates this way, without rerunning the stage.
 */
export async function* refineImages(o: { params: Params; path(rel: string): string; ids: ReadonlySet<string> }): AsyncGenerator<RefinedMask> {
  const rp = o.params.refine;
  const maps = await openMapTables(o.path, rp.source, false);
  const dataset = await readDataset(o.path, o.params.dataset.root);
  const settings = refineSettings(rp, maps).refine;
  const pool = new RefinePool(rp.concurrency);
  const work = (z: Zipped) => refineImage(z, { maps, dataset, split: o.params.dataset.train_split, source: rp.source, pool, settings });
  async function* wanted(): AsyncGenerator<Zipped> {
    for await (const z of zipTables(dataset.file, maps.present)) if (o.ids.has(z.cam.id as string)) yield z;
  }
  try {
    for await (const w of orderedMap(wanted(), work, { concurrency: rp.concurrency })) {
      yield { id: w.z.cam.id as string, mask: w.r.mask, gt: w.gt, height: w.H, width: w.W };
    }
  } finally {
    await pool.close();
  }
}

/**
 * Check the map tables: cams.arrow is required (row order), the source's table too; the others only
 * feed the chain table (`chain` false: not opened).
 */
async function openMapTables(at: (rel: string) => string, source: RefineSource, chain = true): Promise<MapTables> {
  const out: MapTables = { present: {}, classes: [], background: null, numRows: 0 };
  for (const key of ['cam', 'affinity', 'contrast'] as const) {
    if (!chain && key !== 'cam' && key !== source) continue;
    const t = MAP_TABLES[key];
    const file = at(t.file);
    if (!(await exists(file))) {
      if (key === 'cam' || key === source) throw new TagsegError('table not found', { file, hint: `rerun \`tagseg run ${t.stage}\`` });
      log.warn(`refine: ${t.file} not found; its rows of the chain table stay empty`);
      continue;
    }
    const info = await readInfo(file);
    const extra = info.meta.extra ?? {};
    if (key === 'cam') {
      out.classes = info.meta.classes;
      out.background = typeof extra.background === 'number' ? extra.background : null;
      out.numRows = info.numRows;
    } else if (JSON.stringify(info.meta.classes) !== JSON.stringify(out.classes) || info.numRows !== out.numRows) {
      throw new TagsegError(`${t.file} and cams.arrow disagree (classes or row count)`, { file, hint: `rerun \`tagseg run ${t.stage}\`` });
    }
    if (key === 'contrast' && !info.columns.some((c) => c.name === 'propagated')) {
      throw new TagsegError("contrast_cams.arrow has no 'propagated' column", { file, hint: 'rerun `tagseg run contrast`' });
    }
    out.present[key] = { file, dtype: extra.dtype === 'float32' ? 'float32' : 'float16' };
  }
  return out;
}

/** dataset.arrow's images and masks by id: the originals the CRF runs on (paths relative to dataset.root). */
async function readDataset(at: (rel: string) => string, datasetRoot: string): Promise<{ file: string; entries: Map<string, DatasetEntry> }> {
  const file = at(REFINE_INPUTS.dataset);
  const entries = new Map<string, DatasetEntry>();
  const root = at(datasetRoot);
  for (const r of await readAll(file, { stage: 'ingest' })) {
    const mask = (r.mask_path as string | null) ?? null;
    entries.set(r.id as string, {
      imagePath: resolveDatasetPath(root, r.image_path as string), maskPath: mask === null ? null : resolveDatasetPath(root, mask), width: r.orig_width as number, height: r.orig_height as number,
    });
  }
  return { file, entries };
}

/** refine's params as the pool takes them, as the result reports them, and as the table's metadata records them. */
function refineSettings(rp: Params['refine'], maps: Pick<MapTables, 'classes' | 'background'>): { refine: RefineSettings; reported: RefineRunResult['settings']; extra: RefineExtra } {
  const { background } = maps;
  const refine: RefineSettings = {
    bg: { background, mode: rp.bg, threshold: rp.bg_threshold, power: rp.bg_power },
    crf: crfFromKeys(rp.crf),
    ignore: { rule: rp.ignore, margin: rp.ignore_margin },
    above: resolveAbove(rp.above, maps.classes, background),
  };
  const crf = refine.crf;
  const reported: RefineRunResult['settings'] = {
    bg: background === null ? null : { mode: rp.bg, threshold: rp.bg_threshold, power: rp.bg_power },
    crf: { iterations: crf.iterations, gaussian: { ...crf.gaussian! }, bilateral: { ...crf.bilateral! }, normalization: 'symmetric' },
    ignore: { rule: rp.ignore, margin: rp.ignore_margin },
    above: rp.above,
    mostly_ignore: rp.mostly_ignore,
  };
  return { refine, reported, extra: { background, source: rp.source, maps: SOURCE_MAPS[rp.source], ...reported } };
}

interface RefineOutput { writer: TableWriter; pngs: PngExport }

/** Each shard's table part and PNG folder, opened in turn and committed (or aborted) together. */
async function openOutputs(at: (rel: string) => string, n: number, shards: Shard[], meta: TableMeta, background: number | null): Promise<SequentialParts<RefineOutput & PartOutput>> {
  await prepareTableFor(at(REFINE_OUTPUTS.masks), n);
  if (n > 1) await prepareFolderFor(at(REFINE_OUTPUTS.pngs), n);
  return new SequentialParts(shards, async (s) => {
    const writer = await TableWriter.open(at(partPath(REFINE_OUTPUTS.masks, s)), PSEUDO_MASK_COLUMNS, meta, { batchRows: 64, batchBytes: 32 * 2 ** 20 });
    const pngs = await PngExport.open(at(pngFolder(s)), classPalette(background)).catch(async (err: unknown) => { await writer.abort(); throw err; });
    return {
      writer, pngs,
      commit: async () => { await writer.close(); await pngs.commit(); },
      abort: async () => { await writer.abort(); await pngs.abort(); },
    };
  });
}

/** Rows this run refines: every row, or those of the selected shards (for the progress bar). */
function imagesToRun(shards: Shard[], n: number, numRows: number, dataset: Map<string, DatasetEntry>): number {
  const selected = new Set(shards.map((s) => s.k));
  return selected.size === n ? numRows : [...dataset.keys()].filter((id) => selected.has(shardOf(id, n))).length;
}

/** A map column of `row` as float32 (the tables store float16 or float32). */
function decodeMaps(maps: MapTables, key: RefineSource, row: Row, column: string): Float32Array {
  const bytes = row[column] as Uint8Array;
  return maps.present[key]!.dtype === 'float16' ? decodeFloat16(bytes) : decodeFloat32(bytes);
}

interface ImageContext {
  maps: MapTables;
  dataset: { file: string; entries: Map<string, DatasetEntry> };
  split: string;
  source: RefineSource;
  pool: RefinePool;
  settings: RefineSettings;
}

/** Decode one image at its original size (and its mask, on the scored split) and refine its source maps in the pool. */
async function refineImage(z: Zipped, c: ImageContext): Promise<Refined> {
  const id = z.cam.id as string;
  const d = c.dataset.entries.get(id);
  if (!d) throw new TagsegError(`image '${id}' of cams.arrow is not in dataset.arrow`, { file: c.dataset.file, hint: 'rerun the pipeline from ingest' });
  const img = await decodeImage(d.imagePath, 0);
  if (img.width !== d.width || img.height !== d.height) {
    throw new TagsegError(`image is ${img.width}x${img.height}, dataset.arrow says ${d.width}x${d.height}`, { file: d.imagePath, hint: 'the dataset changed since ingest; rerun `tagseg run ingest`' });
  }
  const H = img.height;
  const W = img.width;
  const gt = z.cam.split === c.split && d.maskPath ? (await readMask(d.maskPath, W, H)).data : null;
  const src = z[c.source]!;
  const r = await c.pool.run({
    maps: decodeMaps(c.maps, c.source, src, SOURCE_MAPS[c.source].column), tags: src.tags as number[], h: src.height as number, w: src.width as number, rgb: img.rgb, H, W,
  }, c.settings);
  return { z, H, W, gt, r };
}

/** Write one pseudo-mask's row and PNG; returns its ignore fraction and flags (for the tally). */
async function writeRefined(w: Refined, out: RefineOutput, classes: string[], mostlyIgnore: number): Promise<{ ignoreFraction: number; flags: string[] }> {
  const { z, H, W, r } = w;
  const id = z.cam.id as string;
  const counts = classPixelCounts(r.mask, classes.length);
  const ignoreFraction = r.ignored / (H * W);
  const tags = z.cam.tags as number[];
  const flags = imageFlags({ tags, classPixels: counts, classes, ignoreFraction, mostlyIgnore });
  await out.writer.write({
    id, split: z.cam.split, height: H, width: W, tags, mask: r.mask, confidence: r.confidence,
    class_pixels: counts, ignore_fraction: ignoreFraction, mean_margin: r.meanMargin, flags,
  });
  await out.pngs.write(id, r.mask, W, H);
  return { ignoreFraction, flags };
}

/** Running totals over the refined images: the chain table and ablation (scored split), ignore, margins, flags, CRF time. */
class RefineTally {
  private readonly chain: ChainScorer;
  private readonly beforeCm: ConfusionMatrix;
  private readonly crfCm: ConfusionMatrix;
  private scored = 0;
  private rows = 0;
  private crfSeconds = 0;
  private crfImages = 0;
  private ignoreSum = 0;
  private marginSum = 0;
  private readonly flagged = { images: 0, empty_tags: 0, mostly_ignore: 0 };

  constructor(private readonly maps: MapTables, readonly split: string) {
    const steps = (Object.keys(maps.present) as RefineSource[]).flatMap((k) => Object.values(MAP_TABLES[k].columns) as MapStep[]);
    this.chain = new ChainScorer(maps.classes, maps.background, split, steps);
    this.beforeCm = new ConfusionMatrix(maps.classes.length);
    this.crfCm = new ConfusionMatrix(maps.classes.length);
  }

  add(w: Refined, row: { ignoreFraction: number; flags: string[] }): void {
    if (w.gt) this.score(w, w.gt);
    if (w.r.crfSeconds > 0) {
      this.crfSeconds += w.r.crfSeconds;
      this.crfImages++;
    }
    this.ignoreSum += row.ignoreFraction;
    this.marginSum += w.r.meanMargin;
    if (row.flags.length > 0) this.flagged.images++;
    this.flagged.empty_tags += row.flags.filter((f) => f.startsWith('empty:')).length;
    if (row.flags.includes('mostly_ignore')) this.flagged.mostly_ignore++;
    this.rows++;
  }

  /** Every map step of the chain, the pseudo-mask and its ablation steps against the image's ground truth. */
  private score({ z, H, W, r }: Refined, gt: Uint8Array): void {
    for (const key of Object.keys(this.maps.present) as RefineSource[]) {
      const row = z[key]!;
      for (const [column, step] of Object.entries(MAP_TABLES[key].columns) as [string, MapStep][]) {
        this.chain.addMaps(step, decodeMaps(this.maps, key, row, column), row.tags as number[], row.height as number, row.width as number, gt, H, W);
      }
    }
    this.chain.addPseudo(r.mask, gt);
    this.beforeCm.add(r.before, gt);
    this.crfCm.add(r.crf, gt);
    this.scored++;
  }

  /** The run's result, with its wall time, the loop's time and the CRF threads. */
  result(rp: Params['refine'], settings: RefineRunResult['settings'], time: { seconds: number; loopSeconds: number; threads: number }): RefineRunResult {
    const { classes, background } = this.maps;
    const rows = this.rows;
    if (this.scored === 0) log.warn(`refine: no image of split '${this.split}' has a ground-truth mask; the chain table is empty`);
    return {
      source: rp.source,
      background: background === null ? null : classes[background],
      split: this.split,
      table: this.chain.result(),
      ablation: {
        maps: stepScores(segmentationScores(this.beforeCm), classes, null, this.scored, this.split),
        crf: stepScores(segmentationScores(this.crfCm), classes, null, this.scored, this.split),
      },
      settings,
      images: rows,
      ignore_fraction: rows > 0 ? this.ignoreSum / rows : 0,
      mean_margin: rows > 0 ? this.marginSum / rows : 0,
      flagged: this.flagged,
      pngs: rows,
      seconds: time.seconds,
      images_per_second: time.loopSeconds > 0 ? rows / time.loopSeconds : 0,
      crf_seconds_per_image: this.crfImages > 0 ? this.crfSeconds / this.crfImages : 0,
      concurrency: rp.concurrency,
      threads: time.threads,
    };
  }
}

/** outputs/pseudo_masks, or its part-<k>-of-<N> folder for one shard. */
export function pngFolder(shard: Shard): string {
  return shard.n === 1 ? REFINE_OUTPUTS.pngs : `${REFINE_OUTPUTS.pngs}/${partName(shard)}`;
}

/** metrics/refine.json, or metrics/refine/part-<k>-of-<N>.json for a --shard run. */
export function metricsFile(shard: Shard | undefined): string {
  return shardMetricsFile(REFINE_OUTPUTS.metrics, shard);
}

/**
 * metrics/refine.json: the chain's headline figures (full-coverage mIoU first, then labelled-pixel
 * mIoU and coverage) and the pseudo-masks' shape. Per-class figures: plots/refine_classes.json;
 * timings and threads: the run log.
 */
export function refineMetrics(r: RefineRunResult): Record<string, unknown> {
  const head = (s: StepScores | null) => s && { miou: s.miou, miou_labelled: s.miou_labelled, coverage: s.coverage, threshold: s.threshold, images: s.images };
  const t = r.table;
  return {
    source: r.source, background: r.background, split: r.split, images: r.images,
    table: {
      cam: head(t.cam), random_walk: head(t.random_walk), rca: head(t.rca), rca_random_walk: head(t.rca_random_walk),
      pseudo_masks: { ...head(t.pseudo_masks), ignore_fraction: t.pseudo_masks.ignore_fraction },
    },
    ablation: Object.fromEntries(Object.entries(r.ablation).map(([k, s]) => [k, { miou: s.miou, coverage: s.coverage }])),
    ignore_fraction: r.ignore_fraction, mean_margin: r.mean_margin, flagged: r.flagged,
  };
}

/** The rows of every present map table for each image, joined by id in dataset.arrow's order (pipeline/joined_rows.ts), however each was sharded. */
async function* zipTables(datasetFile: string, present: Partial<Record<RefineSource, { file: string }>>): AsyncGenerator<Zipped> {
  const keys = Object.keys(present) as RefineSource[];
  const tables = [{ file: datasetFile, stage: 'ingest', name: REFINE_INPUTS.dataset }, ...keys.map((k) => ({ file: present[k]!.file, stage: MAP_TABLES[k].stage, name: MAP_TABLES[k].file }))];
  for await (const [, ...rows] of joinedRows(tables)) yield Object.fromEntries(keys.map((k, i) => [k, rows[i]])) as Zipped;
}

export function formatRefine(r: RefineRunResult): string {
  const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : (100 * v).toFixed(1));
  const steps: [string, StepScores | null][] = [
    ['cam', r.table.cam], ['random_walk', r.table.random_walk], ['rca', r.table.rca], ['rca_random_walk', r.table.rca_random_walk],
    ['maps (refine bg rule)', r.ablation.maps], ['+ CRF', r.ablation.crf], ['pseudo_masks', r.table.pseudo_masks],
  ];
  const at = (s: StepScores | null) => (s?.threshold === null || s?.threshold === undefined ? '' : ` (bg ${s.threshold})`);
  return [
    `refine: ${r.images} pseudo-masks from ${r.source} maps, CRF ${r.settings.crf.iterations} iterations, ignore ${r.settings.ignore.rule} (margin ${r.settings.ignore.margin}); mean ignore ${pct(r.ignore_fraction)}%, ${r.flagged.images} images flagged (${r.flagged.empty_tags} empty tags, ${r.flagged.mostly_ignore} mostly ignore)`,
    `${r.split} split at the original size (${r.table.pseudo_masks.images} images): step  mIoU (ignore = wrong)  labelled-pixel mIoU  coverage  precision  recall`,
    ...steps.map(([n, s]) => `  ${n.padEnd(22)} ${pct(s?.miou).padStart(5)}  ${pct(s?.miou_labelled).padStart(5)}  ${pct(s?.coverage).padStart(5)}  ${pct(s?.precision).padStart(5)}  ${pct(s?.recall).padStart(5)}${at(s)}`),
    `  pseudo-masks leave ${pct(r.table.pseudo_masks.ignore_fraction)}% of the scored pixels as ignore`,
    `${r.images_per_second.toFixed(1)} images/s (concurrency ${r.concurrency}, ${r.threads} CRF threads), CRF ${(1000 * r.crf_seconds_per_image).toFixed(0)} ms/image, ${r.seconds.toFixed(1)} s`,
  ].join('\n');
}
