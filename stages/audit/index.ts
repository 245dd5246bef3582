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
import PQueue from 'p-queue';
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
import { type AuditSettings, type ImageRow, MAP_STAGES, type MapStage, auditImage } from './image.js';
import { encodeJpeg, heatmapRgb, overlayRgb } from '../../data/overlay.js';
import { IMAGE_DIR, type ReportImage, imageFileStem, writeReport } from './report.js';
import { type AuditSummary, SummaryAccumulator } from './summary.js';

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections } from './params.js';

const PARAMS = ['audit'];
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
    // dataset.root: the original images, for the full-size overlays.
    reads: [p.dataset.root, ...Object.values(AUDIT_INPUTS)],
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
}

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

export async function runAudit(o: RunAuditOptions): Promise<AuditRunResult> {
  const t0 = performance.now();
  const a = o.params.audit;
  const settings: AuditSettings = {
    edgeQuantile: a.edge_quantile, edgeFloor: a.edge_floor, edgeTolerance: a.edge_tolerance,
    largeArea: a.large_area, lowConfidence: a.low_confidence, weights: a.weights,
  };
  const thresholds: Record<MapStage, number> = { cam: a.cam_threshold, random_walk: a.random_walk_threshold, rca: a.rca_threshold };

  // ---- inputs: same classes, same rows
  const files = Object.fromEntries(Object.entries(AUDIT_INPUTS).map(([k, v]) => [k, o.path(v)])) as Record<keyof typeof AUDIT_INPUTS, string>;
  const infos = Object.fromEntries(await Promise.all(Object.entries(files).map(async ([k, f]) => [k, await readInfo(f)] as const)));
  const classes = infos.images.meta.classes;
  const bgRaw = infos.images.meta.extra?.background;
  const background = typeof bgRaw === 'number' ? bgRaw : null;
  for (const [k, info] of Object.entries(infos)) {
    if (JSON.stringify(info.meta.classes) !== JSON.stringify(classes) || info.numRows !== infos.images.numRows) {
      throw new TagsegError(`${path.basename(info.file)} and images.arrow disagree (classes or row count)`, { file: files[k as keyof typeof files], hint: 'rerun the pipeline up to refine (`tagseg repro refine`)' });
    }
  }
  if (a.rca_map === 'propagated' && !infos.rca.columns.some((c) => c.name === 'propagated')) {
    throw new TagsegError("contrast_cams.arrow has no 'propagated' column", { file: files.rca, hint: 'set audit.rca_map: cams, or rerun the contrast stage' });
  }
  const dtypes: Record<MapStage, unknown> = { cam: infos.cams.meta.extra?.dtype, random_walk: infos.random_walk.meta.extra?.dtype, rca: infos.rca.meta.extra?.dtype };

  // ---- outputs: the report is built in a staging folder and swapped in at the end
  const reportDir = o.path(AUDIT_OUTPUTS.report);
  const staging = tempPathFor(reportDir);
  const stages = [...MAP_STAGES, 'final', 'gt', 'full', 'photo', 'heat'];
  for (const s of stages) await ensureDir(path.join(staging, IMAGE_DIR, s));
  const classWriter = await TableWriter.open(o.path(AUDIT_OUTPUTS.classes), AUDIT_CLASS_COLUMNS, {
    stage: 'audit', paramsHash: paramsHash(o.params, PARAMS), classes, extra: { background, level: 'image_class' },
  }, { batchRows: 4096 });
  const classRows: Row[] = [];
  const imageRows: ImageRow[] = [];
  const reportImages: ReportImage[] = [];
  const summary = new SummaryAccumulator(classes);
  const queue = new PQueue({ concurrency: 4 });
  let overlaySeconds = 0;
  let overlayError: unknown = null;
  // Errors are kept and rethrown by the main loop (a rejected queue promise nobody awaits would
  // crash the process as an unhandled rejection).
  const encode = (file: string, rgb: () => Promise<{ rgb: Uint8Array; H: number; W: number }>, longSide: number) =>
    void queue.add(async () => {
      if (overlayError) return;
      try {
        const t = performance.now();
        const x = await rgb();
        await fs.writeFile(file, await encodeJpeg(x.rgb, x.H, x.W, longSide));
        overlaySeconds += (performance.now() - t) / 1000;
      } catch (err) {
        overlayError ??= err;
      }
    });

  const readers = {
    dataset: await TableReader.open(files.dataset, { stage: 'ingest' }),
    images: await TableReader.open(files.images, { stage: 'ingest' }),
    cam: await TableReader.open(files.cams, { stage: MAP_INPUT.cam.stage }),
    random_walk: await TableReader.open(files.random_walk, { stage: MAP_INPUT.random_walk.stage }),
    rca: await TableReader.open(files.rca, { stage: MAP_INPUT.rca.stage }),
    pseudo: await TableReader.open(files.pseudo, { stage: 'refine' }),
  };
  const iters: Record<keyof typeof readers, AsyncIterator<Row>> = {
    dataset: readers.dataset.rows(), images: readers.images.rows(), cam: readers.cam.rows(),
    random_walk: readers.random_walk.rows(), rca: readers.rca.rows(),
    // refine.shards > 1: a part folder, read in dataset.arrow's id order
    pseudo: readers.pseudo.numParts > 1 ? readers.pseudo.rowsAlong(tableIds(files.dataset)) : readers.pseudo.rows(),
  };
  const bar = progress('audit', infos.images.numRows);
  let measureSeconds = 0;
  let index = 0;
  try {
    while (true) {
      const next = Object.fromEntries(await Promise.all(Object.entries(iters).map(async ([k, it]) => [k, await it.next()] as const)));
      const ir = next.images;
      if (ir.done) break;
      const id = ir.value.id as string;
      for (const [k, n] of Object.entries(next)) {
        if (n.done || n.value.id !== id) {
          const file = readers[k as keyof typeof readers].info.file;
          throw new TagsegError(`row ${index} is '${n.done ? 'end of table' : String(n.value.id)}', images.arrow has '${id}'`, { file, hint: 'the tables come from different runs; rerun the pipeline up to refine' });
        }
      }
      const tm = performance.now();
      const img = ir.value;
      const ds = next.dataset.value as Row;
      const pm = next.pseudo.value as Row;
      const H = img.height as number;
      const W = img.width as number;
      const pixels = img.pixels as Uint8Array;
      const maps = {} as Record<MapStage, Uint8Array>;
      let camMaps: { up: Float32Array; tags: number[] } | null = null;
      for (const st of MAP_STAGES) {
        const r = next[st].value as Row;
        const tags = r.tags as number[];
        const bytes = (st === 'rca' && a.rca_map === 'propagated' ? r.propagated : r.cams) as Uint8Array | null;
        if (!bytes) throw new TagsegError(`image '${id}' has no ${st === 'rca' ? `'${a.rca_map}'` : 'cams'} maps`, { file: readers[st].info.file });
        const up = resizeBilinear(decodeMaps(bytes, dtypes[st]), tags.length, r.height as number, r.width as number, H, W);
        maps[st] = camLabels(up, tags, H, W, background, thresholds[st]);
        if (st === 'cam') camMaps = { up, tags };
      }
      const PH = pm.height as number;
      const PW = pm.width as number;
      const finalOrig = pm.mask as Uint8Array;
      if (finalOrig.length !== PH * PW) throw new TagsegError(`image '${id}': mask has ${finalOrig.length} pixels, expected ${PH} x ${PW}`, { file: files.pseudo });
      const final = resizeNearest(finalOrig, PW, PH, W, H);
      const confidence = resizeNearest(pm.confidence as Uint8Array, PW, PH, W, H);
      const gt = (img.mask as Uint8Array | null) ?? null;
      const audit = auditImage({
        id, split: img.split as string, height: H, width: W, pixels, tags: img.tags as number[], maps, final, confidence, gt,
        meanMargin: (pm.mean_margin as number | null) ?? null, refineFlags: (pm.flags as string[] | null) ?? [],
      }, classes, background, settings);
      summary.add({ ...maps, final }, gt, audit.classRows, audit.image);
      for (const r of audit.classRows) {
        const row = classRowToArrow(r);
        await classWriter.write(row);
        classRows.push(row);
      }
      imageRows.push(audit.image);
      measureSeconds += (performance.now() - tm) / 1000;

      // ---- overlays (bounded queue: at most ~16 images' buffers in flight)
      const stem = imageFileStem(index, id);
      const views: [string, Uint8Array][] = [...MAP_STAGES.map((s): [string, Uint8Array] => [s, maps[s]]), ['final', final]];
      if (gt) views.push(['gt', gt]);
      for (const [s, labels] of views) {
        encode(path.join(staging, IMAGE_DIR, s, `${stem}.jpg`), async () => ({ rgb: overlayRgb(pixels, labels, H, W, background), H, W }), a.thumb_size);
      }
      // The detail view: the photo and one CAM heatmap per tag, at the working size.
      encode(path.join(staging, IMAGE_DIR, 'photo', `${stem}.jpg`), async () => ({ rgb: pixels, H, W }), 0);
      const heat: number[] = [];
      if (camMaps) {
        const cm = camMaps;
        cm.tags.forEach((c, k) => {
          heat.push(c);
          encode(path.join(staging, IMAGE_DIR, 'heat', `${stem}_${c}.jpg`), async () => ({ rgb: heatmapRgb(pixels, cm.up.subarray(k * H * W, (k + 1) * H * W), H, W), H, W }), 0);
        });
      }
      if (a.full_overlays) {
        const imagePath = resolveDatasetPath(o.path(o.params.dataset.root), ds.image_path as string);
        encode(path.join(staging, IMAGE_DIR, 'full', `${stem}.jpg`), async () => {
          const d = await decodeImage(imagePath, 0);
          if (d.width !== PW || d.height !== PH) {
            throw new TagsegError(`image is ${d.width}x${d.height} but its pseudo-mask is ${PW}x${PH}`, { file: imagePath, hint: 'the dataset changed since ingest; rerun the pipeline' });
          }
          return { rgb: overlayRgb(d.rgb, finalOrig, PH, PW, background), H: PH, W: PW };
        }, 0);
      }
      reportImages.push({
        row: audit.image, tags: [...(img.tags as number[])].sort((x, y) => x - y),
        classes: audit.classRows.filter((r) => r.area > 0).map((r) => r.class), file: stem, hasGt: gt !== null,
        classRows: audit.classRows, heat,
      });
      await queue.onSizeLessThan(16);
      if (overlayError) throw overlayError;
      index++;
      bar.tick();
    }
    await queue.onIdle();
    if (overlayError) throw overlayError;
    bar.stop();
    await classWriter.close();
  } catch (err) {
    bar.stop();
    queue.clear();
    await queue.onIdle().catch(() => undefined);
    await classWriter.abort();
    await fs.rm(staging, { recursive: true, force: true });
    throw err;
  } finally {
    await Promise.all(Object.values(readers).map((r) => r.close()));
  }

  // ---- rank, tables, summary, report, metrics
  rankImages(imageRows);
  const imageWriter = await TableWriter.open(o.path(AUDIT_OUTPUTS.images), AUDIT_IMAGE_COLUMNS, {
    stage: 'audit', paramsHash: paramsHash(o.params, PARAMS), classes, extra: { background, level: 'image', weights: a.weights },
  }, { batchRows: 4096 });
  const ranked = [...imageRows].sort((x, y) => x.rank - y.rank);
  try {
    for (const r of ranked) await imageWriter.write(imageRowToArrow(r));
    await imageWriter.close();
  } catch (err) {
    await imageWriter.abort();
    throw err;
  }
  const sum = summary.result();
  const metrics = auditMetrics(ranked, sum, a.bad_miou, a.bad_coverage, a.top);
  await writeFileAtomic(path.join(staging, 'images.csv'), toCsv(AUDIT_IMAGE_COLUMNS, ranked.map(imageRowToArrow)));
  await writeFileAtomic(path.join(staging, 'audit.csv'), toCsv(AUDIT_CLASS_COLUMNS, classRows));
  await writeFileAtomic(path.join(staging, 'classes.csv'), classesCsv(sum));
  await writeReport(staging, {
    // the dataset's folder name as params give it, not the project's (which depends on the checkout); no time
    title: path.basename(o.params.dataset.root),
    classes, background, images: reportImages, summary: sum,
    overview: {
      meanSuspicion: metrics.mean_suspicion, meanIgnore: metrics.mean_ignore,
      gt: sum.gt && metrics.gt ? { images: sum.gt.images, stages: sum.gt.stages, spearman: metrics.gt.spearman } : null,
    },
    imageColumns: AUDIT_IMAGE_COLUMNS, classColumns: AUDIT_CLASS_COLUMNS,
  });
  await replaceDirAtomic(staging, reportDir);
  return {
    metrics, summary: sum, report: path.join(reportDir, 'index.html'),
    seconds: (performance.now() - t0) / 1000, measureSeconds, overlaySeconds,
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
  }
  lines.push(`most suspicious: ${m.top.slice(0, 10).map((t) => `${t.id} ${t.suspicion.toFixed(2)}${t.gt_coverage === null ? '' : ` (GT mIoU ${pct(t.gt_miou)}, coverage ${pct(t.gt_coverage)})`}`).join(', ')}`);
  lines.push(`report: ${r.report}`);
  lines.push(`${r.seconds.toFixed(1)} s (measures ${r.measureSeconds.toFixed(1)} s, overlays ${r.overlaySeconds.toFixed(1)} s of sharp time), peak RSS ${r.peakRssMiB} MiB`);
  return lines.join('\n');
}
