/**
 * Class-level summary of the audit, accumulated image by image (memory flat in the number of
 * images except one area value per (image, tagged class)) from each image's rows and pixel counts
 * (pixelCounts, stored by the audit's shards in cache/audit_measures.arrow):
 *
 * - area distribution of each class over the images tagged with it (mean, quantiles, histogram),
 * - agreement between stages per class: IoU accumulated over all images (sum of intersections /
 *   sum of unions, pixels that either map ignores left out),
 * - with ground truth: per-class IoU, precision and recall of every stage's labels (eval/metrics.ts
 *   conventions: void and ignored pixels left out, coverage reported), and the most confused
 *   (ground truth, final) class pairs,
 * - class pairs the tags cannot separate: nearly always tagged together, each rarely without the
 *   other (MSRC-v2's face and body), so the maps cannot know which region is which (refine.above).
 */
import { ConfusionMatrix, segmentationScores } from '../../eval/metrics.js';
import { meanRows } from '../../maps/rows.js';
import type { ClassRow, ImageRow, MapStage, ViewStage } from './image.js';
import { VIEW_STAGES } from './image.js';
import { IGNORE } from './measures.js';

export const HISTOGRAM_BINS = 10;
/** Stage pairs whose per-class agreement is summarised. */
export const AGREEMENT_PAIRS: [ViewStage, ViewStage][] = [['cam', 'random_walk'], ['random_walk', 'rca'], ['rca', 'final'], ['cam', 'final']];
const pairName = ([a, b]: [ViewStage, ViewStage]) => `${a}_${b}`;

export interface ClassSummary {
  class: number;
  name: string;
  /** Images tagged with the class. */
  tagged: number;
  /** Images whose final mask has the class. */
  present: number;
  /** Tagged foreground images where the final mask lost the class. */
  empty_tags: number;
  /** Area of the class in the final mask over the images tagged with it. */
  area: { mean: number | null; p10: number | null; p50: number | null; p90: number | null; histogram: number[] };
  mean_confidence: number | null;
  /** Per stage pair (`cam_final`, ...): IoU accumulated over all images. */
  agreement: Record<string, number | null>;
  /** With ground truth: scores of the final mask. */
  /** iou: full coverage (the final mask's ignore pixels count as wrong); iou_labelled: ignore left out. */
  gt: { iou: number | null; iou_labelled: number | null; precision: number | null; recall: number | null; images: number } | null;
  /** Mean suspicion of the images tagged with the class. */
  mean_suspicion: number | null;
}

export interface ConfusedPair {
  gt: string;
  predicted: string;
  pixels: number;
  /** pixels / ground-truth pixels of `gt` (labelled in the final mask). */
  share: number;
}

/**
 * A pair whose tag sets have at least this Jaccard overlap (images with both / images with
 * either), in TIED_MIN_IMAGES or more, is reported as tied. Containment alone is not enough: cow
 * is always tagged with grass on MSRC-v2, but grass alone teaches the classifier what grass is.
 * There face / body is 0.90 and the next pair (sky / tree) 0.42.
 */
export const TIED_JACCARD = 0.8;
const TIED_MIN_IMAGES = 5;

/**
 * Two classes the tags cannot separate: images tagged with both, and with each one alone; and
 * their vertical order (mean row) in the images whose pseudo-mask (ground truth) has both: in how
 * many `a` lies above `b` (refine.above's evidence; gt null without ground truth).
 */
export interface TiedPair {
  a: string;
  b: string;
  together: number;
  a_alone: number;
  b_alone: number;
  final_a_above: number;
  final_both: number;
  gt_a_above: number | null;
  gt_both: number | null;
}

export interface AuditSummary {
  images: number;
  classes: ClassSummary[];
  /** Class pairs whose tag sets overlap by Jaccard >= TIED_JACCARD, most images first. */
  tied: TiedPair[];
  /** With ground truth: mIoU etc. of each stage's labels over the images that have it. */
  gt: null | {
    images: number;
    /** miou, pixelAccuracy: full coverage (ignore counts as wrong); miouLabelled: ignore left out. */
    stages: Record<ViewStage, { miou: number | null; miouLabelled: number | null; pixelAccuracy: number | null; coverage: number | null }>;
    confused: ConfusedPair[];
  };
}

/**
 * One image's pixel counts, the summary's only inputs besides its rows: per agreement pair the
 * intersection and union per label, per view stage the confusion with the ground truth (null
 * without). Sparse `[index, count]` pairs of integers, so a part of the images (one shard) can be
 * stored and the counts summed in any order to the same totals.
 */
export interface PixelCounts {
  agreement: { inter: [number, number][]; union: [number, number][] }[];
  gt: null | Record<ViewStage, { counts: [number, number][]; predIgnored: [number, number][] }>;
  /** [class, mean row / height] of every class in the final mask and in the ground truth (null without). */
  rows: { final: [number, number][]; gt: [number, number][] | null };
}

/** [class, mean row / height] of each class < k with pixels in an [h, width] label map. */
function classRows(labels: Uint8Array, width: number, k: number): [number, number][] {
  const h = labels.length / width;
  const out: [number, number][] = [];
  meanRows(labels, width, k).forEach((r, c) => { if (!Number.isNaN(r)) out.push([c, r / h]); });
  return out;
}

const sparse = (a: Float64Array): [number, number][] => {
  const out: [number, number][] = [];
  a.forEach((v, i) => { if (v !== 0) out.push([i, v]); });
  return out;
};

/** The pixel counts of one image's label maps [h, width] (and ground truth) over `k` classes. */
export function pixelCounts(maps: Record<MapStage, Uint8Array> & { final: Uint8Array }, gt: Uint8Array | null, k: number, width: number): PixelCounts {
  const rows = { final: classRows(maps.final, width, k), gt: gt ? classRows(gt, width, k) : null };
  const agreement = AGREEMENT_PAIRS.map(([sa, sb]) => {
    const a = maps[sa];
    const b = maps[sb];
    const inter = new Float64Array(256);
    const union = new Float64Array(256);
    for (let i = 0; i < a.length; i++) {
      const x = a[i];
      const y = b[i];
      if (x === IGNORE || y === IGNORE) continue;
      union[x]++;
      if (x === y) inter[x]++;
      else union[y]++;
    }
    return { inter: sparse(inter), union: sparse(union) };
  });
  if (!gt) return { agreement, gt: null, rows };
  const cms = VIEW_STAGES.map((s) => {
    const cm = new ConfusionMatrix(k).add(maps[s], gt);
    return [s, { counts: sparse(cm.counts), predIgnored: sparse(cm.predIgnored) }];
  });
  return { agreement, gt: Object.fromEntries(cms) as NonNullable<PixelCounts['gt']>, rows };
}

function quantile(sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null;
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/** [k, k] votes of a pair's vertical order: images with both classes (a < b), and those where a lies above b. */
interface OrderVotes { both: Float64Array; above: Float64Array }

export class SummaryAccumulator {
  private readonly k: number;
  private readonly areas: number[][];
  private readonly present: Float64Array;
  private readonly empty: Float64Array;
  private readonly confSum: Float64Array;
  private readonly confN: Float64Array;
  private readonly susSum: Float64Array;
  private readonly inter: Float64Array[];
  private readonly union: Float64Array[];
  private readonly cms: Record<ViewStage, ConfusionMatrix>;
  private gtImages = 0;
  private readonly gtImagesPerClass: Float64Array;
  /** [k, k] images tagged with both classes (a < b). */
  private readonly together: Float64Array;
  /** [k, k] per label source: images with both classes (a < b), and those where a lies above b. */
  private readonly order: Record<'final' | 'gt', OrderVotes>;
  private images = 0;

  constructor(readonly classes: readonly string[]) {
    this.k = classes.length;
    this.areas = classes.map(() => []);
    this.present = new Float64Array(this.k);
    this.empty = new Float64Array(this.k);
    this.confSum = new Float64Array(this.k);
    this.confN = new Float64Array(this.k);
    this.susSum = new Float64Array(this.k);
    this.inter = AGREEMENT_PAIRS.map(() => new Float64Array(256));
    this.union = AGREEMENT_PAIRS.map(() => new Float64Array(256));
    this.cms = Object.fromEntries(VIEW_STAGES.map((s) => [s, new ConfusionMatrix(this.k)])) as Record<ViewStage, ConfusionMatrix>;
    this.gtImagesPerClass = new Float64Array(this.k);
    this.together = new Float64Array(this.k * this.k);
    const votes = (): OrderVotes => ({ both: new Float64Array(this.k * this.k), above: new Float64Array(this.k * this.k) });
    this.order = { final: votes(), gt: votes() };
  }

  /** Votes of one image's mean rows: for each pair of its classes, both present, and whether the first lies above. */
  private addOrder(o: OrderVotes, rows: [number, number][]): void {
    for (const [a, ra] of rows) {
      for (const [b, rb] of rows) {
        if (a >= b) continue;
        o.both[a * this.k + b]++;
        if (ra < rb) o.above[a * this.k + b]++;
      }
    }
  }

  /** One image: its class rows, its image row (in the images' order: float sums follow it) and its pixel counts. */
  add(rows: ClassRow[], image: ImageRow, pixels: PixelCounts): void {
    const gt = pixels.gt;
    this.images++;
    for (const r of rows) {
      if (r.tagged) {
        this.areas[r.class].push(r.area);
        this.susSum[r.class] += image.suspicion;
      }
      if (r.area > 0) this.present[r.class]++;
      if (r.empty_tag) this.empty[r.class]++;
      if (r.confidence !== null) {
        this.confSum[r.class] += r.confidence;
        this.confN[r.class]++;
      }
      if (gt && (r.in_gt || r.area > 0)) this.gtImagesPerClass[r.class]++;
    }
    this.addOrder(this.order.final, pixels.rows.final);
    if (pixels.rows.gt) this.addOrder(this.order.gt, pixels.rows.gt);
    const tags = rows.filter((r) => r.tagged).map((r) => r.class).sort((x, y) => x - y);
    for (let i = 0; i < tags.length; i++) for (let j = i + 1; j < tags.length; j++) this.together[tags[i] * this.k + tags[j]]++;
    pixels.agreement.forEach((p, j) => {
      for (const [i, v] of p.inter) this.inter[j][i] += v;
      for (const [i, v] of p.union) this.union[j][i] += v;
    });
    if (gt) {
      this.gtImages++;
      for (const s of VIEW_STAGES) {
        for (const [i, v] of gt[s].counts) this.cms[s].counts[i] += v;
        for (const [i, v] of gt[s].predIgnored) this.cms[s].predIgnored[i] += v;
      }
    }
  }

  result(topConfused = 10): AuditSummary {
    const final = this.gtImages > 0 ? segmentationScores(this.cms.final) : null;
    const classes: ClassSummary[] = this.classes.map((name, c) => {
      const areas = [...this.areas[c]].sort((a, b) => a - b);
      const histogram = new Array<number>(HISTOGRAM_BINS).fill(0);
      for (const a of areas) histogram[Math.min(HISTOGRAM_BINS - 1, Math.floor(a * HISTOGRAM_BINS))]++;
      const agreement: Record<string, number | null> = {};
      AGREEMENT_PAIRS.forEach((p, j) => {
        agreement[pairName(p)] = this.union[j][c] > 0 ? this.inter[j][c] / this.union[j][c] : null;
      });
      return {
        class: c,
        name,
        tagged: areas.length,
        present: this.present[c],
        empty_tags: this.empty[c],
        area: {
          mean: areas.length ? areas.reduce((a, b) => a + b, 0) / areas.length : null,
          p10: quantile(areas, 0.1),
          p50: quantile(areas, 0.5),
          p90: quantile(areas, 0.9),
          histogram,
        },
        mean_confidence: this.confN[c] > 0 ? this.confSum[c] / this.confN[c] : null,
        agreement,
        gt: final ? { iou: final.fullIou[c], iou_labelled: final.iou[c], precision: final.precision[c], recall: final.recall[c], images: this.gtImagesPerClass[c] } : null,
        mean_suspicion: areas.length ? this.susSum[c] / areas.length : null,
      };
    });
    let gtBlock: AuditSummary['gt'] = null;
    if (final) {
      const cm = this.cms.final;
      const pairs: ConfusedPair[] = [];
      for (let g = 0; g < this.k; g++) {
        let row = 0;
        for (let p = 0; p < this.k; p++) row += cm.get(g, p);
        for (let p = 0; p < this.k; p++) {
          const v = cm.get(g, p);
          if (p !== g && v > 0) pairs.push({ gt: this.classes[g], predicted: this.classes[p], pixels: v, share: v / row });
        }
      }
      pairs.sort((a, b) => b.pixels - a.pixels);
      const stages = Object.fromEntries(VIEW_STAGES.map((s) => {
        const sc = segmentationScores(this.cms[s]);
        return [s, { miou: sc.fullMiou, miouLabelled: sc.miou, pixelAccuracy: sc.fullPixelAccuracy, coverage: sc.coverage }];
      })) as NonNullable<AuditSummary['gt']>['stages'];
      gtBlock = { images: this.gtImages, stages, confused: pairs.slice(0, topConfused) };
    }
    return { images: this.images, classes, tied: this.tiedPairs(), gt: gtBlock };
  }

  private tiedPairs(): TiedPair[] {
    const out: TiedPair[] = [];
    for (let a = 0; a < this.k; a++) {
      for (let b = a + 1; b < this.k; b++) {
        const t = this.together[a * this.k + b];
        const na = this.areas[a].length;
        const nb = this.areas[b].length;
        if (!(t >= TIED_MIN_IMAGES && t >= TIED_JACCARD * (na + nb - t))) continue;
        const i = a * this.k + b;
        const { final, gt } = this.order;
        out.push({
          a: this.classes[a], b: this.classes[b], together: t, a_alone: na - t, b_alone: nb - t,
          final_a_above: final.above[i], final_both: final.both[i],
          gt_a_above: this.gtImages > 0 ? gt.above[i] : null, gt_both: this.gtImages > 0 ? gt.both[i] : null,
        });
      }
    }
    return out.sort((x, y) => y.together - x.together);
  }
}
