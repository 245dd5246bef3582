/**
 * Stage `audit`: which pseudo-masks to trust, which images to relabel, which classes fail. This
 * stage measures every image; `audit_report` (report_stage.ts) ranks them and builds the report.
 *
 * Reads every earlier stage's table, joined by id in dataset.arrow's order (a sharded stage's part
 * folder too): dataset.arrow (original image paths for full-size overlays), images.arrow (pixels,
 * ground truth at the working size), cams.arrow, affinity_cams.arrow, contrast_cams.arrow (the map
 * stages, turned into label maps) and pseudo_masks.arrow (refine's final masks, confidence and
 * flags). Per image (image.ts): one row per class and one per image with the suspicion score
 * (suspicion.ts), the pixel counts of the class summary (summary.ts), and the report's JPEGs.
 *
 * Out: cache/audit.arrow (per image and class), cache/audit_measures.arrow (per image: its rows and
 * pixel counts as JSON, for audit_report) and cache/audit_overlays/ (<view>/<file>.jpg). With
 * audit.shards N > 1: part-<k>-of-<N> of each (pipeline/shard.ts: the shard is a hash of the id),
 * one per shard, each committed on its own; `--shard k/N` runs one.
 *
 * Memory: class rows and records stream to their tables; overlay encoding runs on a bounded sharp
 * queue next to the measurements.
 */
import { artifact } from '../../pipeline/artifacts.js';
import * as path from 'node:path';
import { decodeImage } from '../../data/decode.js';
import { resolveDatasetPath } from '../../data/manifest.js';
import { type Row, TableReader, TableWriter, readInfo, tableIds } from '../../pipeline/arrow.js';
import { TagsegError } from '../../pipeline/errors.js';
import { ensureDir, replaceDirAtomic, tempPathFor } from '../../pipeline/fsutil.js';
import { progress } from '../../pipeline/log.js';
import type { Params } from '../params.js';
import { type PartOutput, type Shard, SequentialParts, partName, partPath, prepareFolderFor, prepareTableFor, shardOf, shardsToRun } from '../../pipeline/shard.js';
import type { Stage } from '../../pipeline/stage.js';
import { resizeNearest } from '../../data/decode.js';
import { camLabels, resizeBilinear } from '../../maps/evaluate.js';
import { decodeFloat16, decodeFloat32 } from '../../maps/f16.js';
import {
  AUDIT_CLASS_COLUMNS, AUDIT_MEASURE_COLUMNS, AUDIT_OUTPUTS, AUDIT_PARAMS, type MeasureRecord, OVERLAY_VIEWS, auditTablesHash, classRowToArrow, encodeRecord, imageFileStem,
} from './columns.js';
import { type AuditSettings, type ImageAudit, MAP_STAGES, type MapStage, auditImage } from './image.js';
import { heatmapRgb, overlayRgb } from '../../data/overlay.js';
import { OverlayQueue } from './overlay_queue.js';
import { pixelCounts } from './summary.js';
import { removeTree } from '../../pipeline/remove_tree.js';

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections } from './params.js';

export const AUDIT_INPUTS = {
  dataset: artifact('dataset'),
  images: artifact('images'),
  cams: artifact('cams'),
  random_walk: artifact('affinityCams'),
  rca: artifact('contrastCams'),
  pseudo: artifact('pseudoMasks'),
} as const;
const MAP_INPUT: Record<MapStage, { file: string; stage: string }> = {
  cam: { file: AUDIT_INPUTS.cams, stage: 'cam' },
  random_walk: { file: AUDIT_INPUTS.random_walk, stage: 'affinity' },
  rca: { file: AUDIT_INPUTS.rca, stage: 'contrast' },
};

export const stage: Stage = {
  name: 'audit',
  summary: 'audit the pseudo-masks, image by image: per-image/class measures and overlays -> cache/audit.arrow + cache/audit_measures.arrow (audit_report ranks them)',
  io: (p) => ({
    // dataset.root: the original images, for the full-size overlays
    reads: [p.dataset.root, ...Object.values(AUDIT_INPUTS)],
    writes: [AUDIT_OUTPUTS.classes, AUDIT_OUTPUTS.measures, AUDIT_OUTPUTS.overlays],
    metrics: [],
    plots: [],
    params: AUDIT_PARAMS,
  }),
  sharded: {
    param: 'audit.shards',
    outputs: (s) => ({ writes: [partPath(AUDIT_OUTPUTS.classes, s), partPath(AUDIT_OUTPUTS.measures, s), overlayFolder(s)], metrics: [] }),
  },
  async run(ctx) {
    const r = await runAuditMeasures({ params: ctx.params, path: ctx.path, shard: ctx.shard });
    if (!ctx.json) process.stderr.write(`audit: ${r.images} images measured in ${r.seconds.toFixed(1)} s (measures ${r.measureSeconds.toFixed(1)} s, overlays ${r.overlaySeconds.toFixed(1)} s of sharp time); tagseg run audit_report ranks them\n`);
    return r as unknown as Record<string, unknown>;
  },
};

/** cache/audit_overlays, or its part-<k>-of-<N> folder for one shard. */
export function overlayFolder(s: Shard): string {
  return s.n === 1 ? AUDIT_OUTPUTS.overlays : `${AUDIT_OUTPUTS.overlays}/${partName(s)}`;
}

export interface RunAuditOptions {
  params: Params;
  path(rel: string): string;
  /** JPEGs encoded at once (default overlay_queue.ts OVERLAY_CONCURRENCY). */
  concurrency?: number;
  /** Only this shard (of audit.shards); default every shard in turn. */
  shard?: Shard;
}

export interface AuditMeasuresResult { images: number; seconds: number; measureSeconds: number; overlaySeconds: number }

function decodeMaps(bytes: Uint8Array, dtype: unknown): Float32Array {
  return dtype === 'float32' ? decodeFloat32(bytes) : decodeFloat16(bytes);
}

/** The tables the audit reads, opened and checked: same classes, same row count. */
interface AuditInputs {
  files: Record<keyof typeof AUDIT_INPUTS, string>;
  numRows: number;
  classes: string[];
  background: number | null;
  dtypes: Record<MapStage, unknown>;
}

async function openInputs(o: RunAuditOptions): Promise<AuditInputs> {
  const a = o.params.audit;
  const files = Object.fromEntries(Object.entries(AUDIT_INPUTS).map(([k, v]) => [k, o.path(v)])) as Record<keyof typeof AUDIT_INPUTS, string>;
  const infos = Object.fromEntries(await Promise.all(Object.entries(files).map(async ([k, f]) => [k, await readInfo(f)] as const)));
  const classes = infos.images.meta.classes;
  const bgRaw = infos.images.meta.extra?.background;
  for (const [k, info] of Object.entries(infos)) {
    if (JSON.stringify(info.meta.classes) !== JSON.stringify(classes) || info.numRows !== infos.images.numRows) {
      throw new TagsegError(`${path.basename(info.file)} and images.arrow disagree (classes or row count)`, { file: files[k as keyof typeof files], hint: 'rerun the pipeline up to refine (`tagseg repro refine`)' });
    }
  }
  if (a.rca_map === 'propagated' && !infos.rca.columns.some((c) => c.name === 'propagated')) {
    throw new TagsegError("contrast_cams.arrow has no 'propagated' column", { file: files.rca, hint: 'set audit.rca_map: cams, or rerun the contrast stage' });
  }
  return {
    files, numRows: infos.images.numRows, classes, background: typeof bgRaw === 'number' ? bgRaw : null,
    dtypes: { cam: infos.cams.meta.extra?.dtype, random_walk: infos.random_walk.meta.extra?.dtype, rca: infos.rca.meta.extra?.dtype },
  };
}

type ReaderKey = 'dataset' | 'images' | MapStage | 'pseudo';

/** One row of every input for the same image, read in step. */
class AlignedRows {
  private constructor(private readonly readers: Record<ReaderKey, TableReader>, private readonly iters: Record<ReaderKey, AsyncIterator<Row>>) {}

  static async open(files: AuditInputs['files']): Promise<AlignedRows> {
    const readers: Record<ReaderKey, TableReader> = {
      dataset: await TableReader.open(files.dataset, { stage: 'ingest' }),
      images: await TableReader.open(files.images, { stage: 'ingest' }),
      cam: await TableReader.open(files.cams, { stage: MAP_INPUT.cam.stage }),
      random_walk: await TableReader.open(files.random_walk, { stage: MAP_INPUT.random_walk.stage }),
      rca: await TableReader.open(files.rca, { stage: MAP_INPUT.rca.stage }),
      pseudo: await TableReader.open(files.pseudo, { stage: 'refine' }),
    };
    const iters = Object.fromEntries(Object.entries(readers).map(([k, r]) => [k, r.rows()])) as unknown as Record<ReaderKey, AsyncIterator<Row>>;
    // a sharded stage's table (cam, affinity, contrast, refine .shards > 1) is a part folder, read in dataset.arrow's id order
    for (const k of ['cam', 'random_walk', 'rca', 'pseudo'] as const) if (readers[k].numParts > 1) iters[k] = readers[k].rowsAlong(tableIds(files.dataset));
    return new AlignedRows(readers, iters);
  }

  file(k: ReaderKey): string {
    return this.readers[k].info.file;
  }

  /** The next image's rows, or null at the end of images.arrow; rows of another id are an error. */
  async next(index: number): Promise<Record<ReaderKey, Row> | null> {
    const next = Object.fromEntries(await Promise.all(Object.entries(this.iters).map(async ([k, it]) => [k, await it.next()] as const))) as Record<ReaderKey, IteratorResult<Row>>;
    if (next.images.done) return null;
    const id = next.images.value.id as string;
    for (const [k, n] of Object.entries(next)) {
      if (n.done || n.value.id !== id) {
        throw new TagsegError(`row ${index} is '${n.done ? 'end of table' : String(n.value.id)}', images.arrow has '${id}'`, { file: this.file(k as ReaderKey), hint: 'the tables come from different runs; rerun the pipeline up to refine' });
      }
    }
    return Object.fromEntries(Object.entries(next).map(([k, n]) => [k, n.value as Row])) as Record<ReaderKey, Row>;
  }

  async close(): Promise<void> {
    await Promise.all(Object.values(this.readers).map((r) => r.close()));
  }
}

/** What the loop keeps of one image: its audit, its label maps (for the overlays) and the CAM maps. */
interface MeasuredImage {
  id: string;
  H: number;
  W: number;
  pixels: Uint8Array;
  maps: Record<MapStage, Uint8Array>;
  final: Uint8Array;
  finalOrig: Uint8Array;
  PH: number;
  PW: number;
  gt: Uint8Array | null;
  cam: { up: Float32Array; tags: number[] };
  audit: ImageAudit;
}

/** The map stages' label maps at the working size, and the CAM maps upsampled (heatmaps). */
function labelMaps(rows: Record<ReaderKey, Row>, inp: AuditInputs, a: Params['audit'], H: number, W: number, file: (k: ReaderKey) => string) {
  const thresholds: Record<MapStage, number> = { cam: a.cam_threshold, random_walk: a.random_walk_threshold, rca: a.rca_threshold };
  const maps = {} as Record<MapStage, Uint8Array>;
  let cam: MeasuredImage['cam'] = { up: new Float32Array(0), tags: [] };
  for (const st of MAP_STAGES) {
    const r = rows[st];
    const tags = r.tags as number[];
    const bytes = (st === 'rca' && a.rca_map === 'propagated' ? r.propagated : r.cams) as Uint8Array | null;
    if (!bytes) throw new TagsegError(`image '${String(r.id)}' has no ${st === 'rca' ? `'${a.rca_map}'` : 'cams'} maps`, { file: file(st) });
    const up = resizeBilinear(decodeMaps(bytes, inp.dtypes[st]), tags.length, r.height as number, r.width as number, H, W);
    maps[st] = camLabels(up, tags, H, W, inp.background, thresholds[st]);
    if (st === 'cam') cam = { up, tags };
  }
  return { maps, cam };
}

function measureImage(rows: Record<ReaderKey, Row>, inp: AuditInputs, o: RunAuditOptions, file: (k: ReaderKey) => string): MeasuredImage {
  const a = o.params.audit;
  const { images: img, pseudo: pm } = rows;
  const id = img.id as string;
  const H = img.height as number;
  const W = img.width as number;
  const { maps, cam } = labelMaps(rows, inp, a, H, W, file);
  const PH = pm.height as number;
  const PW = pm.width as number;
  const finalOrig = pm.mask as Uint8Array;
  if (finalOrig.length !== PH * PW) throw new TagsegError(`image '${id}': mask has ${finalOrig.length} pixels, expected ${PH} x ${PW}`, { file: inp.files.pseudo });
  const final = resizeNearest(finalOrig, PW, PH, W, H);
  const gt = (img.mask as Uint8Array | null) ?? null;
  const settings: AuditSettings = {
    edgeQuantile: a.edge_quantile, edgeFloor: a.edge_floor, edgeTolerance: a.edge_tolerance,
    largeArea: a.large_area, lowConfidence: a.low_confidence, weights: a.weights,
  };
  const audit = auditImage({
    id, split: img.split as string, height: H, width: W, pixels: img.pixels as Uint8Array, tags: img.tags as number[], maps, final,
    confidence: resizeNearest(pm.confidence as Uint8Array, PW, PH, W, H), gt,
    meanMargin: (pm.mean_margin as number | null) ?? null, refineFlags: (pm.flags as string[] | null) ?? [],
  }, inp.classes, inp.background, settings);
  return { id, H, W, pixels: img.pixels as Uint8Array, maps, final, finalOrig, PH, PW, gt, cam, audit };
}

/** The image's JPEGs: a thumbnail per stage, the photo and one CAM heatmap per tag, the full-size overlay. */
function queueOverlays(q: OverlayQueue, m: MeasuredImage, stem: string, staging: string, o: RunAuditOptions, ds: Row, background: number | null): number[] {
  const a = o.params.audit;
  const { pixels, H, W } = m;
  const at = (dir: string, name: string) => path.join(staging, dir, `${name}.jpg`); // the report's img/<dir>/
  const views: [string, Uint8Array][] = [...MAP_STAGES.map((s): [string, Uint8Array] => [s, m.maps[s]]), ['final', m.final]];
  if (m.gt) views.push(['gt', m.gt]);
  for (const [s, labels] of views) q.add({ file: at(s, stem), rgb: async () => ({ rgb: overlayRgb(pixels, labels, H, W, background), H, W }), longSide: a.thumb_size });
  q.add({ file: at('photo', stem), rgb: async () => ({ rgb: pixels, H, W }), longSide: 0 });
  m.cam.tags.forEach((c, k) => {
    q.add({ file: at('heat', `${stem}_${c}`), rgb: async () => ({ rgb: heatmapRgb(pixels, m.cam.up.subarray(k * H * W, (k + 1) * H * W), H, W), H, W }), longSide: 0 });
  });
  if (a.full_overlays) {
    const imagePath = resolveDatasetPath(o.path(o.params.dataset.root), ds.image_path as string);
    q.add({ file: at('full', stem), longSide: 0, rgb: async () => {
      const d = await decodeImage(imagePath, 0);
      if (d.width !== m.PW || d.height !== m.PH) {
        throw new TagsegError(`image is ${d.width}x${d.height} but its pseudo-mask is ${m.PW}x${m.PH}`, { file: imagePath, hint: 'the dataset changed since ingest; rerun the pipeline' });
      }
      return { rgb: overlayRgb(d.rgb, m.finalOrig, m.PH, m.PW, background), H: m.PH, W: m.PW };
    } });
  }
  return [...m.cam.tags];
}


/** One shard's outputs: its parts of the two tables and its overlay folder (staged), committed together. */
interface AuditPart extends PartOutput { classes: TableWriter; measures: TableWriter; staging: string; queue: OverlayQueue }

async function openParts(o: RunAuditOptions, inp: AuditInputs, shards: Shard[], timing: { overlaySeconds: number }): Promise<SequentialParts<AuditPart>> {
  const n = o.params.audit.shards;
  for (const t of [AUDIT_OUTPUTS.classes, AUDIT_OUTPUTS.measures]) await prepareTableFor(o.path(t), n);
  if (n > 1) await prepareFolderFor(o.path(AUDIT_OUTPUTS.overlays), n);
  const meta = (extra: Record<string, unknown>) => ({ stage: 'audit', paramsHash: auditTablesHash(o.params), classes: inp.classes, extra: { background: inp.background, ...extra } });
  return new SequentialParts(shards, async (s) => {
    const classes = await TableWriter.open(o.path(partPath(AUDIT_OUTPUTS.classes, s)), AUDIT_CLASS_COLUMNS, meta({ level: 'image_class' }), { batchRows: 4096 });
    const measures = await TableWriter.open(o.path(partPath(AUDIT_OUTPUTS.measures, s)), AUDIT_MEASURE_COLUMNS, meta({ level: 'image' }), { batchRows: 256 });
    const target = o.path(overlayFolder(s));
    await ensureDir(path.dirname(target));
    const staging = tempPathFor(target);
    for (const v of OVERLAY_VIEWS) await ensureDir(path.join(staging, v));
    const queue = new OverlayQueue(o.concurrency);
    return {
      classes, measures, staging, queue,
      commit: async () => {
        await queue.close();
        timing.overlaySeconds += queue.seconds;
        await classes.close();
        await measures.close();
        await replaceDirAtomic(staging, target);
      },
      abort: async () => {
        await queue.abort();
        await classes.abort();
        await measures.abort();
        await removeTree(staging);
      },
    };
  });
}

/** The images of every shard of `shards`, shard by shard (each a pass over the tables in dataset.arrow's order), with their position in it. */
async function* shardRows(files: AuditInputs['files'], shards: Shard[]): AsyncGenerator<{ index: number; rows: Record<ReaderKey, Row>; file: (k: ReaderKey) => string }> {
  for (const s of shards) {
    const aligned = await AlignedRows.open(files);
    try {
      for (let index = 0; ; index++) {
        const rows = await aligned.next(index);
        if (!rows) break;
        if (s.n === 1 || shardOf(rows.images.id as string, s.n) === s.k) yield { index, rows, file: (k) => aligned.file(k) };
      }
    } finally {
      await aligned.close();
    }
  }
}

/** The per-image pass of `o.shard` (default every shard in turn): class rows, records and overlays, a part per shard. */
export async function runAuditMeasures(o: RunAuditOptions): Promise<AuditMeasuresResult> {
  const t0 = performance.now();
  const n = o.params.audit.shards;
  const shards = shardsToRun(n, o.shard, 'audit.shards');
  const inp = await openInputs(o);
  const timing = { overlaySeconds: 0 };
  const parts = await openParts(o, inp, shards, timing);
  const bar = progress('audit', await imagesToRun(inp, shards, n));
  let images = 0;
  let measureSeconds = 0;
  try {
    for await (const { index, rows, file } of shardRows(inp.files, shards)) {
      const part = await parts.for(shardOf(rows.images.id as string, n));
      const tm = performance.now();
      const m = measureImage(rows, inp, o, file);
      for (const r of m.audit.classRows) await part.classes.write(classRowToArrow(r));
      const stem = imageFileStem(index, m.id);
      const heat = queueOverlays(part.queue, m, stem, part.staging, o, rows.dataset, inp.background);
      const record: MeasureRecord = {
        image: m.audit.image, classRows: m.audit.classRows, tags: [...(rows.images.tags as number[])].sort((x, y) => x - y), heat, file: stem,
        pixels: pixelCounts({ ...m.maps, final: m.final }, m.gt, inp.classes.length, m.audit.image.width),
      };
      await part.measures.write({ id: m.id, split: m.audit.image.split, record: encodeRecord(record) });
      measureSeconds += (performance.now() - tm) / 1000;
      await part.queue.flush();
      images++;
      bar.tick();
    }
    await parts.finish();
  } catch (err) {
    await parts.abort();
    throw err;
  } finally {
    bar.stop();
  }
  return { images, seconds: (performance.now() - t0) / 1000, measureSeconds, overlaySeconds: timing.overlaySeconds };
}

/** Images of the shards run (the progress bar's total): every row, or those of the selected shards. */
async function imagesToRun(inp: AuditInputs, shards: Shard[], n: number): Promise<number> {
  if (shards.length === n) return inp.numRows;
  let count = 0;
  for await (const id of tableIds(inp.files.dataset)) if (shards.some((s) => shardOf(id, n) === s.k)) count++;
  return count;
}
