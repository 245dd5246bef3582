/**
 * The columns an artifact's `schema` (pipeline/artifacts.ts, `<module>#<export>`) declares: the
 * export is a ColumnSpec[] or a function of the stored dtype.
 */
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Artifact } from '../../pipeline/artifacts.js';
import type { ColumnSpec } from '../../pipeline/arrow.js';

const REPO = path.resolve(__dirname, '../..');

export async function declaredColumns(a: Artifact, dtype = 'float16'): Promise<ColumnSpec[]> {
  const [file, name] = (a.schema ?? '').split('#');
  if (!file || !name) throw new Error(`${a.path}: no schema '<module>#<export>'`);
  const mod = (await import(pathToFileURL(path.join(REPO, file)).href)) as Record<string, unknown>;
  const v = mod[name];
  if (typeof v === 'function') return (v as (d: string) => ColumnSpec[])(dtype);
  if (Array.isArray(v)) return v as ColumnSpec[];
  throw new Error(`${a.path}: ${a.schema} exports no ColumnSpec[] or columns function`);
}

/** Name and type of each column, the part of a schema a written table must match. */
export const shape = (cols: readonly ColumnSpec[]) => cols.map((c) => `${c.name}:${c.type}`);
