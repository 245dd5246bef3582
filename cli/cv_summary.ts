/**
 * The CV protocol's summary (cli/cv.ts) and its readable table. All scores are fractions in
 * [0, 1] (the table prints percent); `miou` is at full coverage (ignore counted as wrong),
 * `miou_labelled` over the labelled pixels only (stages/segment SegScores). The segmenter's
 * figure is the mean ± sample sd over seeds of each seed's average over folds (fold-to-fold
 * spread is image difficulty, seed-to-seed spread is training noise: only the latter tells two
 * recipes apart); the pseudo-masks do not depend on the seed, so theirs is over folds.
 */
import type { CvRecipe, CvRun } from './cv.js';

export interface Stat {
  mean: number | null;
  /** Sample standard deviation (n - 1); null for fewer than two values. */
  sd: number | null;
  n: number;
}

export interface CvSummary {
  protocol: number;
  recipe: string;
  /** The recipe folder, relative to the workspace. */
  dir: string;
  labels: 'pseudo' | 'gt';
  epochs: number;
  /** Where every number comes from, in words. */
  split: string;
  fold_seed: number;
  fold_sizes: number[];
  seeds: number[];
  /** Train-split images without a mask (not used). */
  unmasked: number;
  runs: { fold: number; seed: number; train_images: number; held_out_images: number; miou: number | null; pixel_accuracy: number | null; seconds: number }[];
  segmenter: { miou: Stat; per_seed: { seed: number; miou: number | null }[]; iou: Record<string, number | null> };
  /** Pseudo-masks of each held-out fold; in oracle mode taken from the weak protocol's runs when they are complete (`from`). */
  pseudo_masks: null | { from: string; miou: Stat; miou_labelled: Stat; coverage: Stat; per_fold: { fold: number; images: number; miou: number | null; miou_labelled: number | null; coverage: number | null }[] };
  /** `--oof`: the label-quality table written (cli/cv_oof.ts): where, how many images, their mean score. */
  label_quality?: { file: string; images: number; mean: number | null };
  /** When the other label mode's protocol (same folds, seeds and recipe) is complete too. */
  weak_oracle: null | WeakOracle;
}

/**
 * Weak (pseudo-mask labels) against oracle (ground-truth labels), same folds and seeds. `ratio` is
 * the ratio of the two means; `per_seed` pairs each seed's fold averages, `ratio_seeds` is their
 * mean ± sd (issue 22's target figure). `by_class`: what the gap is made of, largest first.
 */
export interface WeakOracle {
  ratio: number | null;
  per_seed: { seed: number; ratio: number | null }[];
  ratio_seeds: Stat;
  weak: Stat;
  oracle: Stat;
  by_class: ClassGap[];
  weak_dir: string;
  oracle_dir: string;
}

/**
 * One class's share of the mIoU gap: its IoU (mean over runs) under each label mode and
 * `points` = (oracle - weak) / K in mIoU fractions, K the classes scored in both; the points sum to
 * the difference of the two class-mean mIoUs (the gap itself where every run scores every class).
 * `pseudo`: the held-out folds' pseudo-masks' IoU (mean over the weak runs): low, the segmenter
 * inherits its labels' errors; high, it fails to learn what its labels hold.
 */
export interface ClassGap {
  name: string;
  weak: number;
  oracle: number;
  pseudo: number | null;
  points: number;
}

export interface SummaryInput {
  recipe: CvRecipe;
  hash: string;
  dir: string;
  seeds: number[];
  folds: string[][];
  unmasked: number;
  runs: CvRun[];
  /** The same protocol in the other label mode, when all its runs exist. */
  twin: { hash: string; dir: string; runs: CvRun[] } | null;
}

const round = (v: number | null) => (v === null ? null : Math.round(v * 1e4) / 1e4);

export function stat(xs: readonly (number | null | undefined)[]): Stat {
  const v = xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
  if (v.length === 0) return { mean: null, sd: null, n: 0 };
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const sd = v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (v.length - 1)) : null;
  return { mean: round(mean), sd: round(sd), n: v.length };
}

/** Each seed's mean over folds of the segmenter's full-coverage mIoU. */
function perSeed(runs: readonly CvRun[], seeds: readonly number[]): { seed: number; miou: number | null }[] {
  return seeds.map((seed) => ({ seed, miou: stat(runs.filter((r) => r.seed === seed).map((r) => r.segmenter.miou)).mean }));
}

function pseudoOf(runs: readonly CvRun[], from: string): CvSummary['pseudo_masks'] {
  const folds = [...new Set(runs.map((r) => r.fold))].sort((a, b) => a - b);
  const per_fold = folds.flatMap((fold) => {
    const pm = runs.find((r) => r.fold === fold && r.pseudo_masks)?.pseudo_masks;
    return pm ? [{ fold, images: pm.images, miou: pm.miou, miou_labelled: pm.miou_labelled, coverage: pm.coverage }] : [];
  });
  if (per_fold.length === 0) return null;
  return { from, miou: stat(per_fold.map((f) => f.miou)), miou_labelled: stat(per_fold.map((f) => f.miou_labelled)), coverage: stat(per_fold.map((f) => f.coverage)), per_fold };
}

/** Mean IoU of every class over the runs' segmenters, or their held-out pseudo-masks (null where no run scores it). */
function classIou(runs: readonly CvRun[], of: 'segmenter' | 'pseudo_masks' = 'segmenter'): Record<string, number | null> {
  const classes = Object.keys(runs[0]?.segmenter.iou ?? {});
  return Object.fromEntries(classes.map((c) => [c, stat(runs.map((r) => r[of]?.iou[c])).mean]));
}

/** The classes scored under both label modes, by their share of the gap, largest first; `pseudo`: their pseudo-masks' IoU. */
export function classGaps(weak: Record<string, number | null>, oracle: Record<string, number | null>, pseudo: Record<string, number | null> = {}): ClassGap[] {
  const both = Object.keys(weak).filter((c) => typeof weak[c] === 'number' && typeof oracle[c] === 'number');
  const gaps = both.map((name) => ({ name, weak: weak[name]!, oracle: oracle[name]!, pseudo: pseudo[name] ?? null, points: round((oracle[name]! - weak[name]!) / both.length)! }));
  return gaps.sort((a, b) => b.points - a.points || a.name.localeCompare(b.name));
}

function weakOracle(s: SummaryInput, ownRuns: readonly CvRun[]): WeakOracle | null {
  if (!s.twin) return null;
  const pseudo = s.recipe.labels === 'pseudo';
  const [weakRuns, oracleRuns] = pseudo ? [ownRuns, s.twin.runs] : [s.twin.runs, ownRuns];
  const [w, o] = [perSeed(weakRuns, s.seeds), perSeed(oracleRuns, s.seeds)];
  const weak = stat(w.map((x) => x.miou));
  const oracle = stat(o.map((x) => x.miou));
  const per_seed = s.seeds.map((seed, i) => ({ seed, ratio: w[i].miou !== null && o[i].miou ? round(w[i].miou! / o[i].miou!) : null }));
  return {
    ratio: weak.mean !== null && oracle.mean ? round(weak.mean / oracle.mean) : null,
    per_seed, ratio_seeds: stat(per_seed.map((x) => x.ratio)), weak, oracle,
    by_class: classGaps(classIou(weakRuns), classIou(oracleRuns), classIou(weakRuns, 'pseudo_masks')),
    weak_dir: pseudo ? s.dir : s.twin.dir, oracle_dir: pseudo ? s.twin.dir : s.dir,
  };
}

export function summariseCv(s: SummaryInput): CvSummary {
  const { recipe, runs } = s;
  const per_seed = perSeed(runs, s.seeds);
  const iou = classIou(runs);
  const own = stat(per_seed.map((x) => x.miou));
  return {
    protocol: recipe.protocol, recipe: s.hash, dir: s.dir, labels: recipe.labels, epochs: recipe.segment.epochs,
    split: recipe.oof
      ? `${recipe.folds}-fold cross-validation over all ${s.folds.flat().length} images of split '${recipe.train_split}' (${s.unmasked} without a mask: trained on, not scored): each score is on a held-out fold, never trained on`
      : `${recipe.folds}-fold cross-validation over the ${s.folds.flat().length} images of split '${recipe.train_split}' with a ground-truth mask: each score is on a held-out fold, never trained on`,
    fold_seed: recipe.fold_seed, fold_sizes: s.folds.map((f) => f.length), seeds: s.seeds, unmasked: s.unmasked,
    runs: runs.map((r) => ({ fold: r.fold, seed: r.seed, train_images: r.trainImages, held_out_images: r.heldOutImages, miou: r.segmenter.miou, pixel_accuracy: r.segmenter.pixel_accuracy, seconds: r.seconds })),
    segmenter: { miou: own, per_seed, iou },
    pseudo_masks: pseudoOf(runs, s.dir) ?? (s.twin ? pseudoOf(s.twin.runs, s.twin.dir) : null),
    weak_oracle: weakOracle(s, runs),
  };
}

const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : (100 * v).toFixed(1));
const pm = (s: Stat) => `${pct(s.mean)}${s.sd !== null ? ` ± ${pct(s.sd)}` : ''}`;

export function formatCv(s: CvSummary): string {
  const mode = s.labels === 'gt' ? 'ground-truth masks (oracle)' : 'pseudo-masks';
  const pseudoFold = new Map((s.pseudo_masks?.per_fold ?? []).map((f) => [f.fold, f]));
  const rows = s.runs.map((r) => {
    const p = pseudoFold.get(r.fold);
    return [String(r.fold), String(r.seed), String(r.train_images), String(r.held_out_images), pct(r.miou), pct(p?.miou), pct(p?.miou_labelled), pct(p?.coverage), r.seconds.toFixed(0)];
  });
  const head = ['fold', 'seed', 'train', 'held-out', 'segmenter', 'pseudo', 'pseudo lab.', 'coverage', 's'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const out = [
    `CV protocol ${s.recipe} (${s.dir}): segment trained on ${mode}, ${s.epochs} epochs, ${s.fold_sizes.length} folds x ${s.seeds.length} seed(s)`,
    `split: ${s.split}; folds of ${s.fold_sizes.join('/')} images (fold seed ${s.fold_seed})${s.unmasked && !s.label_quality ? `; ${s.unmasked} train images without a mask not used` : ''}`,
    'held-out fold scores, mIoU %: segmenter and pseudo-masks at full coverage (ignore = wrong), pseudo lab. = labelled pixels only',
    line(head), ...rows.map(line),
    `segmenter, full coverage: ${pm(s.segmenter.miou)} (mean ± sd over ${s.segmenter.miou.n} seed(s) of the ${s.fold_sizes.length}-fold average)`,
  ];
  if (s.pseudo_masks) {
    const p = s.pseudo_masks;
    out.push(`pseudo-masks${p.from !== s.dir ? ` (from ${p.from})` : ''}: full coverage ${pm(p.miou)}, labelled pixels ${pm(p.miou_labelled)} at ${pm(p.coverage)}% coverage (mean ± sd over ${p.miou.n} folds)`);
  }
  if (s.weak_oracle) {
    const w = s.weak_oracle;
    const seeds = w.ratio_seeds.n > 1 ? `; per seed ${w.per_seed.map((x) => x.ratio?.toFixed(3) ?? '-').join(' / ')}: ${w.ratio_seeds.mean?.toFixed(3)} ± ${w.ratio_seeds.sd?.toFixed(3)}` : '';
    out.push(`weak / oracle: ${w.ratio?.toFixed(3) ?? '-'} (weak ${pm(w.weak)} in ${w.weak_dir}, oracle ${pm(w.oracle)} in ${w.oracle_dir}${seeds})`);
    const top = w.by_class.filter((g) => g.points > 0).slice(0, 8);
    const held = (g: ClassGap) => (g.pseudo === null ? '' : `; pseudo-masks ${pct(g.pseudo)}`);
    if (top.length) out.push(`the gap by class, mIoU points (weak vs oracle IoU; the held-out pseudo-masks' IoU): ${top.map((g) => `${g.name} ${pct(g.points)} (${pct(g.weak)} vs ${pct(g.oracle)}${held(g)})`).join(', ')}`);
  } else {
    out.push(`weak / oracle: run the same protocol ${s.labels === 'gt' ? 'without' : 'with'} --oracle to get the ratio`);
  }
  if (s.label_quality) out.push(`out-of-fold label quality (softmin, cleanlab): ${s.label_quality.images} images, mean ${s.label_quality.mean?.toFixed(3) ?? '-'} -> ${s.label_quality.file} (the audit reads it)`);
  return out.join('\n');
}
