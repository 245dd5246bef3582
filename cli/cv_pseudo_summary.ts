/**
 * The nested-CV choice of refine settings (cli/cv_pseudo.ts): pure functions over per-image
 * confusion matrices, and the readable table. For each fold k, the candidate with the best
 * full-coverage mIoU on the pooled images of the other folds is chosen (ties: the first in grid
 * order), then scored on fold k; the estimate is mean ± sd over folds of those held-out scores.
 * Choosing on fold k itself would score the winner on the images it won on: optimistic. Scores are
 * fractions in [0, 1] (the table prints percent); `miou` is at full coverage (ignore counted as
 * wrong), `miou_labelled` over the labelled pixels only, `coverage` the labelled share.
 */
import { ConfusionMatrix, segmentationScores } from '../eval/metrics.js';
import { type Stat, stat } from './cv_summary.js';

export interface MaskScore {
  miou: number | null;
  miou_labelled: number | null;
  coverage: number | null;
  images: number;
}

/** Scores of the images `ids` pooled into one confusion matrix (every id must have one). */
export function poolScore(perImage: ReadonlyMap<string, ConfusionMatrix>, ids: readonly string[], numClasses: number): MaskScore {
  const cm = new ConfusionMatrix(numClasses);
  for (const id of ids) {
    const c = perImage.get(id);
    if (!c) throw new Error(`poolScore: no confusion matrix for image '${id}'`);
    cm.merge(c);
  }
  const s = segmentationScores(cm);
  return { miou: s.fullMiou, miou_labelled: s.miou, coverage: s.coverage, images: ids.length };
}

export interface FoldChoice {
  fold: number;
  /** Index of the chosen candidate. */
  chosen: number;
  /** Its score on the other folds' images, where it was chosen. */
  chosen_on: MaskScore;
  /** Its score on fold k, never looked at while choosing. */
  held_out: MaskScore;
}

export interface NestedChoice {
  folds: FoldChoice[];
  /** Mean ± sd over folds of the held-out scores. */
  estimate: { miou: Stat; miou_labelled: Stat; coverage: Stat };
  /** Per candidate: how many folds chose it. */
  chosen: number[];
}

const better = (a: number | null, b: number | null) => (a ?? -Infinity) > (b ?? -Infinity);

/** Choose on the other folds, score on the held-out one (see the file comment); `perImage[c]` is candidate c's matrices by id. */
export function nestedChoice(perImage: readonly ReadonlyMap<string, ConfusionMatrix>[], folds: readonly string[][], numClasses: number): NestedChoice {
  if (perImage.length === 0) throw new Error('nestedChoice: no candidate');
  const out = folds.map((heldOut, k): FoldChoice => {
    const others = folds.filter((_, f) => f !== k).flat();
    const on = perImage.map((m) => poolScore(m, others, numClasses));
    let chosen = 0;
    for (let c = 1; c < on.length; c++) if (better(on[c].miou, on[chosen].miou)) chosen = c;
    return { fold: k, chosen, chosen_on: on[chosen], held_out: poolScore(perImage[chosen], heldOut, numClasses) };
  });
  return {
    folds: out,
    estimate: { miou: stat(out.map((f) => f.held_out.miou)), miou_labelled: stat(out.map((f) => f.held_out.miou_labelled)), coverage: stat(out.map((f) => f.held_out.coverage)) },
    chosen: perImage.map((_, c) => out.filter((f) => f.chosen === c).length),
  };
}

export interface PseudoCandidate {
  /** `bg_threshold=0.15 ignore_margin=0.05`: the chosen keys without `refine.`. */
  label: string;
  settings: Record<string, unknown>;
  /** Its work folder (relative to the workspace): one record and one PNG per image. */
  dir: string;
  /** Train masks, all folds pooled: not for choosing (the images that would choose it are the ones it is scored on). */
  all_images: MaskScore;
  /** Its score on each fold's images. */
  per_fold: MaskScore[];
  /** Folds that chose it. */
  chosen: number;
}

export interface PseudoChoiceSummary {
  protocol: number;
  /** Hash of the choice (candidates, folds): its folder's name. */
  choice: string;
  dir: string;
  /** Where every number comes from, in words. */
  split: string;
  keys: string[];
  fold_seed: number;
  fold_sizes: number[];
  candidates: PseudoCandidate[];
  folds: { fold: number; images: number; chosen: string; chosen_on: MaskScore; held_out: MaskScore }[];
  /** The nested-CV estimate of the chosen settings' pseudo-masks: mean ± sd over folds. */
  estimate: NestedChoice['estimate'];
  /** What the figures are, in words (NOTES). */
  notes: typeof NOTES;
}

export const NOTES = {
  all_images: 'train masks, all folds — not for choosing: the images that would choose a candidate are the ones it is scored on',
  folds: "each fold's candidate is chosen on the other folds' images (chosen_on) and scored on the fold's own (held_out)",
  estimate: 'the held-out scores, mean ± sd over folds: the quality to expect of pseudo-masks whose settings were chosen this way',
} as const;

const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : (100 * v).toFixed(1));
const pm = (s: Stat) => `${pct(s.mean)}${s.sd !== null ? ` ± ${pct(s.sd)}` : ''}`;

/** Rows padded to their columns (first column left-aligned). */
function table(head: string[], rows: string[][]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(head), ...rows.map(line)];
}

export function formatPseudoChoice(s: PseudoChoiceSummary): string {
  const cand = s.candidates.map((c) => [c.label, pct(c.all_images.miou), pct(c.all_images.miou_labelled), pct(c.all_images.coverage), `${c.chosen}/${s.folds.length}`]);
  const folds = s.folds.map((f) => [String(f.fold), String(f.images), f.chosen, pct(f.chosen_on.miou), pct(f.held_out.miou), pct(f.held_out.miou_labelled), pct(f.held_out.coverage)]);
  const e = s.estimate;
  return [
    `CV choice of refine settings ${s.choice} (${s.dir}): ${s.candidates.length} candidates over ${s.keys.join(', ')}; ${s.fold_sizes.length} folds of ${s.fold_sizes.join('/')} images (fold seed ${s.fold_seed})`,
    `split: ${s.split}`,
    'candidates, pseudo-masks on the train masks, all folds — not for choosing (mIoU %: full coverage, ignore = wrong; lab. = labelled pixels only):',
    ...table(['candidate', 'all folds', 'lab.', 'coverage', 'chosen'], cand).map((l) => `  ${l}`),
    'per fold: the candidate chosen on the other folds\' images, and its score on the held-out fold:',
    ...table(['fold', 'images', 'chosen', 'on others', 'held-out', 'lab.', 'coverage'], folds).map((l) => `  ${l}`),
    `nested-CV estimate, pseudo-masks at full coverage: ${pm(e.miou)} (mean ± sd over ${e.miou.n} folds); labelled pixels ${pm(e.miou_labelled)} at ${pm(e.coverage)}% coverage`,
  ].join('\n');
}
