/**
 * Confident-learning label quality of a segmentation mask (Lad & Mueller 2023, "Estimating label
 * quality and errors in semantic segmentation data via any model"; cleanlab's
 * segmentation.rank.get_label_quality_scores, method "softmin").
 *
 * Pixel score s_i = the probability a model that never trained on the image gives the mask's label
 * at pixel i (self-confidence). Image score = softmin of the pixel scores at temperature T:
 *
 *     score = sum_i s_i w_i,   w_i = exp((1 - s_i) / T) / sum_j exp((1 - s_j) / T)
 *
 * a weighted mean that tends to the worst pixel as T -> 0 and to the mean as T -> infinity;
 * cleanlab's default T = 0.1. Low = the labels are likely wrong somewhere. One difference from
 * cleanlab: ignore pixels (255) carry no label to doubt and are left out (cleanlab has no ignore).
 */
import * as fs from 'node:fs/promises';
import { parseCsv } from '../data/manifest.js';
import { LABEL_QUALITY_COLUMNS, LABEL_QUALITY_FILE, formatCsv } from '../data/review.js';
import { TagsegError } from '../pipeline/errors.js';

/** cleanlab's default softmin temperature. */
export const LABEL_QUALITY_TEMPERATURE = 0.1;
const IGNORE = 255;

/** softmin of `s` (values in [0, 1]) at temperature `t`; null when `s` is empty. */
export function softmin(s: ArrayLike<number>, t = LABEL_QUALITY_TEMPERATURE): number | null {
  if (!(t > 0)) throw new TagsegError(`the softmin temperature must be > 0, got ${t}`);
  if (s.length === 0) return null;
  let min = Infinity;
  for (let i = 0; i < s.length; i++) if (s[i] < min) min = s[i];
  // Shift by the largest exponent, (1 - min) / t, so no exp overflows (cleanlab's shift=True).
  let num = 0;
  let den = 0;
  for (let i = 0; i < s.length; i++) {
    const w = Math.exp((min - s[i]) / t);
    num += s[i] * w;
    den += w;
  }
  return num / den;
}

export interface MaskQuality {
  /** softmin of the pixel scores (null: no labelled pixel). */
  quality: number | null;
  /** Mean pixel score (the T -> infinity limit). */
  selfConfidence: number | null;
  /** Pixels with a label (not 255). */
  pixels: number;
}

/**
 * The label quality of `labels` [H * W] (class indices, 255 = ignore) under `probs` [H * W * K]
 * (pixel-major, K classes per pixel, as tfjs returns [H, W, K]).
 */
export function maskQuality(probs: ArrayLike<number>, labels: ArrayLike<number>, k: number, t = LABEL_QUALITY_TEMPERATURE): MaskQuality {
  if (probs.length !== labels.length * k) throw new TagsegError(`label quality: ${probs.length} probabilities for ${labels.length} pixels x ${k} classes`);
  const s: number[] = [];
  for (let i = 0; i < labels.length; i++) {
    const c = labels[i];
    if (c === IGNORE) continue;
    if (!(c >= 0 && c < k)) throw new TagsegError(`label quality: label ${c} at pixel ${i} is not one of the ${k} classes`);
    s.push(probs[i * k + c]);
  }
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : null;
  return { quality: softmin(s, t), selfConfidence: mean, pixels: s.length };
}

/**
 * The out-of-fold label-quality table (`tagseg cv --oof` writes it; the audit reads it when it
 * has rows): one row per image of the train split, worst first. RFC 4180 CSV, for people and DuckDB.
 */
export { LABEL_QUALITY_COLUMNS, LABEL_QUALITY_FILE };

export interface LabelQualityRow {
  id: string;
  /** softmin label quality, mean over the seeds' held-out models; null: no labelled pixel. */
  label_quality: number | null;
  self_confidence: number | null;
  labelled_pixels: number;
  /** The fold the image was held out in (its models never trained on it). */
  fold: number;
  seeds: number;
  /** The CV recipe (runs/cv/<recipe>/) the probabilities come from. */
  recipe: string;
}

const cell = (v: number | null, digits = 6) => (v === null ? '' : String(Math.round(v * 10 ** digits) / 10 ** digits));

/** The table's text: worst (lowest label_quality) first, unscored images last, ties by id. */
export function formatLabelQuality(rows: readonly LabelQualityRow[]): string {
  const key = (r: LabelQualityRow) => r.label_quality ?? Infinity;
  const sorted = [...rows].sort((a, b) => key(a) - key(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return formatCsv(LABEL_QUALITY_COLUMNS, sorted.map((r) => [r.id, cell(r.label_quality), cell(r.self_confidence), String(r.labelled_pixels), String(r.fold), String(r.seeds), r.recipe]));
}

/** The table by id; null when the file is absent or has no rows (no OOF scores yet). */
export async function readLabelQuality(file: string): Promise<Map<string, LabelQualityRow> | null> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new TagsegError(`cannot read the label-quality table (${(err as Error).message})`, { file });
  }
  const records = parseCsv(text, file);
  if (records.length <= 1) return null;
  const header = records[0].cells.map((h) => h.trim());
  const col = (name: string) => {
    const i = header.indexOf(name);
    if (i < 0) throw new TagsegError(`the header has no '${name}' column`, { file, hint: `rewrite it with \`tagseg cv --oof\` (columns: ${LABEL_QUALITY_COLUMNS.join(',')})` });
    return i;
  };
  const at = Object.fromEntries(LABEL_QUALITY_COLUMNS.map((c) => [c, col(c)])) as Record<(typeof LABEL_QUALITY_COLUMNS)[number], number>;
  const out = new Map<string, LabelQualityRow>();
  for (const { line, cells } of records.slice(1)) {
    const num = (c: number, nullable: boolean): number | null => {
      const s = (cells[c] ?? '').trim();
      if (s === '' && nullable) return null;
      const v = Number(s);
      if (s === '' || !Number.isFinite(v)) throw new TagsegError(`line ${line}: '${s}' in column ${header[c]} is not a number`, { file });
      return v;
    };
    const id = (cells[at.id] ?? '').trim();
    if (!id) throw new TagsegError(`line ${line}: empty id`, { file });
    out.set(id, {
      id, label_quality: num(at.label_quality, true), self_confidence: num(at.self_confidence, true), labelled_pixels: num(at.labelled_pixels, false)!,
      fold: num(at.fold, false)!, seeds: num(at.seeds, false)!, recipe: (cells[at.recipe] ?? '').trim(),
    });
  }
  return out;
}
