/**
 * Stage `refine`: class maps -> pseudo-masks at the original image size.
 *
 * For every row of cams.arrow (every split, same order), with the maps of `refine.source`
 * (contrast: contrast_cams.arrow `propagated` = RCA + random walk; affinity: affinity_cams.arrow;
 * cam: cams.arrow) and the original image decoded from dataset.arrow's image_path (refine.ts):
 * 1. scores at the original size, background by a constant or (1 - max)^power, argmax over the
 *    tags without a background class (labels.ts);
 * 2. dense CRF on the original RGB (ops/crf.ts: permutohedral lattice, Gaussian + bilateral, Potts,
 *    mean field; PSA's crf_inference with IRN's bilateral kernel, sxy 50 srgb 5, by default);
 * 3. ignore (255) where the ignore rule says the label is unsure (confidence.ts);
 * 4. flags: a tag with no pixel, an image that is mostly ignore (sanity.ts);
 * 5. cache/pseudo_masks.arrow (tables.ts) and outputs/pseudo_masks/<id>.png (export.ts).
 *    With refine.shards N > 1: a folder of parts, part-<k>-of-<N>.arrow and pseudo_masks/part-<k>-of-<N>/,
 *    one per shard (pipeline/shard.ts: the shard is a hash of the id); `--shard k/N` writes one.
 * Images are decoded and refined `refine.concurrency` at a time (data/load.ts orderedMap keeps
 * row order); the CRF is synchronous JS, so each image's runs in a worker thread (pool.ts, as many
 * threads as the concurrency and the machine's cores allow).
 * metrics/refine.json: the chain table (evaluate.ts: CAM -> random walk -> RCA -> RCA + random
 * walk -> pseudo-masks, all scored at the original size on the train split's masks), the
 * CRF/ignore ablation of the pseudo-masks, ignore fraction, flags, time and throughput.
 */
import { artifact } from '../../pipeline/artifacts.js';
import { decodeImage, readMask } from '../../data/decode.js';
import { orderedMap } from '../../data/load.js';
import { resolveDatasetPath } from '../../data/manifest.js';
import { classPalette } from '../../data/palette.js';
import { ConfusionMatrix, segmentationScores } from '../../eval/metrics.js';
import { crfFromKeys } from '../../ops/crf.js';
import { type Row, TableReader, TableWriter, readAll, readInfo } from '../../pipeline/arrow.js';
import { TagsegError } from '../../pipeline/errors.js';
import { exists } from '../../pipeline/fsutil.js';
import { log, progress } from '../../pipeline/log.js';
import { classPlotRows, writeJsonMetrics } from '../../pipeline/metrics_file.js';
import type { Params } from '../params.js';
import { paramsHash } from '../../pipeline/params_core.js';
import { type Shard, SequentialParts, partName, partPath, prepareFolderFor, prepareTableFor, rowsByShard, shardOf, shardsToRun } from '../../pipeline/shard.js';
import type { Stage } from '../../pipeline/stage.js';
import { decodeFloat16, decodeFloat32 } from '../../maps/f16.js';
import { ChainScorer, type ChainTable, type MapStep, stepScores, type StepScores } from './evaluate.js';
import { PngExport } from '../../data/mask_png.js';
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
    if (!ctx.shard || ctx.shard.n === 1) {
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

export async function runRefine(o: RunRefineOptions): Promise<RefineRunResult> {
  const t0 = performance.now();
  const p = o.params;
  const rp = p.refine;
  const split = p.dataset.train_split;

  // Tables: cams.arrow is required (row order); the source's table too; the others only feed the chain table.
  const present: Partial<Record<RefineSource, { file: string; dtype: 'float16' | 'float32' }>> = {};
  let classes: string[] = [];
  let background: number | null = null;
  let numRows = 0;
  for (const key of ['cam', 'affinity', 'contrast'] as const) {
    const t = MAP_TABLES[key];
    const file = o.path(t.file);
    if (!(await exists(file))) {
      if (key === 'cam' || key === rp.source) throw new TagsegError('table not found', { file, hint: `rerun \`tagseg run ${t.stage}\`` });
      log.warn(`refine: ${t.file} not found; its rows of the chain table stay empty`);
      continue;
    }
    const info = await readInfo(file);
    const extra = info.meta.extra ?? {};
    if (key === 'cam') {
      classes = info.meta.classes;
      background = typeof extra.background === 'number' ? extra.background : null;
      numRows = info.numRows;
    } else if (JSON.stringify(info.meta.classes) !== JSON.stringify(classes) || info.numRows !== numRows) {
      throw new TagsegError(`${t.file} and cams.arrow disagree (classes or row count)`, { file, hint: `rerun \`tagseg run ${t.stage}\`` });
    }
    if (key === 'contrast' && !info.columns.some((c) => c.name === 'propagated')) {
      throw new TagsegError("contrast_cams.arrow has no 'propagated' column", { file, hint: 'rerun `tagseg run contrast`' });
    }
    present[key] = { file, dtype: extra.dtype === 'float32' ? 'float32' : 'float16' };
  }

  const datasetFile = o.path(REFINE_INPUTS.dataset);
  const dataset = new Map<string, DatasetEntry>();
  const root = o.path(p.dataset.root); // dataset.arrow's paths are relative to it
  for (const r of await readAll(datasetFile, { stage: 'ingest' })) {
    const mask = (r.mask_path as string | null) ?? null;
    dataset.set(r.id as string, {
      imagePath: resolveDatasetPath(root, r.image_path as string), maskPath: mask === null ? null : resolveDatasetPath(root, mask), width: r.orig_width as number, height: r.orig_height as number,
    });
  }

  const settings: RefineSettings = {
    bg: { background, mode: rp.bg, threshold: rp.bg_threshold, power: rp.bg_power },
    crf: crfFromKeys(rp.crf),
    ignore: { rule: rp.ignore, margin: rp.ignore_margin },
  };
  const crf = settings.crf;
  const extraSettings: RefineRunResult['settings'] = {
    bg: background === null ? null : { mode: rp.bg, threshold: rp.bg_threshold, power: rp.bg_power },
    crf: { iterations: crf.iterations, gaussian: { ...crf.gaussian! }, bilateral: { ...crf.bilateral! }, normalization: 'symmetric' },
    ignore: { rule: rp.ignore, margin: rp.ignore_margin },
    mostly_ignore: rp.mostly_ignore,
  };
  const extra: RefineExtra = { background, source: rp.source, maps: SOURCE_MAPS[rp.source], ...extraSettings };

  const steps = (Object.keys(present) as RefineSource[]).flatMap((k) => Object.values(MAP_TABLES[k].columns) as MapStep[]);
  const chain = new ChainScorer(classes, background, split, steps);
  const beforeCm = new ConfusionMatrix(classes.length);
  const crfCm = new ConfusionMatrix(classes.length);
  let scored = 0;

  const meta = { stage: 'refine', paramsHash: paramsHash(p, PARAMS), classes, extra: extra as unknown as Record<string, unknown> };
  // Shards (refine.shards): --shard's, or each in turn; every shard commits its own table part and PNG folder.
  const shards = shardsToRun(rp.shards, o.shard, 'refine.shards');
  await prepareTableFor(o.path(REFINE_OUTPUTS.masks), rp.shards);
  if (rp.shards > 1) await prepareFolderFor(o.path(REFINE_OUTPUTS.pngs), rp.shards);
  const outputs = new SequentialParts(shards, async (s) => {
    const writer = await TableWriter.open(o.path(partPath(REFINE_OUTPUTS.masks, s)), PSEUDO_MASK_COLUMNS, meta, { batchRows: 64, batchBytes: 32 * 2 ** 20 });
    const pngs = await PngExport.open(o.path(pngFolder(s)), classPalette(background)).catch(async (err: unknown) => { await writer.abort(); throw err; });
    return {
      writer, pngs,
      commit: async () => { await writer.close(); await pngs.commit(); },
      abort: async () => { await writer.abort(); await pngs.abort(); },
    };
  });
  const decodeMaps = (key: RefineSource, row: Row, column: string): Float32Array => {
    const bytes = row[column] as Uint8Array;
    return present[key]!.dtype === 'float16' ? decodeFloat16(bytes) : decodeFloat32(bytes);
  };

  interface Work { z: Zipped; H: number; W: number; gt: Uint8Array | null; r: RefinedImage }
  const work = async (z: Zipped): Promise<Work> => {
    const id = z.cam.id as string;
    const d = dataset.get(id);
    if (!d) throw new TagsegError(`image '${id}' of cams.arrow is not in dataset.arrow`, { file: datasetFile, hint: 'rerun the pipeline from ingest' });
    const img = await decodeImage(d.imagePath, 0);
    if (img.width !== d.width || img.height !== d.height) {
      throw new TagsegError(`image is ${img.width}x${img.height}, dataset.arrow says ${d.width}x${d.height}`, { file: d.imagePath, hint: 'the dataset changed since ingest; rerun `tagseg run ingest`' });
    }
    const H = img.height;
    const W = img.width;
    const gt = z.cam.split === split && d.maskPath ? (await readMask(d.maskPath, W, H)).data : null;
    const src = z[rp.source]!;
    const r = await pool.run({
      maps: decodeMaps(rp.source, src, SOURCE_MAPS[rp.source].column), tags: src.tags as number[], h: src.height as number, w: src.width as number, rgb: img.rgb, H, W,
    }, settings);
    return { z, H, W, gt, r };
  };

  const pool = new RefinePool(rp.concurrency);
  const threads = pool.size;
  const selected = new Set(shards.map((s) => s.k));
  const bar = progress('refine', selected.size === rp.shards ? numRows : [...dataset.keys()].filter((id) => selected.has(shardOf(id, rp.shards))).length);
  let rows = 0;
  let crfSeconds = 0;
  let crfImages = 0;
  let ignoreSum = 0;
  let marginSum = 0;
  const flagged = { images: 0, empty_tags: 0, mostly_ignore: 0 };
  const loopStart = performance.now();
  try {
    for await (const { z, H, W, gt, r } of windowedMap(rowsByShard(shards, () => zipTables(present), (x) => x.cam.id as string), work, rp.concurrency)) {
      const id = z.cam.id as string;
      const { writer, pngs } = await outputs.for(shardOf(id, rp.shards));
      const counts = classPixelCounts(r.mask, classes.length);
      const ignoreFraction = r.ignored / (H * W);
      const tags = z.cam.tags as number[];
      const flags = imageFlags({ tags, classPixels: counts, classes, ignoreFraction, mostlyIgnore: rp.mostly_ignore });
      await writer.write({
        id, split: z.cam.split, height: H, width: W, tags, mask: r.mask, confidence: r.confidence,
        class_pixels: counts, ignore_fraction: ignoreFraction, mean_margin: r.meanMargin, flags,
      });
      await pngs.write(id, r.mask, W, H);
      if (gt) {
        for (const key of Object.keys(present) as RefineSource[]) {
          const row = z[key]!;
          for (const [column, step] of Object.entries(MAP_TABLES[key].columns) as [string, MapStep][]) {
            chain.addMaps(step, decodeMaps(key, row, column), row.tags as number[], row.height as number, row.width as number, gt, H, W);
          }
        }
        chain.addPseudo(r.mask, gt);
        beforeCm.add(r.before, gt);
        crfCm.add(r.crf, gt);
        scored++;
      }
      if (r.crfSeconds > 0) {
        crfSeconds += r.crfSeconds;
        crfImages++;
      }
      ignoreSum += ignoreFraction;
      marginSum += r.meanMargin;
      if (flags.length > 0) flagged.images++;
      flagged.empty_tags += flags.filter((f) => f.startsWith('empty:')).length;
      if (flags.includes('mostly_ignore')) flagged.mostly_ignore++;
      rows++;
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
  if (scored === 0) log.warn(`refine: no image of split '${split}' has a ground-truth mask; the chain table is empty`);
  return {
    source: rp.source,
    background: background === null ? null : classes[background],
    split,
    table: chain.result(),
    ablation: {
      maps: stepScores(segmentationScores(beforeCm), classes, null, scored, split),
      crf: stepScores(segmentationScores(crfCm), classes, null, scored, split),
    },
    settings: extraSettings,
    images: rows,
    ignore_fraction: rows > 0 ? ignoreSum / rows : 0,
    mean_margin: rows > 0 ? marginSum / rows : 0,
    flagged,
    pngs: rows,
    seconds: (performance.now() - t0) / 1000,
    images_per_second: loopSeconds > 0 ? rows / loopSeconds : 0,
    crf_seconds_per_image: crfImages > 0 ? crfSeconds / crfImages : 0,
    concurrency: rp.concurrency,
    threads,
  };
}

/** outputs/pseudo_masks, or its part-<k>-of-<N> folder for one shard. */
export function pngFolder(shard: Shard): string {
  return shard.n === 1 ? REFINE_OUTPUTS.pngs : `${REFINE_OUTPUTS.pngs}/${partName(shard)}`;
}

/** metrics/refine.json, or metrics/refine/part-<k>-of-<N>.json for a --shard run. */
export function metricsFile(shard: Shard | undefined): string {
  return !shard || shard.n === 1 ? REFINE_OUTPUTS.metrics : `${REFINE_OUTPUTS.metrics.replace(/\.json$/, '')}/${partName(shard)}.json`;
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

/** The rows of every present map table, in lockstep (same order as cams.arrow; ids checked). */
async function* zipTables(present: Partial<Record<RefineSource, { file: string }>>): AsyncGenerator<Zipped> {
  const keys = Object.keys(present) as RefineSource[];
  const readers = new Map<RefineSource, TableReader>();
  try {
    for (const k of keys) readers.set(k, await TableReader.open(present[k]!.file, { stage: MAP_TABLES[k].stage }));
    const its = new Map(keys.filter((k) => k !== 'cam').map((k) => [k, readers.get(k)!.rows()[Symbol.asyncIterator]()]));
    for await (const c of readers.get('cam')!.rows()) {
      const z: Zipped = { cam: c };
      for (const [k, it] of its) {
        const n = await it.next();
        if (n.done || n.value.id !== c.id) {
          throw new TagsegError(`row '${n.done ? 'end of table' : String(n.value.id)}' where cams.arrow has '${String(c.id)}'`, {
            file: present[k]!.file, hint: `rerun \`tagseg run ${MAP_TABLES[k].stage}\``,
          });
        }
        z[k] = n.value;
      }
      yield z;
    }
  } finally {
    for (const r of readers.values()) await r.close();
  }
}

/**
 * `orderedMap` (bounded concurrency, input order) over an async source: pulls it in chunks of
 * 4 x concurrency items, so at most that many rows (maps, decoded images) are held at once.
 */
export async function* windowedMap<T, R>(source: AsyncIterable<T>, fn: (item: T) => Promise<R>, concurrency: number): AsyncGenerator<R> {
  const size = 4 * concurrency;
  let chunk: T[] = [];
  for await (const item of source) {
    chunk.push(item);
    if (chunk.length >= size) {
      yield* orderedMap(chunk, fn, { concurrency });
      chunk = [];
    }
  }
  if (chunk.length > 0) yield* orderedMap(chunk, fn, { concurrency });
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
