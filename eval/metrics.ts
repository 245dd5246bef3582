/**
 * Evaluation metrics in plain JS (no tensors): a confusion matrix accumulated over label maps,
 * the segmentation scores derived from it, and multi-label classification scores.
 *
 * Conventions (stated once, used everywhere):
 * - counts[gt * K + pred]: rows are ground truth, columns predictions.
 * - gt == ignoreIndex (255): pixel not counted at all.
 * - pred == ignoreIndex (a pseudo-mask's "unsure" pixels): by default excluded from the matrix
 *   and counted in `predIgnored[gt]`, so scores describe the labelled pixels and `coverage`
 *   tells how many were labelled. With `predIgnoreAs: c` such pixels count as class c instead
 *   (IRN's eval of its pseudo-labels maps 255 to background: irn step/eval_sem_seg.py).
 * - IoU_c = TP / (TP + FP + FN); a class with TP + FP + FN = 0 (absent from both gt and
 *   predictions) has IoU null and is left out of mIoU. So mIoU is the mean over classes present
 *   in gt or pred -- the same as chainercv's nanmean used by PSA/IRN.
 * - Full coverage (`fullIou`, `fullMiou`, `fullPixelAccuracy`): every pixel with a valid gt counts,
 *   a pixel predicted as ignore is wrong (a false negative of its gt class, no class's false
 *   positive). The headline for masks that may abstain; without ignore predictions it equals the
 *   labelled-pixel figures.
 */
import { TagsegError } from '../pipeline/errors.js';

export type LabelMap = Uint8Array | Uint8ClampedArray | Uint16Array | Int32Array | Int16Array | ArrayLike<number>;

export interface ConfusionMatrixOptions {
  /** Default 255. */
  ignoreIndex?: number;
  /** Count predictions equal to ignoreIndex as this class; default: exclude them (see file comment). */
  predIgnoreAs?: number;
}

export class ConfusionMatrix {
  readonly numClasses: number;
  readonly ignoreIndex: number;
  readonly predIgnoreAs?: number;
  /** counts[gt * numClasses + pred]. */
  readonly counts: Float64Array;
  /** Per gt class: pixels with a valid gt whose prediction was ignoreIndex (excluded from counts). */
  readonly predIgnored: Float64Array;

  constructor(numClasses: number, opts: ConfusionMatrixOptions = {}) {
    if (!Number.isInteger(numClasses) || numClasses < 1) throw new TagsegError(`numClasses must be a positive integer, got ${numClasses}`);
    this.numClasses = numClasses;
    this.ignoreIndex = opts.ignoreIndex ?? 255;
    this.predIgnoreAs = opts.predIgnoreAs;
    if (this.predIgnoreAs !== undefined && !(Number.isInteger(this.predIgnoreAs) && this.predIgnoreAs >= 0 && this.predIgnoreAs < numClasses)) {
      throw new TagsegError(`predIgnoreAs must be a class in [0, ${numClasses}), got ${this.predIgnoreAs}`);
    }
    this.counts = new Float64Array(numClasses * numClasses);
    this.predIgnored = new Float64Array(numClasses);
  }

  /**
   * Accumulate one image (or a batch, flattened): pred and gt of equal length. Labels outside
   * [0, K) other than ignoreIndex are an error (a wrong class count or a corrupt mask).
   */
  add(pred: LabelMap, gt: LabelMap): this {
    if (pred.length !== gt.length) throw new TagsegError(`prediction has ${pred.length} pixels, ground truth ${gt.length}`);
    const k = this.numClasses;
    const ig = this.ignoreIndex;
    for (let i = 0; i < gt.length; i++) {
      const g = gt[i];
      if (g === ig) continue;
      if (!(g >= 0 && g < k && Number.isInteger(g))) throw new TagsegError(`ground-truth label ${g} at pixel ${i} is outside [0, ${k}) and not ${ig}`);
      let p = pred[i];
      if (p === ig) {
        if (this.predIgnoreAs === undefined) {
          this.predIgnored[g]++;
          continue;
        }
        p = this.predIgnoreAs;
      }
      if (!(p >= 0 && p < k && Number.isInteger(p))) throw new TagsegError(`predicted label ${p} at pixel ${i} is outside [0, ${k}) and not ${ig}`);
      this.counts[g * k + p]++;
    }
    return this;
  }

  /** Add another matrix's counts (same class count). */
  merge(other: ConfusionMatrix): this {
    if (other.numClasses !== this.numClasses) throw new TagsegError(`cannot merge confusion matrices of ${other.numClasses} and ${this.numClasses} classes`);
    for (let i = 0; i < this.counts.length; i++) this.counts[i] += other.counts[i];
    for (let i = 0; i < this.predIgnored.length; i++) this.predIgnored[i] += other.predIgnored[i];
    return this;
  }

  /** Pixels with ground truth `gt` predicted as `pred`. */
  get(gt: number, pred: number): number {
    return this.counts[gt * this.numClasses + pred];
  }

  /** Pixels in the matrix (valid gt, prediction not ignored). */
  total(): number {
    let s = 0;
    for (const c of this.counts) s += c;
    return s;
  }

  toJSON(): { numClasses: number; ignoreIndex: number; predIgnoreAs?: number; counts: number[]; predIgnored: number[] } {
    return {
      numClasses: this.numClasses,
      ignoreIndex: this.ignoreIndex,
      ...(this.predIgnoreAs !== undefined ? { predIgnoreAs: this.predIgnoreAs } : {}),
      counts: [...this.counts],
      predIgnored: [...this.predIgnored],
    };
  }

  static fromJSON(j: { numClasses: number; ignoreIndex?: number; predIgnoreAs?: number; counts: number[]; predIgnored?: number[] }): ConfusionMatrix {
    const cm = new ConfusionMatrix(j.numClasses, { ignoreIndex: j.ignoreIndex, predIgnoreAs: j.predIgnoreAs });
    if (j.counts.length !== cm.counts.length) throw new TagsegError(`confusion matrix JSON has ${j.counts.length} counts, expected ${cm.counts.length}`);
    cm.counts.set(j.counts);
    if (j.predIgnored) cm.predIgnored.set(j.predIgnored);
    return cm;
  }
}

export interface SegmentationScores {
  /** Per class TP / (TP + FP + FN); null when the class is absent from gt and pred. */
  iou: (number | null)[];
  /** Mean of the non-null IoUs (classes present in gt or pred); null if there are none. */
  miou: number | null;
  /** Per class TP / (TP + FP); null when the class is never predicted. */
  precision: (number | null)[];
  /** Per class TP / (TP + FN); null when the class is absent from gt. */
  recall: (number | null)[];
  /** Correct pixels / pixels in the matrix; null when empty. */
  pixelAccuracy: number | null;
  /** Mean of the non-null recalls (mean class accuracy). */
  meanClassAccuracy: number | null;
  /** Labelled fraction: matrix pixels / (matrix pixels + pixels whose prediction was ignore). */
  coverage: number | null;
  /** Number of classes that entered mIoU. */
  classesInMean: number;
  /** Per class TP / (TP + FP + FN + ignored): ignore predictions count as wrong; null when the class is absent from gt and pred. */
  fullIou: (number | null)[];
  /** Mean of the non-null full-coverage IoUs. */
  fullMiou: number | null;
  /** Correct pixels / every pixel with a valid gt (ignore predictions included). */
  fullPixelAccuracy: number | null;
}

/** Scores of a confusion matrix (see the file comment for the conventions). */
export function segmentationScores(cm: ConfusionMatrix): SegmentationScores {
  const k = cm.numClasses;
  const iou: (number | null)[] = [];
  const fullIou: (number | null)[] = [];
  const precision: (number | null)[] = [];
  const recall: (number | null)[] = [];
  let diag = 0;
  let total = 0;
  for (let c = 0; c < k; c++) {
    const tp = cm.get(c, c);
    let row = 0;
    let col = 0;
    for (let j = 0; j < k; j++) {
      row += cm.get(c, j);
      col += cm.get(j, c);
    }
    const union = row + col - tp;
    iou.push(union > 0 ? tp / union : null);
    fullIou.push(union + cm.predIgnored[c] > 0 ? tp / (union + cm.predIgnored[c]) : null);
    precision.push(col > 0 ? tp / col : null);
    recall.push(row > 0 ? tp / row : null);
    diag += tp;
    total += row;
  }
  let ignored = 0;
  for (const v of cm.predIgnored) ignored += v;
  const present = iou.filter((v): v is number => v !== null);
  const fullPresent = fullIou.filter((v): v is number => v !== null);
  return {
    iou,
    miou: meanOrNull(present),
    precision,
    recall,
    pixelAccuracy: total > 0 ? diag / total : null,
    meanClassAccuracy: meanOrNull(recall.filter((v): v is number => v !== null)),
    coverage: total + ignored > 0 ? total / (total + ignored) : null,
    classesInMean: present.length,
    fullIou,
    fullMiou: meanOrNull(fullPresent),
    fullPixelAccuracy: total + ignored > 0 ? diag / (total + ignored) : null,
  };
}

function meanOrNull(xs: number[]): number | null {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
}

/**
 * Average precision of one class: scores (higher = more confident) and binary labels (1 = positive).
 * Non-interpolated AP as scikit-learn's average_precision_score: sum over distinct score
 * thresholds, descending, of (R_n - R_{n-1}) * P_n; tied scores form one threshold. null if there
 * is no positive.
 */
export function averagePrecision(scores: ArrayLike<number>, labels: ArrayLike<number>): number | null {
  if (scores.length !== labels.length) throw new TagsegError(`averagePrecision: ${scores.length} scores, ${labels.length} labels`);
  const n = scores.length;
  let positives = 0;
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(scores[i])) throw new TagsegError(`averagePrecision: score ${i} is NaN`);
    if (labels[i]) positives++;
  }
  if (positives === 0) return null;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[b] - scores[a]);
  let tp = 0;
  let fp = 0;
  let prevRecall = 0;
  let ap = 0;
  for (let i = 0; i < n; i++) {
    const idx = order[i];
    if (labels[idx]) tp++;
    else fp++;
    // Close a threshold only after the last of a run of tied scores.
    if (i === n - 1 || scores[order[i + 1]] !== scores[idx]) {
      const recall = tp / positives;
      ap += (recall - prevRecall) * (tp / (tp + fp));
      prevRecall = recall;
    }
  }
  return ap;
}

export interface MultiLabelScores {
  /** Per class AP; null for classes without positives. */
  ap: (number | null)[];
  /** Mean of the non-null APs; null if none. */
  mAP: number | null;
  /** Per class F1 at the threshold: 2TP / (2TP + FP + FN); null when 2TP + FP + FN = 0. */
  f1: (number | null)[];
  /** Mean of the non-null per-class F1s. */
  macroF1: number | null;
  /** F1 of the TP/FP/FN summed over classes. */
  microF1: number | null;
  /** Per class precision / recall at the threshold (null when undefined). */
  precision: (number | null)[];
  recall: (number | null)[];
  threshold: number;
}

/**
 * Multi-label classification scores. scores[i][c]: score of class c for image i (probabilities,
 * e.g. sigmoid of the logits, when using the default threshold 0.5); labels[i][c] in {0, 1}.
 * A class is predicted when score >= threshold.
 */
export function multiLabelScores(scores: ArrayLike<number>[], labels: ArrayLike<number>[], threshold = 0.5): MultiLabelScores {
  if (scores.length !== labels.length) throw new TagsegError(`multiLabelScores: ${scores.length} score rows, ${labels.length} label rows`);
  const k = scores.length ? scores[0].length : 0;
  for (let i = 0; i < scores.length; i++) {
    if (scores[i].length !== k || labels[i].length !== k) throw new TagsegError(`multiLabelScores: row ${i} does not have ${k} classes`);
  }
  const ap: (number | null)[] = [];
  const f1: (number | null)[] = [];
  const precision: (number | null)[] = [];
  const recall: (number | null)[] = [];
  let TP = 0;
  let FP = 0;
  let FN = 0;
  for (let c = 0; c < k; c++) {
    const s = scores.map((r) => r[c]);
    const l = labels.map((r) => r[c]);
    ap.push(averagePrecision(s, l));
    let tp = 0;
    let fp = 0;
    let fn = 0;
    for (let i = 0; i < s.length; i++) {
      const pred = s[i] >= threshold;
      if (pred && l[i]) tp++;
      else if (pred) fp++;
      else if (l[i]) fn++;
    }
    f1.push(2 * tp + fp + fn > 0 ? (2 * tp) / (2 * tp + fp + fn) : null);
    precision.push(tp + fp > 0 ? tp / (tp + fp) : null);
    recall.push(tp + fn > 0 ? tp / (tp + fn) : null);
    TP += tp;
    FP += fp;
    FN += fn;
  }
  return {
    ap,
    mAP: meanOrNull(ap.filter((v): v is number => v !== null)),
    f1,
    macroF1: meanOrNull(f1.filter((v): v is number => v !== null)),
    microF1: 2 * TP + FP + FN > 0 ? (2 * TP) / (2 * TP + FP + FN) : null,
    precision,
    recall,
    threshold,
  };
}
