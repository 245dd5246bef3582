/**
 * The reviewer's decisions: `review/decisions.csv` in the project, one row per image (or per
 * image and class) with `id,decision,class,note`:
 *
 *   decision  accept | reject | relabel (needs relabelling by hand)
 *   class     empty = the whole image; else a class name: the decision is about that class only
 *   note      free text
 *
 * A plain CSV with a header and RFC 4180 quoting (fields with a comma, quote or line break are
 * quoted, quotes doubled), so people edit it in any editor or spreadsheet and DuckDB reads it
 * (`select * from 'review/decisions.csv'`). One row per (id, class): writing a decision again
 * replaces it. Rows are kept sorted by id, then class, so diffs of the file stay small.
 *
 * Written by `tagseg review set|unset|import` and by the audit report (a download merged with
 * `tagseg review import`); read by the segment stage (rejected images leave training) and by
 * `tagseg export`. A shared module (not stages/audit) because both stages read it.
 */
import * as fs from 'node:fs/promises';
import { TagsegError } from '../pipeline/errors.js';
import { parseCsv } from './manifest.js';
import { ensureDir, writeFileAtomic } from '../pipeline/fsutil.js';
import * as path from 'node:path';

export const DECISIONS_FILE = 'review/decisions.csv';
/** The out-of-fold label-quality table (eval/label_quality.ts; written by `tagseg cv --oof`, read by the audit). */
export const LABEL_QUALITY_FILE = 'review/label_quality.csv';
export const LABEL_QUALITY_COLUMNS = ['id', 'label_quality', 'self_confidence', 'labelled_pixels', 'fold', 'seeds', 'recipe'] as const;
export const DECISIONS = ['accept', 'reject', 'relabel'] as const;
export type Decision = (typeof DECISIONS)[number];
export const DECISION_COLUMNS = ['id', 'decision', 'class', 'note'] as const;

export interface DecisionRow {
  id: string;
  decision: Decision;
  /** Class name, or '' for the whole image. */
  class: string;
  note: string;
}

/** One CSV field, quoted only when it must be (RFC 4180). */
export function csvField(v: string): string {
  return /[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

/** CSV text of a header and rows (LF line ends, final newline). */
export function formatCsv(header: readonly string[], rows: readonly (readonly string[])[]): string {
  return [header, ...rows].map((r) => r.map(csvField).join(',')).join('\n') + '\n';
}

const key = (r: { id: string; class: string }) => `${r.id}\u0000${r.class}`;
const byIdClass = (a: DecisionRow, b: DecisionRow) => (a.id < b.id ? -1 : a.id > b.id ? 1 : a.class < b.class ? -1 : a.class > b.class ? 1 : 0);

export function isDecision(v: string): v is Decision {
  return (DECISIONS as readonly string[]).includes(v);
}

const CORRECTIONS_README = `Hand-fixed masks for the segment stage (params.yaml dataset.corrections).

Put <id>.png here: a palette or 8-bit greyscale PNG at the image's original size whose pixel values
are class indices (255 = ignore), e.g. a mask from outputs/pseudo_masks/ fixed in an editor, or one
exported from CVAT / FiftyOne and converted back to indices. It replaces that image's pseudo-mask
when the segment stage trains (metrics/segment.json: review.corrected).
`;

/**
 * A new project's review files: decisions.csv and label_quality.csv with their headers only, and
 * the corrections folder with a README; deps of the segment and audit stages, which DVC needs to exist. Keeps what is there.
 */
export async function ensureReviewFiles(root: string, corrections = 'review/corrections'): Promise<void> {
  const file = path.join(root, DECISIONS_FILE);
  await ensureDir(path.dirname(file));
  for (const [rel, text] of [[DECISIONS_FILE, formatDecisions([])], [LABEL_QUALITY_FILE, formatCsv(LABEL_QUALITY_COLUMNS, [])]]) {
    try {
      await fs.writeFile(path.join(root, rel), text, { flag: 'wx' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  if (!corrections) return;
  await ensureDir(path.join(root, corrections));
  await fs.writeFile(path.join(root, corrections, 'README.md'), CORRECTIONS_README, { flag: 'wx' }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
}

/** Decision rows of a decisions.csv text (RFC 4180: data/manifest.ts parseCsv); for a repeated (id, class) the last row wins. */
export function parseDecisions(text: string, file: string): DecisionRow[] {
  const records = parseCsv(text, file);
  if (records.length === 0) return [];
  const header = records[0].cells.map((h) => h.trim());
  const col = Object.fromEntries(DECISION_COLUMNS.map((c) => [c, header.indexOf(c)])) as Record<(typeof DECISION_COLUMNS)[number], number>;
  if (col.id < 0 || col.decision < 0) {
    throw new TagsegError(`the header is '${header.join(',')}', it needs at least id and decision`, { file, hint: `first line: ${DECISION_COLUMNS.join(',')}` });
  }
  const out = new Map<string, DecisionRow>();
  for (const { line, cells } of records.slice(1)) {
    const get = (c: number) => (c >= 0 ? (cells[c] ?? '') : '');
    const id = get(col.id).trim();
    const decision = get(col.decision).trim().toLowerCase();
    if (id === '') throw new TagsegError(`line ${line}: empty id`, { file });
    if (!isDecision(decision)) throw new TagsegError(`line ${line}: decision '${decision}' is not one of ${DECISIONS.join(', ')}`, { file });
    const row: DecisionRow = { id, decision, class: get(col.class).trim(), note: get(col.note) };
    out.delete(key(row));
    out.set(key(row), row);
  }
  return [...out.values()];
}

/** The decisions of `file`; none when it does not exist. */
export async function readDecisions(file: string): Promise<DecisionRow[]> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new TagsegError(`cannot read the decisions (${(err as Error).message})`, { file });
  }
  return parseDecisions(text, file);
}

/** decisions.csv text: header, then the rows sorted by id and class. */
export function formatDecisions(rows: readonly DecisionRow[]): string {
  return formatCsv(DECISION_COLUMNS, [...rows].sort(byIdClass).map((r) => [r.id, r.decision, r.class, r.note]));
}

export async function writeDecisions(file: string, rows: readonly DecisionRow[]): Promise<void> {
  await ensureDir(path.dirname(file));
  await writeFileAtomic(file, formatDecisions(rows));
}

/** `rows` with `updates` applied: a row of the same (id, class) is replaced. */
export function mergeDecisions(rows: readonly DecisionRow[], updates: readonly DecisionRow[]): DecisionRow[] {
  const m = new Map(rows.map((r) => [key(r), r]));
  for (const u of updates) m.set(key(u), u);
  return [...m.values()].sort(byIdClass);
}

/** `rows` without the decision of (id, class); `removed` says whether there was one. */
export function removeDecision(rows: readonly DecisionRow[], id: string, cls = ''): { rows: DecisionRow[]; removed: boolean } {
  const k = key({ id, class: cls });
  const kept = rows.filter((r) => key(r) !== k);
  return { rows: kept, removed: kept.length < rows.length };
}

/** Per image: its whole-image decision (or null) and its per-class decisions. */
export interface ImageReview { decision: Decision | null; note: string; classes: Map<string, Decision> }

export function reviewByImage(rows: readonly DecisionRow[]): Map<string, ImageReview> {
  const out = new Map<string, ImageReview>();
  for (const r of rows) {
    let v = out.get(r.id);
    if (!v) out.set(r.id, (v = { decision: null, note: '', classes: new Map() }));
    if (r.class === '') {
      v.decision = r.decision;
      v.note = r.note;
    } else v.classes.set(r.class, r.decision);
  }
  return out;
}

/**
 * The corrected masks of folder `dir` (project-relative `dataset.corrections`): id -> file, for
 * every `<id>.png`; null when the folder does not exist (dvc.yaml lists it as a dep, so DVC and
 * `tagseg repro` stop before this; a direct `tagseg run segment` warns). A PNG whose id is not in
 * the dataset is an error (a typo would otherwise be silently ignored); other files are skipped.
 */
export async function listCorrections(dir: string, datasetIds: ReadonlySet<string>): Promise<Map<string, string> | null> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    throw new TagsegError(`cannot read the corrections folder (${code})`, { file: dir, hint: "dataset.corrections names a folder of <id>.png masks relative to the project ('' = none)" });
  }
  const out = new Map<string, string>();
  for (const name of names.sort()) {
    if (path.extname(name).toLowerCase() !== '.png') continue;
    const id = name.slice(0, -4);
    if (!datasetIds.has(id)) throw new TagsegError(`corrected mask for '${id}', which is not an image of the dataset`, { file: path.join(dir, name), hint: 'name corrected masks <id>.png with the ids of reports/audit/images.csv' });
    out.set(id, path.join(dir, name));
  }
  return out;
}
