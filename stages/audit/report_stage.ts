/**
 * Stage `audit_report`: the audit's whole-dataset step, after every shard of `audit` is done.
 *
 * Reads cache/audit_measures.arrow (one record per image: its rows and pixel counts; one file, or
 * a folder of audit.shards parts) in dataset.arrow's order and cache/audit_overlays (the JPEGs the
 * shards encoded), and the review: the out-of-fold label quality and the corrected masks. Ranks
 * every image by suspicion, sums the class summary, and writes cache/audit_images.arrow (ranked),
 * reports/audit/ (report.ts; the overlays copied into img/), metrics/audit.json and the per-class
 * plot. With ground truth, the metrics also say how well the suspicion score (which never looks at
 * ground truth) finds the bad masks: Spearman correlation with 1 - GT mIoU, and the share of bad
 * masks (GT mIoU < audit.bad_miou) among the top `audit.top` images against the base rate.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { artifact } from '../../pipeline/artifacts.js';
import { type ColumnSpec, type Row, TableReader, TableWriter, tableIds } from '../../pipeline/arrow.js';
import { TagsegError } from '../../pipeline/errors.js';
import { BufferedTextFile, ensureDir, exists, replaceDirAtomic, tempPathFor, writeFileAtomic } from '../../pipeline/fsutil.js';
import { joinedRows } from '../../pipeline/joined_rows.js';
import { writeJsonMetrics } from '../../pipeline/metrics_file.js';
import { partName, tableShardCount } from '../../pipeline/shard.js';
import type { Stage } from '../../pipeline/stage.js';
import type { Params } from '../params.js';
import { LABEL_QUALITY_FILE, listCorrections } from '../../data/review.js';
import { readLabelQuality } from '../../eval/label_quality.js';
import {
  AUDIT_CLASS_COLUMNS, AUDIT_IMAGE_COLUMNS, AUDIT_OUTPUTS, AUDIT_PARAMS, type MeasureRecord, OVERLAY_VIEWS, auditTablesHash, classRowToArrow, csvLine, decodeRecord, imageRowToArrow, toCsv,
} from './columns.js';
import type { ImageRow } from './image.js';
import { IMAGE_DIR, ReportEntries, writeReport } from './report.js';
import { type AuditSummary, SummaryAccumulator, type TiedPair } from './summary.js';
import { removeTree } from '../../pipeline/remove_tree.js';
import { RowSpill } from '../../pipeline/spill.js';

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections } from './params.js';

const INPUTS = { dataset: artifact('dataset'), measures: AUDIT_OUTPUTS.measures, overlays: AUDIT_OUTPUTS.overlays } as const;

export const stage: Stage = {
  name: 'audit_report',
  summary: 'rank the audited images, summarise the classes, build the HTML report -> cache/audit_images.arrow + reports/audit + metrics/audit.json',
  io: (p) => ({
    // the review: the out-of-fold label quality shown beside the suspicion, and which images have a corrected mask
    reads: [INPUTS.dataset, INPUTS.measures, INPUTS.overlays, LABEL_QUALITY_FILE, ...(p.dataset.corrections ? [p.dataset.corrections] : [])],
    writes: [AUDIT_OUTPUTS.images, AUDIT_OUTPUTS.report],
    metrics: [AUDIT_OUTPUTS.metrics],
    plots: [AUDIT_OUTPUTS.classesPlot],
    // dataset.root: the report's title
    params: [...AUDIT_PARAMS, 'dataset.root'],
  }),
  async run(ctx) {
    const r = await runAuditReport({ params: ctx.params, path: ctx.path });
    await writeAuditMetrics(r, ctx.path);
    const out = auditOutput(r);
    if (!ctx.json) process.stderr.write(`${formatAudit(out)}\n`);
    return out as unknown as Record<string, unknown>;
  },
};

/** metrics/audit.json (headline figures: the top images are in the summary and the report) and the per-class plot. */
export async function writeAuditMetrics(r: AuditRunResult, at: (rel: string) => string): Promise<void> {
  const { classes, top: _top, ...headline } = r.metrics;
  await writeJsonMetrics(at(AUDIT_OUTPUTS.metrics), headline);
  await writeJsonMetrics(at(AUDIT_OUTPUTS.classesPlot), Object.entries(classes).map(([c, f]) => ({ label: c, class: c, ...f })));
}

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
  /** The audit stage's time measuring and encoding overlays (sharp time); null for a report run alone. */
  measureSeconds: number | null;
  overlaySeconds: number | null;
  peakRssMiB: number;
}

export interface RunAuditReportOptions {
  params: Params;
  path(rel: string): string;
}

/** Which ranking the report and `rank` use, and why (the report's overview shows it). */
export const RANKING_NOTE = 'Ranked by suspicion (rank 1 = review first). On MSRC-v2 (335 train masks, bad = the lowest fifth by pseudo-mask '
  + 'mIoU x coverage, 3-fold out-of-fold models) its top 20 held 14 bad masks (Spearman 0.73 with quality), against 4 for the out-of-fold '
  + 'label quality (0.39) and 1 for the mean label probability (0.05). On the synthetic set (npm run bench -- audit_rankings: 90 train '
  + 'images, bad = the lowest fifth by pseudo-mask mIoU x coverage) its top 20 held 17 bad masks (Spearman 0.88 with quality), against 10 '
  + 'for the out-of-fold label quality (softmin 0.33, mean label probability 0.37) and 12 for their rank average; it also needs no '
  + 'extra model and covers every image. A simulated reviewer (npm run bench -- audit_reviewer) gained about as much from either: '
  + 'correcting the worst 10% raised the segmenter by 2.6 ± 0.1 mIoU points by suspicion, 3.1 ± 0.4 by label quality, 1.6 ± 0.4 at random '
  + 'on the synthetic set; on MSRC-v2 (3 folds, 1 seed) by 1.9 ± 1.8 by suspicion against 1.2 ± 1.3 at random, not beyond the fold-to-fold noise. '
  + 'The label quality (tagseg cv --oof: the probability a segmenter that never trained on the image gives each pseudo-label, '
  + 'softmin over pixels as in cleanlab, T = 0.1) is shown beside the suspicion: click its header to rank by it.';

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
export function rankImages(rows: Pick<ImageRow, 'id' | 'suspicion' | 'rank'>[]): void {
  const order = [...rows].sort((a, b) => b.suspicion - a.suspicion || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  order.forEach((r, i) => { r.rank = i + 1; });
}

/**
 * What the review adds to the image rows: the out-of-fold label quality (review/label_quality.csv,
 * when `tagseg cv --oof` filled it) and which images `dataset.corrections` holds a fixed mask for
 * (checked against dataset.arrow's ids).
 */
async function readReview(o: RunAuditReportOptions) {
  const quality = await readLabelQuality(o.path(LABEL_QUALITY_FILE));
  const dir = o.params.dataset.corrections;
  let fixed: Map<string, string> | null = null;
  if (dir) {
    const ids = new Set<string>();
    for await (const id of tableIds(o.path(INPUTS.dataset))) ids.add(id);
    fixed = await listCorrections(o.path(dir), ids);
  }
  return { quality, fixed, counts: { labelQuality: 0, corrected: fixed?.size ?? 0 } };
}

/** One image row's review fields (readReview), counted. */
function joinReview(r: ImageRow, review: Awaited<ReturnType<typeof readReview>>): void {
  const q = review.quality?.get(r.id);
  r.label_quality = q?.label_quality ?? null;
  r.label_confidence = q?.self_confidence ?? null;
  r.corrected = review.fixed?.has(r.id) ?? false;
  if (r.label_quality !== null) review.counts.labelQuality++;
}

async function writeImageTable(o: RunAuditReportOptions, classes: string[], background: number | null, ranked: AsyncIterable<Row>): Promise<void> {
  const imageWriter = await TableWriter.open(o.path(AUDIT_OUTPUTS.images), AUDIT_IMAGE_COLUMNS, {
    stage: 'audit', paramsHash: auditTablesHash(o.params), classes, extra: { background, level: 'image', weights: o.params.audit.weights },
  }, { batchRows: 4096 });
  try {
    for await (const r of ranked) await imageWriter.write(r);
    await imageWriter.close();
  } catch (err) {
    await imageWriter.abort();
    throw err;
  }
}


/** The measures' classes and background (their table's metadata). */
async function measuresMeta(o: RunAuditReportOptions): Promise<{ classes: string[]; background: number | null }> {
  const r = await TableReader.open(o.path(INPUTS.measures), { stage: 'audit' }); // a missing part: named with its shard command
  await r.close();
  const { meta } = r.info;
  const bg = meta.extra?.background;
  return { classes: meta.classes, background: typeof bg === 'number' ? bg : null };
}

/**
 * Every image's record in dataset.arrow's order (however audit was sharded), decoded one at a time:
 * a record's pixel counts are summed and dropped, so memory holds only what the report keeps.
 */
async function* measureRecords(o: RunAuditReportOptions): AsyncGenerator<MeasureRecord> {
  const tables = [{ file: o.path(INPUTS.dataset), stage: 'ingest', name: INPUTS.dataset }, { file: o.path(INPUTS.measures), stage: 'audit', name: INPUTS.measures }];
  for await (const [, m] of joinedRows(tables)) yield decodeRecord(m.record as string);
}

/** cache/audit_overlays' folders: the folder itself, or its part-<k>-of-<N> folders (N = the measures' part count, each checked). */
async function overlayFolders(o: RunAuditReportOptions): Promise<string[]> {
  const n = await tableShardCount(o.path(INPUTS.measures));
  const dir = o.path(INPUTS.overlays);
  const folders = n === 1 ? [dir] : Array.from({ length: n }, (_, k) => path.join(dir, partName({ k, n })));
  for (const [k, f] of folders.entries()) {
    if (!(await exists(f))) throw new TagsegError('overlay folder not found', { file: f, hint: n === 1 ? 'rerun `tagseg run audit`' : `run \`tagseg run audit --shard ${k}/${n}\`` });
  }
  return folders;
}

/**
 * The records stream through once: each adds to the class summary, writes its class rows to
 * audit.csv, its page entry and its image row to temp files (ReportEntries, RowSpill), and keeps
 * what the ranking and the metrics need (MetricRow); the image table and images.csv are then
 * written in rank order from the spill, data.js in dataset order with the ranks.
 */
export async function runAuditReport(o: RunAuditReportOptions): Promise<AuditRunResult> {
  const t0 = performance.now();
  const a = o.params.audit;
  const { classes, background } = await measuresMeta(o);
  const folders = await overlayFolders(o);
  const review = await readReview(o);
  const summary = new SummaryAccumulator(classes);
  const imageRows: MetricRow[] = [];
  const spill = await RowSpill.create(tempPathFor(o.path(AUDIT_OUTPUTS.images)));
  const entries = await ReportEntries.create(tempPathFor(o.path(AUDIT_OUTPUTS.report)));
  // The report is built in a staging folder (the shards' overlays copied in) and swapped in at the end.
  const reportDir = o.path(AUDIT_OUTPUTS.report);
  const staging = tempPathFor(reportDir);
  try {
    await writeCsv(path.join(staging, 'audit.csv'), AUDIT_CLASS_COLUMNS, recordsPass(o, { review, summary, imageRows, spill, entries }));
    for (const s of OVERLAY_VIEWS) await ensureDir(path.join(staging, IMAGE_DIR, s));
    for (const f of folders) await fs.cp(f, path.join(staging, IMAGE_DIR), { recursive: true });
    rankImages(imageRows);
    const ranks = imageRows.map((r) => r.rank);
    const order = imageRows.map((_, k) => k).sort((x, y) => ranks[x] - ranks[y]);
    const ranked = order.map((k) => imageRows[k]);
    // the full image rows, back from the spill in rank order
    const rowsByRank = async function* () {
      for (const k of order) yield { ...(await spill.get(k)), rank: ranks[k] };
    };
    await writeImageTable(o, classes, background, rowsByRank());
    const sum = summary.result();
    const metrics = auditMetrics(ranked, sum, a.bad_miou, a.bad_coverage, a.top);
    await writeCsv(path.join(staging, 'images.csv'), AUDIT_IMAGE_COLUMNS, rowsByRank());
    await writeFileAtomic(path.join(staging, 'classes.csv'), classesCsv(sum));
    await writeReport(staging, {
      // the dataset's folder name as params give it, not the project's (which depends on the checkout); no time
      title: path.basename(o.params.dataset.root),
      classes, background, images: entries, ranks, summary: sum,
      overview: {
        meanSuspicion: metrics.mean_suspicion, meanIgnore: metrics.mean_ignore,
        gt: sum.gt && metrics.gt ? { images: sum.gt.images, stages: sum.gt.stages, spearman: metrics.gt.spearman, labelQuality: metrics.gt.label_quality } : null,
        labelQualityImages: review.counts.labelQuality, corrected: review.counts.corrected, ranking: RANKING_NOTE,
      },
      imageColumns: AUDIT_IMAGE_COLUMNS, classColumns: AUDIT_CLASS_COLUMNS,
    });
    await replaceDirAtomic(staging, reportDir);
    return {
      metrics, summary: sum, report: path.join(reportDir, 'index.html'),
      seconds: (performance.now() - t0) / 1000, measureSeconds: null, overlaySeconds: null,
      peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    };
  } catch (err) {
    await removeTree(staging);
    throw err;
  } finally {
    await spill.remove();
    await entries.remove();
  }
}

/**
 * The one pass over the records: each is summed, its image row spilled (and kept slim in
 * `imageRows`), its page entry written; its class rows are yielded (for audit.csv).
 */
async function* recordsPass(o: RunAuditReportOptions, to: {
  review: Awaited<ReturnType<typeof readReview>>; summary: SummaryAccumulator; imageRows: MetricRow[]; spill: RowSpill; entries: ReportEntries;
}): AsyncGenerator<Row> {
  for await (const m of measureRecords(o)) {
    to.summary.add(m.classRows, m.image, m.pixels);
    joinReview(m.image, to.review);
    to.imageRows.push(metricRow(m.image));
    await to.spill.append(imageRowToArrow(m.image));
    await to.entries.add({
      row: m.image, tags: m.tags, classes: m.classRows.filter((r) => r.area > 0).map((r) => r.class), file: m.file, hasGt: m.pixels.gt !== null,
      classRows: m.classRows, heat: m.heat,
    });
    for (const r of m.classRows) yield classRowToArrow(r);
  }
}

/** A CSV file (header, then a line per row) written as the rows come, never held whole. */
async function writeCsv(file: string, columns: readonly ColumnSpec[], rows: Iterable<Row> | AsyncIterable<Row>): Promise<void> {
  const out = await BufferedTextFile.open(file);
  try {
    await out.write(csvLine(columns));
    for await (const r of rows) await out.write(csvLine(columns, r));
    await out.close();
  } catch (err) {
    await out.abort();
    throw err;
  }
}

/** What the ranking and the metrics read of an image row (the rest of it waits on disk: RowSpill). */
export type MetricRow = Pick<ImageRow, 'id' | 'split' | 'rank' | 'suspicion' | 'reasons' | 'tags' | 'ignore_fraction' | 'empty_tags' | 'gt_miou' | 'gt_coverage' | 'label_quality' | 'label_confidence'>;

function metricRow(r: ImageRow): MetricRow {
  const { id, split, rank, suspicion, reasons, tags, ignore_fraction, empty_tags, gt_miou, gt_coverage, label_quality, label_confidence } = r;
  return { id, split, rank, suspicion, reasons, tags, ignore_fraction, empty_tags, gt_miou, gt_coverage, label_quality, label_confidence };
}

/**
 * A pseudo-mask is bad (for scoring the ranking) when its GT mIoU is below `badMiou` or it labels
 * less than `badCoverage` of the ground truth (mostly ignore: no use for training); an image whose
 * mask labels nothing counts as GT mIoU 0.
 */
export function isBadMask(r: Pick<ImageRow, 'gt_miou' | 'gt_coverage'>, badMiou: number, badCoverage: number): boolean {
  return (r.gt_miou ?? 0) < badMiou || (r.gt_coverage ?? 0) < badCoverage;
}

export function auditMetrics(ranked: MetricRow[], sum: AuditSummary, badMiou: number, badCoverage: number, top: number): AuditMetrics {
  const mean = (xs: number[]) => (xs.length ? xs.reduce((p, q) => p + q, 0) / xs.length : null);
  let gt: AuditMetrics['gt'] = null;
  const withGt = ranked.filter((r) => r.gt_coverage !== null);
  if (sum.gt && withGt.length > 0) {
    const bad = (r: MetricRow) => isBadMask(r, badMiou, badCoverage);
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
function labelQualityFigures(withGt: MetricRow[], bad: (r: MetricRow) => boolean, top: number): NonNullable<AuditMetrics['gt']>['label_quality'] {
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
export type AuditOutput = AuditMetrics & { tied: TiedPair[]; report: string; seconds: number; measureSeconds: number | null; overlaySeconds: number | null; peakRssMiB: number };

export function auditOutput(r: AuditRunResult): AuditOutput {
  return { ...r.metrics, tied: r.summary.tied, report: r.report, seconds: r.seconds, measureSeconds: r.measureSeconds, overlaySeconds: r.overlaySeconds, peakRssMiB: r.peakRssMiB };
}

/** One line per class pair the tags cannot separate, with their vertical order and what to do about it. */
export function formatTied(tied: readonly TiedPair[]): string[] {
  return tied.map((t) => {
    const head = `tags cannot separate ${t.a} and ${t.b}: tagged together in ${t.together} images (${t.a} alone ${t.a_alone}, ${t.b} alone ${t.b_alone}), so the maps cannot know which region is which`;
    const order = `${t.a} lies above ${t.b} in ${t.final_a_above} of the ${t.final_both} pseudo-masks with both`;
    if (!t.gt_both) return `${head}; ${order}: if one lies above the other, say which with refine.above (upper/lower)`;
    const aUp = 2 * t.gt_a_above! >= t.gt_both;
    const [up, down] = aUp ? [t.a, t.b] : [t.b, t.a];
    const agree = aUp ? t.final_a_above : t.final_both - t.final_a_above;
    const verdict = 2 * agree < t.final_both ? `the pseudo-masks have them upside down: set refine.above: [${up}/${down}]` : 'the pseudo-masks mostly follow the ground truth';
    return `${head}; ${order}, in ${t.gt_a_above} of ${t.gt_both} ground-truth masks: ${verdict}`;
  });
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
  lines.push(...formatTied(m.tied));
  lines.push(`most suspicious: ${m.top.slice(0, 10).map((t) => `${t.id} ${t.suspicion.toFixed(2)}${t.gt_coverage === null ? '' : ` (GT mIoU ${pct(t.gt_miou)}, coverage ${pct(t.gt_coverage)})`}`).join(', ')}`);
  lines.push(`report: ${r.report}`);
  const measured = r.measureSeconds === null || r.overlaySeconds === null ? '' : ` (measures ${r.measureSeconds.toFixed(1)} s, overlays ${r.overlaySeconds.toFixed(1)} s of sharp time)`;
  lines.push(`${r.seconds.toFixed(1)} s${measured}, peak RSS ${r.peakRssMiB} MiB`);
  return lines.join('\n');
}
