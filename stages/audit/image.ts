/**
 * The audit of one image: every label map at the image's working size in, one row per class and
 * one row for the image out (the columns of columns.ts). Pure: no I/O, no tensors.
 *
 * Everything is measured at the working size (images.arrow): the map stages' stride-4 maps are
 * upsampled to it and the final pseudo-mask (stored at the original size) is resized to it by
 * nearest neighbour, so all stages and the ground truth are compared pixel for pixel, and the
 * cost per image is bounded by ingest.size whatever the photos' resolution.
 */
import { TagsegError } from '../../pipeline/errors.js';
import {
  IGNORE, boundaryAlignment, classOverlap, components, dilate, iouOf, labelCounts, pixelAgreement, sobelMagnitude, strongEdges,
} from './measures.js';
import { type SuspicionTerms, type SuspicionWeights, classSuspicionTerms, suspicionScore, suspicionTerms } from './suspicion.js';

/** The label maps the audit compares, in pipeline order; `final` is refine's pseudo-mask. */
export const MAP_STAGES = ['cam', 'random_walk', 'rca'] as const;
export type MapStage = (typeof MAP_STAGES)[number];
export const VIEW_STAGES = [...MAP_STAGES, 'final'] as const;
export type ViewStage = (typeof VIEW_STAGES)[number];

export interface AuditSettings {
  /** Per-image quantile of the Sobel magnitude above which a pixel is a strong edge. */
  edgeQuantile: number;
  /** Absolute floor of a strong edge's Sobel magnitude (flat images have none). */
  edgeFloor: number;
  /** Distance in pixels within which a mask boundary pixel counts as on an edge. */
  edgeTolerance: number;
  /** Area fraction from which a class counts as "large" for the large-low-confidence check. */
  largeArea: number;
  /** Mean confidence below which a large class is flagged. */
  lowConfidence: number;
  weights: SuspicionWeights;
}

export interface AuditImageInput {
  id: string;
  split: string;
  height: number;
  width: number;
  /** sRGB [height, width, 3]. */
  pixels: Uint8Array;
  /** The image-level tags (dataset class indices). */
  tags: readonly number[];
  /** Label maps [height, width] of the map stages (argmax of their maps). */
  maps: Record<MapStage, Uint8Array>;
  /** refine's pseudo-mask [height, width], 255 = ignore. */
  final: Uint8Array;
  /** refine's confidence [height, width], 255 x posterior of the chosen class. */
  confidence: Uint8Array;
  /** Ground truth [height, width] (255 = void), or null. */
  gt: Uint8Array | null;
  meanMargin: number | null;
  refineFlags: string[];
}

export interface ClassRow {
  id: string;
  split: string;
  class: number;
  class_name: string;
  tagged: boolean;
  in_gt: boolean | null;
  area: number;
  area_cam: number;
  area_random_walk: number;
  area_rca: number;
  gt_area: number | null;
  ignore_fraction: number | null;
  components: number;
  largest_share: number | null;
  iou_cam_random_walk: number | null;
  iou_random_walk_rca: number | null;
  iou_rca_final: number | null;
  iou_cam_final: number | null;
  confidence: number | null;
  boundary_alignment: number | null;
  boundary_pixels: number;
  empty_tag: boolean;
  large_low_confidence: boolean;
  gt_iou: number | null;
  gt_precision: number | null;
  gt_recall: number | null;
  /** Per-class suspicion (suspicion.ts classSuspicionTerms); null for a class only in the ground truth. */
  suspicion: number | null;
  reasons: string[] | null;
}

export interface ImageRow {
  id: string;
  split: string;
  width: number;
  height: number;
  tags: string[];
  classes: string[];
  ignore_fraction: number;
  mean_confidence: number | null;
  mean_margin: number | null;
  agree_cam_final: number | null;
  agree_random_walk_final: number | null;
  agree_rca_final: number | null;
  boundary_alignment: number | null;
  edge_chance: number;
  fragmentation: number;
  empty_tags: number;
  large_low_confidence: number;
  refine_flags: string[];
  gt_miou: number | null;
  gt_pixel_accuracy: number | null;
  gt_coverage: number | null;
  suspicion: number;
  reasons: string[];
  /** Out-of-fold label quality (review/label_quality.csv, `tagseg cv --oof`): softmin and mean label probability; null without it. */
  label_quality: number | null;
  label_confidence: number | null;
  /** A hand-fixed mask of the image is in `dataset.corrections` (segment trains on it instead). */
  corrected: boolean;
  /** 1 = most suspicious; filled in once every image is scored. */
  rank: number;
  terms: SuspicionTerms;
}

export interface ImageAudit {
  classRows: ClassRow[];
  image: ImageRow;
}

const ratio = (a: number, b: number): number | null => (b > 0 ? a / b : null);

/** Every per-pixel input must be H x W (pixels x 3). */
function checkSizes(x: AuditImageInput): void {
  const n = x.height * x.width;
  const check = (what: string, arr: Uint8Array | null, per = 1) => {
    if (arr && arr.length !== n * per) throw new TagsegError(`image '${x.id}': ${what} has ${arr.length} values, expected ${x.height} x ${x.width}${per > 1 ? ` x ${per}` : ''}`);
  };
  check('pixels', x.pixels, 3);
  check('final mask', x.final);
  check('confidence', x.confidence);
  check('ground truth', x.gt);
  for (const st of MAP_STAGES) check(`${st} labels`, x.maps[st]);
}

/** What every class row of an image reads: label counts, confidence sums, edges near each pixel. */
interface ImageContext {
  n: number;
  counts: Record<'final' | MapStage, ReturnType<typeof labelCounts>>;
  gtCounts: ReturnType<typeof labelCounts> | null;
  gtValid: number;
  /** Confidence summed per final class. */
  confSum: Float64Array;
  /** Pixels the RCA map labels c that the final mask left as ignore. */
  rcaToIgnore: Float64Array;
  /** 1 where a pixel lies within edgeTolerance of a strong edge. */
  near: Uint8Array;
  nearCount: number;
}

function imageContext(x: AuditImageInput, s: AuditSettings): ImageContext {
  const n = x.height * x.width;
  const counts = { final: labelCounts(x.final), cam: labelCounts(x.maps.cam), random_walk: labelCounts(x.maps.random_walk), rca: labelCounts(x.maps.rca) };
  const gtCounts = x.gt ? labelCounts(x.gt) : null;
  const confSum = new Float64Array(256);
  const rcaToIgnore = new Float64Array(256);
  for (let i = 0; i < n; i++) {
    confSum[x.final[i]] += x.confidence[i];
    if (x.final[i] === IGNORE) rcaToIgnore[x.maps.rca[i]]++;
  }
  const near = dilate(strongEdges(sobelMagnitude(x.pixels, x.height, x.width), s.edgeQuantile, s.edgeFloor), x.height, x.width, s.edgeTolerance);
  let nearCount = 0;
  for (const v of near) nearCount += v;
  return { n, counts, gtCounts, gtValid: gtCounts ? n - gtCounts[IGNORE] : 0, confSum, rcaToIgnore, near, nearCount };
}

/** The classes that get a row: tagged, in the final mask, or in the ground truth; ascending. */
function rowClassesOf(x: AuditImageInput, classes: readonly string[], ctx: ImageContext): number[] {
  const out = new Set<number>(x.tags);
  for (let c = 0; c < classes.length; c++) {
    if (ctx.counts.final[c] > 0 || (ctx.gtCounts && ctx.gtCounts[c] > 0)) out.add(c);
  }
  for (const c of out) {
    if (!(c >= 0 && c < classes.length)) throw new TagsegError(`image '${x.id}': class index ${c} is outside the ${classes.length} classes`);
  }
  return [...out].sort((a, b) => a - b);
}

/** Per class, what the image row adds up: outline pixels, foreground regions, lost tags, GT overlaps. */
interface ClassExtras { boundary: number; aligned: number; largest: number; gtInter: number }

/** One class's row (suspicion filled in later) and what the image row adds up. */
function classRowOf(x: AuditImageInput, c: number, classes: readonly string[], background: number | null, s: AuditSettings, ctx: ImageContext): { row: ClassRow; extras: ClassExtras } {
  const { n, counts, gtCounts, gtValid } = ctx;
  const area = counts.final[c];
  const comp = components(x.final, x.height, x.width, c);
  const b = boundaryAlignment(x.final, ctx.near, x.height, x.width, c);
  const tagged = x.tags.includes(c);
  const confidence = area > 0 ? ctx.confSum[c] / area / 255 : null;
  let gt = { iou: null as number | null, precision: null as number | null, recall: null as number | null, inter: 0 };
  if (x.gt) {
    // Void ground truth and ignored predictions are left out, as in eval/metrics.ts.
    const o = classOverlap(x.final, x.gt, c);
    gt = { iou: iouOf(o), precision: ratio(o.inter, o.union - countOnlyIn(x.final, x.gt, c)), recall: ratio(o.inter, o.union - countOnlyIn(x.gt, x.final, c)), inter: o.inter };
  }
  const row: ClassRow = {
    id: x.id, split: x.split, class: c, class_name: classes[c], tagged,
    in_gt: gtCounts ? gtCounts[c] > 0 : null,
    area: area / n, area_cam: counts.cam[c] / n, area_random_walk: counts.random_walk[c] / n, area_rca: counts.rca[c] / n,
    gt_area: gtCounts ? (gtValid > 0 ? gtCounts[c] / gtValid : 0) : null,
    ignore_fraction: ratio(ctx.rcaToIgnore[c], counts.rca[c]),
    components: comp.count, largest_share: ratio(comp.largest, area),
    iou_cam_random_walk: iouOf(classOverlap(x.maps.cam, x.maps.random_walk, c)),
    iou_random_walk_rca: iouOf(classOverlap(x.maps.random_walk, x.maps.rca, c)),
    iou_rca_final: iouOf(classOverlap(x.maps.rca, x.final, c)),
    iou_cam_final: iouOf(classOverlap(x.maps.cam, x.final, c)),
    confidence, boundary_alignment: ratio(b.aligned, b.boundary), boundary_pixels: b.boundary,
    empty_tag: tagged && c !== background && area === 0,
    large_low_confidence: area / n >= s.largeArea && confidence !== null && confidence < s.lowConfidence,
    gt_iou: gt.iou, gt_precision: gt.precision, gt_recall: gt.recall,
    suspicion: null, reasons: null,
  };
  return { row, extras: { boundary: b.boundary, aligned: b.aligned, largest: c !== background ? comp.largest : 0, gtInter: gt.inter } };
}

export function auditImage(x: AuditImageInput, classes: readonly string[], background: number | null, s: AuditSettings): ImageAudit {
  checkSizes(x);
  const ctx = imageContext(x, s);
  const classRows: ClassRow[] = [];
  const sum: ClassExtras = { boundary: 0, aligned: 0, largest: 0, gtInter: 0 };
  for (const c of rowClassesOf(x, classes, ctx)) {
    const { row, extras } = classRowOf(x, c, classes, background, s, ctx);
    classRows.push(row);
    for (const k of Object.keys(sum) as (keyof ClassExtras)[]) sum[k] += extras[k];
  }
  const image = imageRowOf(x, classes, background, s, ctx, classRows, sum);
  for (const r of classRows) {
    if (!r.tagged && r.area === 0) continue; // ground truth only: nothing of the pipeline's to doubt
    const cs = suspicionScore(classSuspicionTerms(r, r.class !== background, image.edge_chance), s.weights);
    r.suspicion = cs.score;
    r.reasons = cs.reasons;
  }
  return { classRows, image };
}

/** The image's row: its measures, its ground-truth figures and its suspicion. */
function imageRowOf(x: AuditImageInput, classes: readonly string[], background: number | null, s: AuditSettings, ctx: ImageContext, classRows: ClassRow[], sum: ClassExtras): ImageRow {
  const { n, counts } = ctx;
  const labelled = n - counts.final[IGNORE];
  let confLabelled = 0;
  for (let c = 0; c < IGNORE; c++) confLabelled += ctx.confSum[c];
  let gtScored = 0;
  if (x.gt) for (let i = 0; i < n; i++) if (x.gt[i] !== IGNORE && x.final[i] !== IGNORE) gtScored++;
  const fgArea = classRows.filter((r) => r.class !== background).reduce((a, r) => a + counts.final[r.class], 0);
  const gtIous = classRows.map((r) => r.gt_iou).filter((v): v is number => v !== null);
  const agreements = MAP_STAGES.map((st) => pixelAgreement(x.maps[st], x.final));
  const boundary = ratio(sum.aligned, sum.boundary);
  const edgeChance = n > 0 ? ctx.nearCount / n : 0;
  const fragmentation = fgArea > 0 ? 1 - sum.largest / fgArea : 0;
  const ignoreFraction = n > 0 ? counts.final[IGNORE] / n : 0;
  const meanConfidence = labelled > 0 ? confLabelled / labelled / 255 : null;
  const emptyTags = classRows.filter((r) => r.empty_tag).length;
  const largeLow = classRows.filter((r) => r.large_low_confidence).length;
  const terms = suspicionTerms({
    ignoreFraction, meanConfidence, agreements, emptyTags, foregroundTags: x.tags.filter((c) => c !== background).length, fragmentation,
    boundaryAlignment: boundary, edgeChance, largeLowConfidence: largeLow, classesPresent: classRows.filter((r) => r.area > 0).length,
  });
  const sus = suspicionScore(terms, s.weights);
  return {
    id: x.id, split: x.split, width: x.width, height: x.height,
    tags: [...x.tags].sort((a, b) => a - b).map((c) => classes[c]),
    classes: classRows.filter((r) => r.area > 0).map((r) => r.class_name),
    ignore_fraction: ignoreFraction, mean_confidence: meanConfidence, mean_margin: x.meanMargin,
    agree_cam_final: agreements[0], agree_random_walk_final: agreements[1], agree_rca_final: agreements[2],
    boundary_alignment: boundary, edge_chance: edgeChance, fragmentation, empty_tags: emptyTags, large_low_confidence: largeLow,
    refine_flags: [...x.refineFlags],
    // mIoU leaves ignored pixels out (a 99%-ignore mask can score 1), so the coverage says how much was scored.
    gt_miou: gtIous.length > 0 ? gtIous.reduce((a, v) => a + v, 0) / gtIous.length : null,
    gt_pixel_accuracy: x.gt ? ratio(sum.gtInter, gtScored) : null,
    gt_coverage: x.gt ? ratio(gtScored, ctx.gtValid) : null,
    suspicion: sus.score, reasons: sus.reasons, label_quality: null, label_confidence: null, corrected: false,
    rank: 0, terms,
  };
}

/** Pixels (neither map ignore) where `b` is c and `a` is not. */
function countOnlyIn(a: Uint8Array, b: Uint8Array, c: number): number {
  let k = 0;
  for (let i = 0; i < a.length; i++) if (b[i] === c && a[i] !== c && a[i] !== IGNORE) k++;
  return k;
}
