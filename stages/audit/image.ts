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

export function auditImage(x: AuditImageInput, classes: readonly string[], background: number | null, s: AuditSettings): ImageAudit {
  const { height: H, width: W } = x;
  const n = H * W;
  const check = (what: string, arr: Uint8Array | null, per = 1) => {
    if (arr && arr.length !== n * per) throw new TagsegError(`image '${x.id}': ${what} has ${arr.length} values, expected ${H} x ${W}${per > 1 ? ` x ${per}` : ''}`);
  };
  check('pixels', x.pixels, 3);
  check('final mask', x.final);
  check('confidence', x.confidence);
  check('ground truth', x.gt);
  for (const st of MAP_STAGES) check(`${st} labels`, x.maps[st]);

  const counts = {
    final: labelCounts(x.final),
    cam: labelCounts(x.maps.cam),
    random_walk: labelCounts(x.maps.random_walk),
    rca: labelCounts(x.maps.rca),
  };
  const gtCounts = x.gt ? labelCounts(x.gt) : null;
  const gtValid = gtCounts ? n - gtCounts[IGNORE] : 0;

  // Which classes get a row: tagged, in the final mask, or in the ground truth.
  const tagged = new Set(x.tags);
  const rowClasses = new Set<number>(x.tags);
  for (let c = 0; c < classes.length; c++) {
    if (counts.final[c] > 0 || (gtCounts && gtCounts[c] > 0)) rowClasses.add(c);
  }
  for (const c of rowClasses) {
    if (!(c >= 0 && c < classes.length)) throw new TagsegError(`image '${x.id}': class index ${c} is outside the ${classes.length} classes`);
  }

  // Confidence sums per final class.
  const confSum = new Float64Array(256);
  for (let i = 0; i < n; i++) confSum[x.final[i]] += x.confidence[i];
  // Pixels the RCA map labels c that the final mask left as ignore.
  const rcaToIgnore = new Float64Array(256);
  for (let i = 0; i < n; i++) if (x.final[i] === IGNORE) rcaToIgnore[x.maps.rca[i]]++;

  const near = dilate(strongEdges(sobelMagnitude(x.pixels, H, W), s.edgeQuantile, s.edgeFloor), H, W, s.edgeTolerance);
  let nearCount = 0;
  for (const v of near) nearCount += v;

  const classRows: ClassRow[] = [];
  let boundaryAll = 0;
  let alignedAll = 0;
  let fgArea = 0;
  let fgLargest = 0;
  let emptyTags = 0;
  let largeLow = 0;
  let gtInter = 0;
  const gtIous: number[] = [];
  for (const c of [...rowClasses].sort((a, b) => a - b)) {
    const area = counts.final[c];
    const comp = components(x.final, H, W, c);
    const b = boundaryAlignment(x.final, near, H, W, c);
    boundaryAll += b.boundary;
    alignedAll += b.aligned;
    const isFg = c !== background;
    if (isFg) {
      fgArea += area;
      fgLargest += comp.largest;
    }
    const confidence = area > 0 ? confSum[c] / area / 255 : null;
    const emptyTag = tagged.has(c) && isFg && area === 0;
    if (emptyTag) emptyTags++;
    const lowConf = area / n >= s.largeArea && confidence !== null && confidence < s.lowConfidence;
    if (lowConf) largeLow++;
    let gtIou: number | null = null;
    let gtPrecision: number | null = null;
    let gtRecall: number | null = null;
    if (x.gt) {
      // Void ground truth and ignored predictions are left out, as in eval/metrics.ts.
      const o = classOverlap(x.final, x.gt, c);
      const predC = o.union - countOnlyIn(x.final, x.gt, c);
      const gtC = o.union - countOnlyIn(x.gt, x.final, c);
      gtIou = iouOf(o);
      gtPrecision = ratio(o.inter, predC);
      gtRecall = ratio(o.inter, gtC);
      gtInter += o.inter;
      if (gtIou !== null) gtIous.push(gtIou);
    }
    classRows.push({
      id: x.id,
      split: x.split,
      class: c,
      class_name: classes[c],
      tagged: tagged.has(c),
      in_gt: gtCounts ? gtCounts[c] > 0 : null,
      area: area / n,
      area_cam: counts.cam[c] / n,
      area_random_walk: counts.random_walk[c] / n,
      area_rca: counts.rca[c] / n,
      gt_area: gtCounts ? (gtValid > 0 ? gtCounts[c] / gtValid : 0) : null,
      ignore_fraction: ratio(rcaToIgnore[c], counts.rca[c]),
      components: comp.count,
      largest_share: ratio(comp.largest, area),
      iou_cam_random_walk: iouOf(classOverlap(x.maps.cam, x.maps.random_walk, c)),
      iou_random_walk_rca: iouOf(classOverlap(x.maps.random_walk, x.maps.rca, c)),
      iou_rca_final: iouOf(classOverlap(x.maps.rca, x.final, c)),
      iou_cam_final: iouOf(classOverlap(x.maps.cam, x.final, c)),
      confidence,
      boundary_alignment: ratio(b.aligned, b.boundary),
      boundary_pixels: b.boundary,
      empty_tag: emptyTag,
      large_low_confidence: lowConf,
      gt_iou: gtIou,
      gt_precision: gtPrecision,
      gt_recall: gtRecall,
      suspicion: null,
      reasons: null,
    });
  }

  const labelled = n - counts.final[IGNORE];
  let confLabelled = 0;
  for (let c = 0; c < IGNORE; c++) confLabelled += confSum[c];
  let gtScored = 0;
  if (x.gt) for (let i = 0; i < n; i++) if (x.gt[i] !== IGNORE && x.final[i] !== IGNORE) gtScored++;
  // mIoU leaves ignored pixels out (a 99%-ignore mask can score 1), so the coverage says how much was scored.
  const fgTags = x.tags.filter((c) => c !== background).length;
  const present = classRows.filter((r) => r.area > 0).length;
  const agreements = MAP_STAGES.map((st) => pixelAgreement(x.maps[st], x.final));
  const boundary = ratio(alignedAll, boundaryAll);
  const edgeChance = n > 0 ? nearCount / n : 0;
  const fragmentation = fgArea > 0 ? 1 - fgLargest / fgArea : 0;
  const ignoreFraction = n > 0 ? counts.final[IGNORE] / n : 0;
  const meanConfidence = labelled > 0 ? confLabelled / labelled / 255 : null;
  const terms = suspicionTerms({
    ignoreFraction, meanConfidence, agreements, emptyTags, foregroundTags: fgTags, fragmentation,
    boundaryAlignment: boundary, edgeChance, largeLowConfidence: largeLow, classesPresent: present,
  });
  const sus = suspicionScore(terms, s.weights);
  for (const r of classRows) {
    if (!r.tagged && r.area === 0) continue; // ground truth only: nothing of the pipeline's to doubt
    const cs = suspicionScore(classSuspicionTerms(r, r.class !== background, edgeChance), s.weights);
    r.suspicion = cs.score;
    r.reasons = cs.reasons;
  }
  const flags = [...x.refineFlags];
  return {
    classRows,
    image: {
      id: x.id,
      split: x.split,
      width: W,
      height: H,
      tags: [...x.tags].sort((a, b) => a - b).map((c) => classes[c]),
      classes: classRows.filter((r) => r.area > 0).map((r) => r.class_name),
      ignore_fraction: ignoreFraction,
      mean_confidence: meanConfidence,
      mean_margin: x.meanMargin,
      agree_cam_final: agreements[0],
      agree_random_walk_final: agreements[1],
      agree_rca_final: agreements[2],
      boundary_alignment: boundary,
      edge_chance: edgeChance,
      fragmentation,
      empty_tags: emptyTags,
      large_low_confidence: largeLow,
      refine_flags: flags,
      gt_miou: gtIous.length > 0 ? gtIous.reduce((a, v) => a + v, 0) / gtIous.length : null,
      gt_pixel_accuracy: x.gt ? ratio(gtInter, gtScored) : null,
      gt_coverage: x.gt ? ratio(gtScored, gtValid) : null,
      suspicion: sus.score,
      reasons: sus.reasons,
      label_quality: null,
      label_confidence: null,
      corrected: false,
      rank: 0,
      terms,
    },
  };
}

/** Pixels (neither map ignore) where `b` is c and `a` is not. */
function countOnlyIn(a: Uint8Array, b: Uint8Array, c: number): number {
  let k = 0;
  for (let i = 0; i < a.length; i++) if (b[i] === c && a[i] !== c && a[i] !== IGNORE) k++;
  return k;
}
