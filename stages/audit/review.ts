/**
 * `tagseg review`: record the reviewer's decisions in review/decisions.csv (data/review.ts).
 *
 * How decisions get from the report into the project: the page keeps its marks in the browser
 * (localStorage) and downloads them as a decisions.csv, which `tagseg review import` merges into
 * review/decisions.csv (or the user drops it there when there is none yet). Chosen over a local
 * `tagseg review` server because the report stays a static folder that opens from file://, a CI
 * artifact or any static host, with no port to open and no process to keep alive; the download is
 * the project file's own format, so nothing new is needed to read it.
 *
 * Ids and classes are checked against cache/dataset.arrow when it exists, so a typo fails here
 * instead of silently doing nothing in the segment stage.
 */
import * as path from 'node:path';
import { type Decision, DECISIONS_FILE, type DecisionRow, isDecision, mergeDecisions, readDecisions, removeDecision, writeDecisions } from '../../data/review.js';
import { readAll, readInfo } from '../../pipeline/arrow.js';
import { artifact } from '../../pipeline/artifacts.js';
import { TagsegError } from '../../pipeline/errors.js';
import { exists } from '../../pipeline/fsutil.js';

const DATASET = artifact('dataset');

/** Ids and class names of the project's dataset, or null before ingest has run. */
export async function projectDataset(root: string): Promise<{ ids: Set<string>; classes: string[] } | null> {
  const file = path.join(root, DATASET);
  if (!(await exists(file))) return null;
  const rows = await readAll(file, { stage: 'ingest' });
  return { ids: new Set(rows.map((r) => r.id as string)), classes: (await readInfo(file)).meta.classes };
}

function checkRow(r: DecisionRow, ds: { ids: Set<string>; classes: string[] } | null, source: string): void {
  if (!ds) return;
  if (!ds.ids.has(r.id)) throw new TagsegError(`image '${r.id}' is not in the dataset`, { file: source, hint: `ids are those of ${DATASET} (see reports/audit/images.csv)` });
  if (r.class !== '' && !ds.classes.includes(r.class)) {
    throw new TagsegError(`class '${r.class}' of image '${r.id}' is not a class of the dataset (${ds.classes.join(', ')})`, { file: source });
  }
}

export interface SetDecision { id: string; decision: string; class?: string; note?: string }

/** Record one decision (replacing the one of the same image and class). Returns the file's rows. */
export async function reviewSet(root: string, d: SetDecision): Promise<DecisionRow[]> {
  const file = path.join(root, DECISIONS_FILE);
  const decision = d.decision.toLowerCase();
  if (!isDecision(decision)) throw new TagsegError(`decision '${d.decision}' is not one of accept, reject, relabel`);
  const row: DecisionRow = { id: d.id, decision: decision as Decision, class: d.class ?? '', note: d.note ?? '' };
  checkRow(row, await projectDataset(root), 'tagseg review set');
  const rows = mergeDecisions(await readDecisions(file), [row]);
  await writeDecisions(file, rows);
  return rows;
}

/** Remove the decision of (id, class). */
export async function reviewUnset(root: string, id: string, cls = ''): Promise<boolean> {
  const file = path.join(root, DECISIONS_FILE);
  const { rows, removed } = removeDecision(await readDecisions(file), id, cls);
  if (removed) await writeDecisions(file, rows);
  return removed;
}

/** Merge a decisions CSV (e.g. downloaded from the report) into the project's: its rows win. */
export async function reviewImport(root: string, from: string): Promise<{ imported: number; total: number }> {
  if (!(await exists(from))) throw new TagsegError('file not found', { file: from });
  const incoming = await readDecisions(from);
  const ds = await projectDataset(root);
  for (const r of incoming) checkRow(r, ds, from);
  const file = path.join(root, DECISIONS_FILE);
  const rows = mergeDecisions(await readDecisions(file), incoming);
  await writeDecisions(file, rows);
  return { imported: incoming.length, total: rows.length };
}

export async function reviewList(root: string): Promise<DecisionRow[]> {
  return readDecisions(path.join(root, DECISIONS_FILE));
}

export function formatReviewList(rows: readonly DecisionRow[]): string {
  if (rows.length === 0) return `no decisions yet (${DECISIONS_FILE})`;
  const w = Math.max(2, ...rows.map((r) => r.id.length));
  const counts = new Map<string, number>();
  for (const r of rows) counts.set(r.decision, (counts.get(r.decision) ?? 0) + 1);
  return [
    ...rows.map((r) => `${r.id.padEnd(w)}  ${r.decision.padEnd(7)}  ${(r.class || '(image)').padEnd(12)}  ${r.note.replace(/\s+/g, ' ')}`),
    `${rows.length} decisions: ${[...counts].map(([k, n]) => `${n} ${k}`).join(', ')} (${DECISIONS_FILE})`,
  ].join('\n');
}
