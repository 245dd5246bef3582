/**
 * Our tables must be ordinary Arrow files to the Python world: TS writes every column type,
 * pyarrow + DuckDB check it and write a transformed copy, TS reads that back.
 * Needs a Python with pyarrow and duckdb (`node scripts/python-env.mjs` makes one at .cache/py);
 * without one the test is skipped with the reason printed, except under CI=true, where it fails.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipWithout } from '../helpers/ci.js';
import { findPython } from '../helpers/python.js';
import { SCHEMA_VERSION, TableWriter, readAll, readInfo, type ColumnSpec, type Row, type TableMeta } from '../../pipeline/arrow.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const script = path.join(root, 'test/pipeline/arrow_roundtrip.py');

const { python, why } = findPython(['pyarrow', 'duckdb']);
const skip = skipWithout('Arrow round trip through pyarrow and DuckDB', python ? undefined : why);

const COLUMNS: ColumnSpec[] = [
  { name: 'id', type: 'int32', doc: 'image index' },
  { name: 'name', type: 'utf8', nullable: true },
  { name: 'score', type: 'float32' },
  { name: 'weight', type: 'float64', nullable: true },
  { name: 'ok', type: 'bool', nullable: true },
  { name: 'blob', type: 'binary', nullable: true, tensor: { dtype: 'uint8', shape: '[height, width]' } },
  { name: 'ints', type: 'list<int32>', nullable: true },
  { name: 'probs', type: 'list<float32>', tensor: { dtype: 'float32', shape: '[channels]' } },
  { name: 'tags', type: 'list<utf8>', nullable: true },
];
const META: TableMeta = { stage: 'cam', paramsHash: 'p1', classes: ['background', 'cat'], extra: { seed: 3 } };
// float32 values are exactly representable so both sides compare with ==
const ROWS: Row[] = [
  { id: 1, name: 'cat', score: 0.5, weight: 1 / 3, ok: true, blob: Buffer.from('hello'), ints: [1, 2, -3], probs: new Float32Array([0.25, 0.75]), tags: ['a', 'ü'] },
  { id: 2, name: null, score: -1.25, weight: null, ok: null, blob: null, ints: null, probs: new Float32Array(0), tags: null },
  { id: 3, name: 'ünï 🐱', score: 3.75, weight: -2.5, ok: false, blob: new Uint8Array(0), ints: [], probs: [1, 2, 3], tags: [] },
  { id: 4, name: '', score: 0, weight: 1e300, ok: true, blob: new Uint8Array([0, 255]), ints: [2147483647], probs: [-0.5], tags: [''] },
  { id: 5, name: 'dog', score: 8, weight: 0, ok: null, blob: new Uint8Array([7]), ints: [0], probs: [4], tags: ['x', 'y', 'z'] },
];

/** JSON for Python: typed arrays as plain arrays, the shape `plain()` gives pyarrow values. */
const asJson = (row: Row) => Object.fromEntries(Object.entries(row).map(([k, v]) => [k, ArrayBuffer.isView(v) ? Array.from(v) : v]));

describe.skipIf(skip)('Arrow tables round-trip through pyarrow and DuckDB', () => {
  let dir: string;
  beforeAll(async () => { dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-arrow-py-')); });
  afterAll(async () => { await fs.rm(dir, { recursive: true, force: true }); });

  it('TS -> pyarrow/DuckDB -> TS', async () => {
    const inFile = path.join(dir, 'in.arrow');
    const outFile = path.join(dir, 'out.arrow');
    const expectedFile = path.join(dir, 'expected.json');
    const w = await TableWriter.open(inFile, COLUMNS, META, { batchRows: 2 });
    for (const r of ROWS) await w.write(r);
    await w.close();
    const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };
    await fs.writeFile(expectedFile, JSON.stringify({
      columns: COLUMNS, meta: META, rows: ROWS.map(asJson), numBatches: 3, schemaVersion: SCHEMA_VERSION, tagsegVersion: pkg.version,
    }));

    const { stdout } = await promisify(execFile)(python!, [script, inFile, expectedFile, outFile], { timeout: 60_000 })
      .catch((err: { stderr?: string; message: string }) => { throw new Error(`python side failed: ${err.stderr || err.message}`); });
    expect(JSON.parse(stdout.trim().split('\n').pop()!)).toMatchObject({ rows: ROWS.length });

    const info = await readInfo(outFile);
    expect(info).toMatchObject({ schemaVersion: SCHEMA_VERSION, numRows: 5, numBatches: 3, columns: COLUMNS });
    expect(info.meta).toEqual({ ...META, stage: 'python', extra: { via: 'duckdb' } });

    const want = [...ROWS].reverse().map((r) => ({
      ...r,
      id: (r.id as number) + 1000,
      name: typeof r.name === 'string' ? r.name.toUpperCase() : null,
      blob: r.blob === null ? null : new Uint8Array(r.blob as Uint8Array),
      probs: Float32Array.from(r.probs as number[]),
    }));
    expect(await readAll(outFile, { stage: 'python' })).toEqual(want);
  });
});
