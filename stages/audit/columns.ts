/**
 * The audit's tables and what every column means (the docs are stored in the Arrow schema, shown
 * in the HTML report and referenced from the README: this file is the documentation).
 *
 * cache/audit.arrow         one row per (image, class): every class that is tagged, in the final
 *                           pseudo-mask, or in the ground truth of that image
 * cache/audit_images.arrow  one row per image, with the suspicion score and its rank
 * reports/audit/*.csv       the same tables as CSV (audit.csv, images.csv) + classes.csv (summary.ts)
 * cache/audit_measures.arrow  the audit stage's per-image results for audit_report (one row per
 *                           image; with audit.shards N a folder of N parts, as cache/audit.arrow)
 *
 * All measures are taken at the working size of images.arrow (image.ts says why). "Stages":
 * cam = cams.arrow, random_walk = affinity_cams.arrow, rca = contrast_cams.arrow (its
 * `audit.rca_map` column), each turned into labels by argmax over the tagged classes (with a
 * background class: a constant background score, `audit.bg_threshold`); final = refine's
 * pseudo_masks.arrow. Ratios whose denominator is 0 are null.
 */
import { artifact } from '../../pipeline/artifacts.js';
import type { ColumnSpec, Row } from '../../pipeline/arrow.js';
import { SUSPICION_TERMS } from './suspicion.js';
import { paramsHash } from '../../pipeline/params_core.js';
import type { Params } from '../params.js';
import { type ClassRow, type ImageRow, MAP_STAGES } from './image.js';
import type { PixelCounts } from './summary.js';

export const AUDIT_OUTPUTS = {
  classes: artifact('auditClasses'),
  measures: artifact('auditMeasures'),
  overlays: artifact('auditOverlays'),
  images: artifact('auditImages'),
  report: artifact('auditReport'),
  metrics: artifact('auditMetrics'),
  classesPlot: artifact('auditClassesPlot'),
} as const;

/** Both audit stages' params; their tables' params hash leaves out audit.shards (the same tables however sharded). */
export const AUDIT_PARAMS = ['dataset.corrections', 'audit'];
export function auditTablesHash(p: Params): string {
  const { shards: _shards, ...audit } = p.audit;
  return paramsHash({ ...p, audit }, AUDIT_PARAMS);
}

/** The overlays' folders (cache/audit_overlays/<view>/, the report's img/<view>/): every one exists, empty or not. */
export const OVERLAY_VIEWS = [...MAP_STAGES, 'final', 'gt', 'full', 'photo', 'heat'];

/** File stem (no extension) of an image's overlays: row index + a filesystem-safe id. */
export function imageFileStem(index: number, id: string): string {
  return `${String(index).padStart(6, '0')}_${id.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 80)}`;
}

const f = (name: string, doc: string): ColumnSpec => ({ name, type: 'float32', nullable: true, doc });

export const AUDIT_CLASS_COLUMNS: ColumnSpec[] = [
  { name: 'id', type: 'utf8', doc: 'image id' },
  { name: 'split', type: 'utf8', doc: 'dataset split' },
  { name: 'class', type: 'int32', doc: 'dataset class index' },
  { name: 'class_name', type: 'utf8', doc: 'class name' },
  { name: 'tagged', type: 'bool', doc: 'the class is one of the image-level tags' },
  { name: 'in_gt', type: 'bool', nullable: true, doc: 'the ground truth has pixels of the class (null: no ground truth)' },
  f('area', 'fraction of the image the final pseudo-mask labels with the class'),
  f('area_cam', 'fraction labelled with the class by the CAM labels'),
  f('area_random_walk', 'fraction labelled with the class by the random-walk labels'),
  f('area_rca', 'fraction labelled with the class by the RCA labels'),
  f('gt_area', 'fraction of the non-void ground-truth pixels of the class (null: no ground truth)'),
  f('ignore_fraction', 'of the pixels the RCA labels give the class, the fraction the final mask leaves as ignore (refine was unsure there)'),
  { name: 'components', type: 'int32', doc: 'number of 4-connected regions of the class in the final mask' },
  f('largest_share', 'pixels of the largest region / pixels of the class (1 = one solid region)'),
  f('iou_cam_random_walk', 'IoU of the class between the CAM and random-walk labels (pixels neither map ignores)'),
  f('iou_random_walk_rca', 'IoU of the class between the random-walk and RCA labels'),
  f('iou_rca_final', 'IoU of the class between the RCA labels and the final mask (its labelled pixels)'),
  f('iou_cam_final', 'IoU of the class between the CAM labels and the final mask'),
  f('confidence', 'mean refine confidence (posterior of the chosen class, 0..1) over the class pixels of the final mask'),
  f('boundary_alignment', 'fraction of the class outline (pixels next to another class or ignore) within audit.edge_tolerance px of a strong image edge (Sobel magnitude in the image\'s top 1 - audit.edge_quantile); compare with the image\'s edge_chance'),
  { name: 'boundary_pixels', type: 'int32', doc: 'length of the class outline in pixels' },
  { name: 'empty_tag', type: 'bool', doc: 'tagged foreground class with no pixel in the final mask (tag consistency)' },
  { name: 'large_low_confidence', type: 'bool', doc: 'area >= audit.large_area with confidence < audit.low_confidence (tag consistency)' },
  f('gt_iou', 'IoU of the final mask with the ground truth for the class (void and ignored pixels left out; null: no ground truth, or class in neither)'),
  f('gt_precision', 'of the pixels the final mask labels with the class, the fraction the ground truth agrees with'),
  f('gt_recall', 'of the ground-truth pixels of the class, the fraction the final mask labels with it (ignored pixels left out)'),
  f('suspicion', "suspicion of this class's mask in [0, 1]: the image score's terms from this class's evidence alone (suspicion.ts classSuspicionTerms, audit.weights); the report's class filter ranks by it; null for a class only in the ground truth"),
  { name: 'reasons', type: 'list<utf8>', nullable: true, doc: 'the terms contributing most to the class suspicion' },
];

const TERM_DOCS: Record<(typeof SUSPICION_TERMS)[number], string> = {
  ignore: 'suspicion term: ignore_fraction',
  low_confidence: 'suspicion term: 1 - mean_confidence',
  disagreement: 'suspicion term: 1 - mean of agree_*_final',
  empty_tags: 'suspicion term: empty tags / foreground tags',
  fragmentation: 'suspicion term: fragmentation',
  misalignment: 'suspicion term: 1 - (boundary_alignment - edge_chance) / (1 - edge_chance), clamped to [0, 1]',
  large_low_confidence: 'suspicion term: large_low_confidence / classes present',
};

export const AUDIT_IMAGE_COLUMNS: ColumnSpec[] = [
  { name: 'id', type: 'utf8', doc: 'image id' },
  { name: 'split', type: 'utf8', doc: 'dataset split' },
  { name: 'rank', type: 'int32', doc: 'rank by suspicion over all images, 1 = most suspicious (review these first)' },
  { name: 'suspicion', type: 'float32', doc: 'suspicion score in [0, 1]: weighted mean of the t_* terms with audit.weights (suspicion.ts); never uses ground truth' },
  { name: 'reasons', type: 'list<utf8>', doc: 'the terms contributing most to the score (at most 3, each >= 0.05 of it)' },
  { name: 'width', type: 'int32', doc: 'working width (the audit\'s resolution)' },
  { name: 'height', type: 'int32', doc: 'working height' },
  { name: 'tags', type: 'list<utf8>', doc: 'image-level tags (class names)' },
  { name: 'classes', type: 'list<utf8>', doc: 'classes present in the final mask' },
  { name: 'ignore_fraction', type: 'float32', doc: 'fraction of the final mask that is ignore (255)' },
  f('mean_confidence', 'mean refine confidence (0..1) over the labelled pixels'),
  f('mean_margin', 'refine\'s mean margin (pseudo_masks.arrow mean_margin)'),
  f('agree_cam_final', 'fraction of the final mask\'s labelled pixels where the CAM labels agree'),
  f('agree_random_walk_final', 'same for the random-walk labels'),
  f('agree_rca_final', 'same for the RCA labels'),
  f('boundary_alignment', 'boundary_alignment over every class outline of the final mask'),
  { name: 'edge_chance', type: 'float32', doc: 'fraction of the image within audit.edge_tolerance of a strong edge: what a random outline would score' },
  { name: 'fragmentation', type: 'float32', doc: 'foreground pixels outside their class\'s largest region / foreground pixels' },
  { name: 'empty_tags', type: 'int32', doc: 'tagged foreground classes absent from the final mask' },
  { name: 'large_low_confidence', type: 'int32', doc: 'classes flagged large_low_confidence' },
  { name: 'refine_flags', type: 'list<utf8>', doc: 'refine\'s flags for the image (e.g. empty:<class>, mostly_ignore)' },
  f('gt_miou', 'mean gt_iou over the image\'s classes in ground truth or final mask (null: no ground truth)'),
  f('gt_pixel_accuracy', 'fraction of pixels labelled in both final mask and ground truth where they agree'),
  f('gt_coverage', 'fraction of the non-void ground-truth pixels the final mask labels (not ignore): gt_miou describes only these'),
  f('label_quality', 'confident-learning label quality in [0, 1], low = suspect: softmin (T = 0.1) over the labelled pixels of the probability a segmenter that never trained on the image gives the pseudo-label (review/label_quality.csv from `tagseg cv --oof`; eval/label_quality.ts); null without that table'),
  f('label_confidence', 'the same model\'s mean probability of the pseudo-labels (the softmin\'s T -> infinity limit); null without the table'),
  { name: 'corrected', type: 'bool', doc: 'dataset.corrections holds a hand-fixed mask of the image: segment trains on it instead of this pseudo-mask' },
  ...SUSPICION_TERMS.map((t): ColumnSpec => ({ name: `t_${t}`, type: 'float32', doc: TERM_DOCS[t] })),
];

/**
 * The audit stage's per-image results, read by audit_report: the image's rows and pixel counts as
 * JSON (exact doubles, so the report, its CSVs and the summary are those of a single pass; the
 * tables above store float32).
 */
export const AUDIT_MEASURE_COLUMNS: ColumnSpec[] = [
  { name: 'id', type: 'utf8', doc: 'image id' },
  { name: 'split', type: 'utf8', doc: 'dataset split' },
  { name: 'record', type: 'utf8', doc: 'JSON of a MeasureRecord (columns.ts): the image row (unranked), its class rows, tags, heatmap classes, overlay file stem and pixel counts (summary.ts)' },
];

/** One image's row of cache/audit_measures.arrow (the `record` column). */
export interface MeasureRecord {
  image: ImageRow;
  classRows: ClassRow[];
  /** Dataset class indices of the tags, sorted; the classes with a CAM heatmap (cams.arrow's tag order). */
  tags: number[];
  heat: number[];
  /** The overlays' file stem (imageFileStem: the image's position in dataset.arrow and its id). */
  file: string;
  pixels: PixelCounts;
}

// JSON keeps every finite double exactly; NaN, +-Infinity and -0 go through as {"$number": "..."}.
const special = (v: number) => !Number.isFinite(v) || Object.is(v, -0);

/** The `record` column's text of `r`: every number comes back as the same double. */
export function encodeRecord(r: MeasureRecord): string {
  return JSON.stringify(r, (_k, v: unknown) => (typeof v === 'number' && special(v) ? { $number: Object.is(v, -0) ? '-0' : String(v) } : v));
}

export function decodeRecord(text: string): MeasureRecord {
  return JSON.parse(text, (_k, v: unknown) => {
    const o = v as { $number?: unknown } | null;
    return o !== null && typeof o === 'object' && typeof o.$number === 'string' && Object.keys(o).length === 1 ? Number(o.$number) : v;
  }) as MeasureRecord;
}

export function imageRowToArrow(r: ImageRow): Row {
  const { terms, ...rest } = r;
  const out: Row = { ...rest };
  for (const t of SUSPICION_TERMS) out[`t_${t}`] = terms[t];
  return out;
}

export function classRowToArrow(r: ClassRow): Row {
  return { ...r };
}

/** One RFC 4180 CSV cell: lists joined with '|', null as empty, floats to 6 decimals. */
function csvCell(v: unknown): string {
  if (v === null || v === undefined) return '';
  let s: string;
  if (Array.isArray(v)) s = v.join('|');
  else if (typeof v === 'number') s = Number.isInteger(v) ? String(v) : String(Math.round(v * 1e6) / 1e6);
  else s = String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** The CSV line (with its newline) of `row`, or of the header when `row` is omitted. */
export function csvLine(columns: readonly ColumnSpec[], row?: Row): string {
  return `${columns.map((c) => csvCell(row ? row[c.name] : c.name)).join(',')}\n`;
}

/** RFC 4180 CSV of `rows` with the given columns (csvLine per row, header first). */
export function toCsv(columns: readonly ColumnSpec[], rows: readonly Row[]): string {
  return csvLine(columns) + rows.map((r) => csvLine(columns, r)).join('');
}
