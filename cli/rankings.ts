/**
 * How well each audit ranking finds bad pseudo-masks, against ground truth (issue 23's comparison;
 * bench/audit_rankings.ts runs it on a workspace). Per image of cache/audit_images.arrow with a
 * ground truth and every score:
 *
 * - quality q = gt_miou x gt_coverage (the labelled-pixel mIoU scaled by the share of the ground
 *   truth the mask labels, so a mostly-ignore mask is not "good"; the audit's own target);
 * - bad = the lowest `badShare` of q (default the lowest quintile: ceil(0.2 n) images, ties by id);
 * - per ranking (most suspect first): precision@k = bad share of its top k, against the base rate
 *   badShare; Spearman between the score and q (suspicion: negative is right; label quality and
 *   label confidence: positive is right), reported with the sign flipped for suspicion-like scores
 *   so that for every ranking higher = better (`rho_vs_quality`).
 * - `combined`: the mean of the suspicion's and the label confidence's rank fractions (a simple
 *   combination, no weights fitted on the ground truth).
 */
import { type Row } from '../pipeline/arrow.js';
import { spearman } from '../stages/audit/report_stage.js';

export const RANKINGS = ['suspicion', 'label_quality', 'label_confidence', 'combined'] as const;
export type Ranking = (typeof RANKINGS)[number];

export interface RankingFigures {
  ranking: Ranking;
  /** Bad masks among the top k of the ranking / k. */
  precision_at_k: number;
  /** Spearman of the ranking's suspect-ness with q, sign flipped: + = ranks low-quality masks as suspect. */
  rho_vs_quality: number | null;
}

export interface RankingComparison {
  images: number;
  k: number;
  bad: number;
  /** q at or below which an image is bad (the largest q among the bad). */
  bad_threshold: number;
  base_rate: number;
  rankings: RankingFigures[];
  /** The ranking with the highest precision@k, Spearman breaking ties. */
  best: Ranking;
}

interface Scored { id: string; q: number; suspicion: number; label_quality: number; label_confidence: number }

/** Suspect-ness of each image under `r` (higher = more suspect). */
function suspectness(rows: readonly Scored[], r: Ranking): number[] {
  if (r === 'suspicion') return rows.map((x) => x.suspicion);
  if (r === 'label_quality') return rows.map((x) => -x.label_quality);
  if (r === 'label_confidence') return rows.map((x) => -x.label_confidence);
  const frac = (v: number[]) => {
    const order = v.map((_, i) => i).sort((a, b) => v[a] - v[b]);
    const out = new Array<number>(v.length);
    order.forEach((i, rank) => { out[i] = v.length > 1 ? rank / (v.length - 1) : 0; });
    return out;
  };
  const a = frac(suspectness(rows, 'suspicion'));
  const b = frac(suspectness(rows, 'label_confidence'));
  return a.map((v, i) => (v + b[i]) / 2);
}

/** The comparison over `images` (cache/audit_images.arrow rows); images without GT or a score are left out. */
export function compareRankings(images: readonly Row[], o: { k?: number; badShare?: number } = {}): RankingComparison {
  const k = o.k ?? 20;
  const badShare = o.badShare ?? 0.2;
  const rows: Scored[] = images
    .filter((r) => typeof r.gt_miou === 'number' && typeof r.gt_coverage === 'number' && typeof r.label_quality === 'number' && typeof r.label_confidence === 'number')
    .map((r) => ({ id: r.id as string, q: (r.gt_miou as number) * (r.gt_coverage as number), suspicion: r.suspicion as number, label_quality: r.label_quality as number, label_confidence: r.label_confidence as number }));
  const byId = (a: Scored, b: Scored) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  const nBad = Math.ceil(badShare * rows.length);
  const worst = [...rows].sort((a, b) => a.q - b.q || byId(a, b)).slice(0, nBad);
  const bad = new Set(worst.map((r) => r.id));
  const q = rows.map((r) => r.q);
  const rankings = RANKINGS.map((ranking): RankingFigures => {
    const s = suspectness(rows, ranking);
    const top = rows.map((r, i) => ({ r, s: s[i] })).sort((a, b) => b.s - a.s || byId(a.r, b.r)).slice(0, Math.min(k, rows.length));
    const rho = spearman(s, q);
    return { ranking, precision_at_k: top.length ? top.filter((t) => bad.has(t.r.id)).length / top.length : 0, rho_vs_quality: rho === null ? null : -rho };
  });
  const best = [...rankings].sort((a, b) => b.precision_at_k - a.precision_at_k || (b.rho_vs_quality ?? -2) - (a.rho_vs_quality ?? -2))[0].ranking;
  return { images: rows.length, k, bad: nBad, bad_threshold: worst.at(-1)?.q ?? 0, base_rate: rows.length ? nBad / rows.length : 0, rankings, best };
}

export function formatComparison(c: RankingComparison): string {
  const pct = (v: number) => (100 * v).toFixed(1);
  return [
    `${c.images} images with ground truth and every score; bad = the lowest ${c.bad} by pseudo-mask mIoU x coverage (<= ${c.bad_threshold.toFixed(3)}), base rate ${pct(c.base_rate)}%`,
    `ranking           precision@${c.k}  Spearman with quality (+ = right)`,
    ...c.rankings.map((r) => `${r.ranking.padEnd(16)}  ${pct(r.precision_at_k).padStart(11)}%  ${r.rho_vs_quality === null ? '-' : r.rho_vs_quality.toFixed(3)}`),
    `best: ${c.best}`,
  ].join('\n');
}
