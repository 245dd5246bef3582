/**
 * Stage `audit`: which pseudo-masks to trust, which images to relabel, which classes fail.
 *
 * Reads every earlier stage's table in one streaming pass (all are in images.arrow's row order):
 * dataset.arrow (original image paths for full-size overlays), images.arrow (pixels, ground
 * truth at the working size), cams.arrow, affinity_cams.arrow, contrast_cams.arrow (the map
 * stages, turned into label maps) and pseudo_masks.arrow (refine's final masks, confidence and
 * flags). Per image (image.ts): one row per class and one per image with the suspicion score
 * (suspicion.ts); per class (summary.ts): area distribution, agreement between stages and, with
 * ground truth, IoU / precision / recall and the most confused pairs.
 *
 * Out: cache/audit.arrow (per image and class), cache/audit_images.arrow (per image, ranked),
 * reports/audit/ (static HTML report with overlays and the CSVs; report.ts), metrics/audit.json.
 * With ground truth, the metrics also say how well the suspicion score (which never looks at
 * ground truth) finds the bad masks: Spearman correlation with 1 - GT mIoU, and the share of bad
 * masks (GT mIoU < audit.bad_miou) among the top `audit.top` images against the base rate.
 *
 * Memory: the image rows (small) are kept to rank them; class rows stream to their table; overlay
 * encoding runs on a bounded sharp queue next to the measurements.
 */
import { artifact } from '../../pipeline/artifacts.js';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { decodeImage } from '../../data/decode.js';
import { resolveDatasetPath } from '../../data/manifest.js';
import { type Row, TableReader, TableWriter, readInfo, tableIds } from '../../pipeline/arrow.js';
import { TagsegError } from '../../pipeline/errors.js';
import { ensureDir, replaceDirAtomic, tempPathFor, writeFileAtomic } from '../../pipeline/fsutil.js';
import { progress } from '../../pipeline/log.js';
import { writeJsonMetrics } from '../../pipeline/metrics_file.js';
import type { Params } from '../params.js';
import { paramsHash } from '../../pipeline/params_core.js';
import type { Stage } from '../../pipeline/stage.js';
import { resizeNearest } from '../../data/decode.js';
import { camLabels, resizeBilinear } from '../../maps/evaluate.js';
import { decodeFloat16, decodeFloat32 } from '../../maps/f16.js';
import { AUDIT_CLASS_COLUMNS, AUDIT_IMAGE_COLUMNS, AUDIT_OUTPUTS, classRowToArrow, imageRowToArrow, toCsv } from './columns.js';
import { LABEL_QUALITY_FILE } from '../../data/review.js';
import { readLabelQuality } from '../../eval/label_quality.js';
import { listCorrections } from '../../data/review.js';
import { type AuditSettings, type ImageAudit, type ImageRow, MAP_STAGES, type MapStage, auditImage } from './image.js';
import { heatmapRgb, overlayRgb } from '../../data/overlay.js';
import { OverlayQueue } from './overlay_queue.js';
import { IMAGE_DIR, type ReportImage, imageFileStem, writeReport } from './report.js';
import { type AuditSummary, SummaryAccumulator } from './summary.js';

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections } from './params.js';

const PARAMS = ['dataset.corrections', 'audit'];
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
  summary: 'audit the pseudo-masks: per-image/class measures, suspicion ranking, HTML report -> cache/audit*.arrow + reports/audit',
  io: (p) => ({
    // dataset.root: the original images, for the full-size overlays; the review: the out-of-fold
    // label quality shown beside the suspicion, and which images have a corrected mask.
    reads: [p.dataset.root, ...Object.values(AUDIT_INPUTS), LABEL_QUALITY_FILE, ...(p.dataset.corrections ? [p.dataset.corrections] : [])],
    writes: [AUDIT_OUTPUTS.classes, AUDIT_OUTPUTS.images, AUDIT_OUTPUTS.report],
    metrics: [AUDIT_OUTPUTS.metrics],
    plots: [AUDIT_OUTPUTS.classesPlot],
    params: PARAMS,
  }),
  async run(ctx) {
    const r = await runAudit({ params: ctx.params, path: ctx.path });
    // Headline figures only: per-class figures are a plot; the top images are in the summary (--json, the run log) and the report.
    const { classes, top: _top, ...headline } = r.metrics;
    await writeJsonMetrics(ctx.path(AUDIT_OUTPUTS.metrics), headline);
    await writeJsonMetrics(ctx.path(AUDIT_OUTPUTS.classesPlot), Object.entries(classes).map(([c, f]) => ({ label: c, class: c, ...f })));
    const out = auditOutput(r);
    if (!ctx.json) process.stderr.write(`${formatAudit(out)}\n`);
    return out as unknown as Record<string, unknown>;
  },
};

export interface TopImage { rank: number; id: string; split: string; suspicion: number; reasons: string[]; gt_miou: number | null; gt_coverage: number | null }

export interface AuditMetrics {
  images: number;
  /** (image, tag) pairs audited. */
  tagged_pairs: number;
  mean_suspicion: number | null;
  mean_ignore: number | null;
  empty_tags: number;
  /** With ground truth: each stage's mIoU and how well the suspicion ranking finds bad masks. */
  gt: null | {
    images: number;
    /** Full coverage (ignore counts as wrong), then over the labelled pixels, and the labelled share. */
    miou: Record<string, number | null>;
    miou_labelled: Record<string, number | null>;
    coverage: Record<string, number | null>;
    spearman: number | null;
    bad_miou: number;
    bad_coverage: number;
    bad_rate: number | null;
    precision_at_top: number | null;
    /** The out-of-fold label quality's ranking (low = suspect) on the images that have it: the same figures. */
    label_quality: null | { images: number; spearman: number | null; precision_at_top: number | null; confidence_spearman: number | null; confidence_precision_at_top: number | null };
  };
  classes: Record<string, { tagged: number; empty_tags: number; area_p50: number | null; agreement_rca_final: number | null; gt_iou: number | null; gt_iou_labelled: number | null; gt_precision: number | null; gt_recall: number | null }>;
  top: TopImage[];
}

export interface AuditRunResult {
  metrics: AuditMetrics;
  summary: AuditSummary;
  report: string;
  seconds: number;
  measureSeconds: number;
  overlaySeconds: number;
  peakRssMiB: number;
}

export interface RunAuditOptions {
  params: Params;
  path(rel: string): string;
  /** JPEGs encoded at once (default overlay_queue.ts OVERLAY_CONCURRENCY). */
  concurrency?: number;
}

/** Which ranking the report and `rank` use, and why (the report's overview shows it). */
export const RANKING_NOTE = 'Ranked by suspicion (rank 1 = review first). On the synthetic set (npm run bench -- audit_rankings: 90 train '
  + 'images, bad = the lowest fifth by pseudo-mask mIoU x coverage) its top 20 held 17 bad masks (Spearman 0.88 with quality), against 10 '
  + 'for the out-of-fold label quality (softmin 0.33, mean label probability 0.37) and 12 for their rank average; it also needs no '
  + 'extra model and covers every image. A simulated reviewer (npm run bench -- audit_reviewer) gained about as much from either: '
  + 'correcting the worst 10% raised the segmenter by 2.6 ± 0.1 mIoU points by suspicion, 3.1 ± 0.4 by label quality, 1.6 ± 0.4 at random. '
  + 'The label quality (tagseg cv --oof: the probability a segmenter that never trained on the image gives each pseudo-label, '
  + 'softmin over pixels as in cleanlab, T = 0.1) is shown beside the suspicion: click its header to rank by it.';

function decodeMaps(bytes: Uint8Array, dtype: unknown): Float32Array {
  return dtype === 'float32' ? decodeFloat32(bytes) : decodeFloat16(bytes);
}

/** Spearman rank correlation (average ranks for ties); null with fewer than 3 pairs or no spread. */
export function spearman(x: readonly number[], y: readonly number[]): number | null {
  if (x.length !== y.length || x.length < 3) return null;
  const rank = (v: readonly number[]) => {
    const idx = v.map((_, i) => i).sort((a, b) => v[a] - v[b]);
    const r = new Array<number>(v.length);
    for (let i = 0; i < idx.length;) {
      let j = i;
      while (j + 1 < idx.length && v[idx[j + 1]] === v[idx[i]]) j++;
      for (let k = i; k <= j; k++) r[idx[k]] = (i + j) / 2;
      i = j + 1;
    }
    return r;
  };
  const rx = rank(x);
  const ry = rank(y);
  const mean = (rx.length - 1) / 2;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < rx.length; i++) {
    sxy += (rx[i] - mean) * (ry[i] - mean);
    sxx += (rx[i] - mean) ** 2;
    syy += (ry[i] - mean) ** 2;
  }
  return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : null;
}

/** Rank 1 = most suspicious; ties broken by id so the order is deterministic. */
export function rankImages(rows: ImageRow[]): void {
  const order = [...rows].sort((a, b) => b.suspicion - a.suspicion || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  order.forEach((r, i) => { r.rank = i + 1; });
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
  const at = (dir: string, name: string) => path.join(staging, IMAGE_DIR, dir, `${name}.jpg`);
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

interface AuditPass {
  imageRows: ImageRow[];
  classRows: Row[];
  reportImages: ReportImage[];
  summary: SummaryAccumulator;
  measureSeconds: number;
  overlaySeconds: number;
}

/** One streaming pass over every image: measures, class rows to their table, overlays queued. */
async function auditPass(o: RunAuditOptions, inp: AuditInputs, staging: string): Promise<AuditPass> {
  const classWriter = await TableWriter.open(o.path(AUDIT_OUTPUTS.classes), AUDIT_CLASS_COLUMNS, {
    stage: 'audit', paramsHash: paramsHash(o.params, PARAMS), classes: inp.classes, extra: { background: inp.background, level: 'image_class' },
  }, { batchRows: 4096 });
  const pass: AuditPass = { imageRows: [], classRows: [], reportImages: [], summary: new SummaryAccumulator(inp.classes), measureSeconds: 0, overlaySeconds: 0 };
  const queue = new OverlayQueue(o.concurrency);
  const rows = await AlignedRows.open(inp.files);
  const bar = progress('audit', inp.numRows);
  try {
    for (let index = 0; ; index++) {
      const next = await rows.next(index);
      if (!next) break;
      const tm = performance.now();
      const m = measureImage(next, inp, o, (k) => rows.file(k));
      pass.summary.add({ ...m.maps, final: m.final }, m.gt, m.audit.classRows, m.audit.image);
      for (const r of m.audit.classRows) {
        const row = classRowToArrow(r);
        await classWriter.write(row);
        pass.classRows.push(row);
      }
      pass.imageRows.push(m.audit.image);
      pass.measureSeconds += (performance.now() - tm) / 1000;
      const stem = imageFileStem(index, m.id);
      const heat = queueOverlays(queue, m, stem, staging, o, next.dataset, inp.background);
      pass.reportImages.push({
        row: m.audit.image, tags: [...(next.images.tags as number[])].sort((x, y) => x - y),
        classes: m.audit.classRows.filter((r) => r.area > 0).map((r) => r.class), file: stem, hasGt: m.gt !== null,
        classRows: m.audit.classRows, heat,
      });
      await queue.flush();
      bar.tick();
    }
    await queue.close();
    await classWriter.close();
  } catch (err) {
    await queue.abort();
    await classWriter.abort();
    throw err;
  } finally {
    bar.stop();
    await rows.close();
  }
  pass.overlaySeconds = queue.seconds;
  return pass;
}

/**
 * What the review adds to the image rows: the out-of-fold label quality (review/label_quality.csv,
 * when `tagseg cv --oof` filled it) and whether `dataset.corrections` holds a fixed mask.
 */
async function joinReview(rows: ImageRow[], o: RunAuditOptions): Promise<{ labelQuality: number; corrected: number }> {
  const quality = await readLabelQuality(o.path(LABEL_QUALITY_FILE));
  const dir = o.params.dataset.corrections;
  const fixed = dir ? await listCorrections(o.path(dir), new Set(rows.map((r) => r.id))) : null;
  for (const r of rows) {
    const q = quality?.get(r.id);
    r.label_quality = q?.label_quality ?? null;
    r.label_confidence = q?.self_confidence ?? null;
    r.corrected = fixed?.has(r.id) ?? false;
  }
  return { labelQuality: rows.filter((r) => r.label_quality !== null).length, corrected: fixed?.size ?? 0 };
}

async function writeImageTable(o: RunAuditOptions, inp: AuditInputs, ranked: ImageRow[]): Promise<void> {
  const imageWriter = await TableWriter.open(o.path(AUDIT_OUTPUTS.images), AUDIT_IMAGE_COLUMNS, {
    stage: 'audit', paramsHash: paramsHash(o.params, PARAMS), classes: inp.classes, extra: { background: inp.background, level: 'image', weights: o.params.audit.weights },
  }, { batchRows: 4096 });
  try {
    for (const r of ranked) await imageWriter.write(imageRowToArrow(r));
    await imageWriter.close();
  } catch (err) {
    await imageWriter.abort();
    throw err;
  }
}

export async function runAudit(o: RunAuditOptions): Promise<AuditRunResult> {
  const t0 = performance.now();
  const a = o.params.audit;
  const inp = await openInputs(o);
  // The report is built in a staging folder and swapped in at the end.
  const reportDir = o.path(AUDIT_OUTPUTS.report);
  const staging = tempPathFor(reportDir);
  for (const s of [...MAP_STAGES, 'final', 'gt', 'full', 'photo', 'heat']) await ensureDir(path.join(staging, IMAGE_DIR, s));
  let pass: AuditPass;
  try {
    pass = await auditPass(o, inp, staging);
  } catch (err) {
    await fs.rm(staging, { recursive: true, force: true });
    throw err;
  }
  const joined = await joinReview(pass.imageRows, o);
  rankImages(pass.imageRows);
  const ranked = [...pass.imageRows].sort((x, y) => x.rank - y.rank);
  await writeImageTable(o, inp, ranked);
  const sum = pass.summary.result();
  const metrics = auditMetrics(ranked, sum, a.bad_miou, a.bad_coverage, a.top);
  await writeFileAtomic(path.join(staging, 'images.csv'), toCsv(AUDIT_IMAGE_COLUMNS, ranked.map(imageRowToArrow)));
  await writeFileAtomic(path.join(staging, 'audit.csv'), toCsv(AUDIT_CLASS_COLUMNS, pass.classRows));
  await writeFileAtomic(path.join(staging, 'classes.csv'), classesCsv(sum));
  await writeReport(staging, {
    // the dataset's folder name as params give it, not the project's (which depends on the checkout); no time
    title: path.basename(o.params.dataset.root),
    classes: inp.classes, background: inp.background, images: pass.reportImages, summary: sum,
    overview: {
      meanSuspicion: metrics.mean_suspicion, meanIgnore: metrics.mean_ignore,
      gt: sum.gt && metrics.gt ? { images: sum.gt.images, stages: sum.gt.stages, spearman: metrics.gt.spearman, labelQuality: metrics.gt.label_quality } : null,
      labelQualityImages: joined.labelQuality, corrected: joined.corrected, ranking: RANKING_NOTE,
    },
    imageColumns: AUDIT_IMAGE_COLUMNS, classColumns: AUDIT_CLASS_COLUMNS,
  });
  await replaceDirAtomic(staging, reportDir);
  return {
    metrics, summary: sum, report: path.join(reportDir, 'index.html'),
    seconds: (performance.now() - t0) / 1000, measureSeconds: pass.measureSeconds, overlaySeconds: pass.overlaySeconds,
    peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
  };
}

/**
 * A pseudo-mask is bad (for scoring the ranking) when its GT mIoU is below `badMiou` or it labels
 * less than `badCoverage` of the ground truth (mostly ignore: no use for training); an image whose
 * mask labels nothing counts as GT mIoU 0.
 */
export function isBadMask(r: Pick<ImageRow, 'gt_miou' | 'gt_coverage'>, badMiou: number, badCoverage: number): boolean {
  return (r.gt_miou ?? 0) < badMiou || (r.gt_coverage ?? 0) < badCoverage;
}

export function auditMetrics(ranked: ImageRow[], sum: AuditSummary, badMiou: number, badCoverage: number, top: number): AuditMetrics {
  const mean = (xs: number[]) => (xs.length ? xs.reduce((p, q) => p + q, 0) / xs.length : null);
  let gt: AuditMetrics['gt'] = null;
  const withGt = ranked.filter((r) => r.gt_coverage !== null);
  if (sum.gt && withGt.length > 0) {
    const bad = (r: ImageRow) => isBadMask(r, badMiou, badCoverage);
    const head = withGt.slice(0, top);
    gt = {
      images: sum.gt.images,
      miou: Object.fromEntries(Object.entries(sum.gt.stages).map(([k, v]) => [k, v.miou])),
      miou_labelled: Object.fromEntries(Object.entries(sum.gt.stages).map(([k, v]) => [k, v.miouLabelled])),
      coverage: Object.fromEntries(Object.entries(sum.gt.stages).map(([k, v]) => [k, v.coverage])),
      // against 1 - mIoU x coverage: a mask that is wrong or mostly ignore should rank high
      spearman: spearman(withGt.map((r) => r.suspicion), withGt.map((r) => 1 - (r.gt_miou ?? 0) * (r.gt_coverage ?? 0))),
      bad_miou: badMiou,
      bad_coverage: badCoverage,
      bad_rate: withGt.filter(bad).length / withGt.length,
      precision_at_top: head.length ? head.filter(bad).length / head.length : null,
      label_quality: labelQualityFigures(withGt, bad, top),
    };
  }
  const classes: AuditMetrics['classes'] = {};
  for (const c of sum.classes) {
    if (c.tagged === 0 && c.present === 0) continue;
    classes[c.name] = {
      tagged: c.tagged, empty_tags: c.empty_tags, area_p50: c.area.p50, agreement_rca_final: c.agreement.rca_final,
      gt_iou: c.gt?.iou ?? null, gt_iou_labelled: c.gt?.iou_labelled ?? null, gt_precision: c.gt?.precision ?? null, gt_recall: c.gt?.recall ?? null,
    };
  }
  return {
    images: ranked.length,
    tagged_pairs: ranked.reduce((n, r) => n + r.tags.length, 0),
    mean_suspicion: mean(ranked.map((r) => r.suspicion)),
    mean_ignore: mean(ranked.map((r) => r.ignore_fraction)),
    empty_tags: ranked.reduce((n, r) => n + r.empty_tags, 0),
    gt,
    classes,
    top: ranked.slice(0, top).map((r) => ({ rank: r.rank, id: r.id, split: r.split, suspicion: r.suspicion, reasons: r.reasons, gt_miou: r.gt_miou, gt_coverage: r.gt_coverage })),
  };
}

/** Spearman and precision of the top of the label-quality rankings (ascending: low = suspect) on the rows that have them. */
function labelQualityFigures(withGt: ImageRow[], bad: (r: ImageRow) => boolean, top: number): NonNullable<AuditMetrics['gt']>['label_quality'] {
  const rows = withGt.filter((r) => r.label_quality !== null && r.label_confidence !== null);
  if (rows.length === 0) return null;
  const target = rows.map((r) => 1 - (r.gt_miou ?? 0) * (r.gt_coverage ?? 0));
  const precision = (key: 'label_quality' | 'label_confidence') => {
    const head = [...rows].sort((x, y) => x[key]! - y[key]! || (x.id < y.id ? -1 : 1)).slice(0, top);
    return head.filter(bad).length / head.length;
  };
  return {
    images: rows.length,
    spearman: spearman(rows.map((r) => -r.label_quality!), target), precision_at_top: precision('label_quality'),
    confidence_spearman: spearman(rows.map((r) => -r.label_confidence!), target), confidence_precision_at_top: precision('label_confidence'),
  };
}

function classesCsv(sum: AuditSummary): string {
  const cols = ['class', 'name', 'tagged', 'present', 'empty_tags', 'area_mean', 'area_p10', 'area_p50', 'area_p90', 'mean_confidence',
    'iou_cam_random_walk', 'iou_random_walk_rca', 'iou_rca_final', 'iou_cam_final', 'gt_iou', 'gt_precision', 'gt_recall', 'mean_suspicion'];
  const rows = sum.classes.map((c): Row => ({
    class: c.class, name: c.name, tagged: c.tagged, present: c.present, empty_tags: c.empty_tags,
    area_mean: c.area.mean, area_p10: c.area.p10, area_p50: c.area.p50, area_p90: c.area.p90, mean_confidence: c.mean_confidence,
    iou_cam_random_walk: c.agreement.cam_random_walk, iou_random_walk_rca: c.agreement.random_walk_rca,
    iou_rca_final: c.agreement.rca_final, iou_cam_final: c.agreement.cam_final,
    gt_iou: c.gt?.iou ?? null, gt_precision: c.gt?.precision ?? null, gt_recall: c.gt?.recall ?? null, mean_suspicion: c.mean_suspicion,
  }));
  return toCsv(cols.map((name) => ({ name, type: 'utf8' })), rows);
}

/** What `tagseg audit [--json]` and `tagseg run audit` report: the metrics, where the report is, timings. */
export type AuditOutput = AuditMetrics & { report: string; seconds: number; measureSeconds: number; overlaySeconds: number; peakRssMiB: number };

export function auditOutput(r: AuditRunResult): AuditOutput {
  return { ...r.metrics, report: r.report, seconds: r.seconds, measureSeconds: r.measureSeconds, overlaySeconds: r.overlaySeconds, peakRssMiB: r.peakRssMiB };
}

export function formatAudit(r: AuditOutput): string {
  const m = r;
  const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : (100 * v).toFixed(1));
  const lines = [
    `audit: ${m.images} images, ${m.tagged_pairs} tagged (image, class) pairs, mean suspicion ${m.mean_suspicion?.toFixed(3) ?? '-'}, mean ignore ${pct(m.mean_ignore)}%, ${m.empty_tags} lost tags`,
  ];
  if (m.gt) {
    lines.push(`vs ground truth (${m.gt.images} images): mIoU ${Object.entries(m.gt.miou).map(([k, v]) => `${k} ${pct(v)}`).join(', ')}`);
    lines.push(`suspicion vs 1 - GT mIoU x coverage: Spearman ${m.gt.spearman?.toFixed(3) ?? '-'}; bad masks (GT mIoU < ${m.gt.bad_miou} or coverage < ${m.gt.bad_coverage}): ${pct(m.gt.precision_at_top)}% of the top ${Math.min(m.top.length, m.gt.images)} images with ground truth vs ${pct(m.gt.bad_rate)}% of all`);
    const lq = m.gt.label_quality;
    if (lq) lines.push(`out-of-fold label quality (low = suspect) on ${lq.images} images: Spearman ${lq.spearman?.toFixed(3) ?? '-'}, bad masks ${pct(lq.precision_at_top)}% of its top ${Math.min(m.top.length, lq.images)} (mean label probability: ${lq.confidence_spearman?.toFixed(3) ?? '-'}, ${pct(lq.confidence_precision_at_top)}%)`);
  }
  lines.push(`most suspicious: ${m.top.slice(0, 10).map((t) => `${t.id} ${t.suspicion.toFixed(2)}${t.gt_coverage === null ? '' : ` (GT mIoU ${pct(t.gt_miou)}, coverage ${pct(t.gt_coverage)})`}`).join(', ')}`);
  lines.push(`report: ${r.report}`);
  lines.push(`${r.seconds.toFixed(1)} s (measures ${r.measureSeconds.toFixed(1)} s, overlays ${r.overlaySeconds.toFixed(1)} s of sharp time), peak RSS ${r.peakRssMiB} MiB`);
  return lines.join('\n');
}
