import { readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Field, Int32, RecordBatch, RecordBatchReader, Schema, Struct, Table, Utf8, makeData, tableToIPC, vectorFromArray, type Data } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  SCHEMA_VERSION, TableReader, TableWriter, readAll, readInfo,
  type ColumnSpec, type Row, type TableMeta,
} from '../../pipeline/arrow.js';
import { TagsegError } from '../../pipeline/errors.js';

let dir: string;
beforeAll(async () => { dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-arrow-')); });
afterAll(async () => { await fs.rm(dir, { recursive: true, force: true }); });

const META: TableMeta = { stage: 'cam', paramsHash: 'abc123', classes: ['background', 'cat', 'dog'], extra: { seed: 7, note: 'x' } };

const ALL: ColumnSpec[] = [
  { name: 'id', type: 'int32', doc: 'row id' },
  { name: 'name', type: 'utf8', nullable: true },
  { name: 'score', type: 'float32', nullable: true },
  { name: 'weight', type: 'float64', nullable: true },
  { name: 'ok', type: 'bool', nullable: true },
  { name: 'blob', type: 'binary', nullable: true, tensor: { dtype: 'uint8', shape: '[height, width]' } },
  { name: 'ints', type: 'list<int32>', nullable: true },
  { name: 'probs', type: 'list<float32>', nullable: true, tensor: { dtype: 'float32', shape: '[channels, height, width]' } },
  { name: 'tags', type: 'list<utf8>', nullable: true },
];

const ROWS: Row[] = [
  { id: 0, name: 'cat', score: 0.5, weight: 1 / 3, ok: true, blob: new Uint8Array([1, 2, 3]), ints: [1, -2, 2147483647], probs: new Float32Array([0.25, 0.75]), tags: ['a', 'b'] },
  { id: 1, name: null, score: null, weight: null, ok: null, blob: null, ints: null, probs: null, tags: null },
  { id: 2, name: '', score: -1.25, weight: -0, ok: false, blob: new Uint8Array(0), ints: [], probs: new Float32Array(0), tags: [] },
  { id: -2147483648, name: 'ünï 🐱', score: 3.75, weight: 1e300, ok: true, blob: new Uint8Array([255]), ints: [0], probs: [1, 2, 3], tags: ['', 'ü'] },
];

/** What a row reads back as: lists of float32 come back as Float32Array, of int32 as number[]. */
function expected(row: Row): Row {
  const out: Row = { ...row };
  if (Array.isArray(row.probs)) out.probs = Float32Array.from(row.probs as number[]);
  if (row.ints instanceof Int32Array) out.ints = Array.from(row.ints);
  return out;
}

async function writeTable(file: string, columns: ColumnSpec[], rows: Row[], opts?: { batchRows?: number; batchBytes?: number }, meta = META) {
  const w = await TableWriter.open(file, columns, meta, opts);
  for (const r of rows) await w.write(r);
  return { w, result: await w.close() };
}

async function catchError(p: Promise<unknown>): Promise<TagsegError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(TagsegError);
  return err as TagsegError;
}

describe('TableWriter/TableReader round trip', () => {
  it('round-trips every column type, nulls and empty lists', async () => {
    const file = path.join(dir, 'all.arrow');
    const { result } = await writeTable(file, ALL, ROWS);
    expect(result.rows).toBe(4);
    expect(result.bytes).toBe((await fs.stat(file)).size);
    const back = await readAll(file, { stage: 'cam' });
    expect(back).toEqual(ROWS.map(expected));
    expect(back[0].blob).toBeInstanceOf(Uint8Array);
    expect(back[0].probs).toBeInstanceOf(Float32Array);
    expect(Array.isArray(back[0].ints)).toBe(true);
    expect(back[2].ints).toEqual([]);
    expect(back[1].ints).toBeNull();
  });

  it('splits rows into batches and reads them by rows() and batch(i)', async () => {
    const file = path.join(dir, 'many.arrow');
    const cols: ColumnSpec[] = [{ name: 'i', type: 'int32' }, { name: 'v', type: 'list<int32>' }];
    const rows = Array.from({ length: 10 }, (_, i) => ({ i, v: Array.from({ length: i }, (_, k) => k * i) }));
    await writeTable(file, cols, rows, { batchRows: 3 });

    const r = await TableReader.open(file);
    try {
      expect(r.info.numBatches).toBe(4);
      expect(r.info.numRows).toBe(10);
      const streamed: Row[] = [];
      for await (const row of r.rows()) streamed.push(row);
      expect(streamed).toEqual(rows);
      expect((await r.batch(3)).map((x) => x.i)).toEqual([9]);
      expect((await r.batch(1)).map((x) => x.i)).toEqual([3, 4, 5]);
      // concurrent batch reads share one file position inside arrow-js; they must not interleave
      const all = await Promise.all([0, 1, 2, 3, 0].map((i) => r.batch(i)));
      expect(all.map((b) => b[0].i)).toEqual([0, 3, 6, 9, 0]);
      expect((await catchError(r.batch(4))).message).toContain('batch 4 is out of range');
    } finally {
      await r.close();
    }
  });

  it('stores binary views by their own offset, not the start of the underlying buffer', async () => {
    const file = path.join(dir, 'views.arrow');
    const backing = new Uint8Array(64).map((_, i) => i);
    const views = [backing.subarray(10, 13), backing.subarray(33, 40), Buffer.from('pooled buffer'), new Uint8Array(backing.buffer, 60, 4)];
    expect(views.every((v) => v.byteOffset > 0)).toBe(true);
    await writeTable(file, [{ name: 'b', type: 'binary' }], views.map((b) => ({ b })));
    const back = await readAll(file);
    expect(back.map((r) => Array.from(r.b as Uint8Array))).toEqual(views.map((v) => Array.from(v)));
  });

  it('copies rows on write, so callers may reuse their buffers', async () => {
    const file = path.join(dir, 'reuse.arrow');
    const scratch = new Float32Array([1, 2]);
    const w = await TableWriter.open(file, [{ name: 'p', type: 'list<float32>' }], META);
    await w.write({ p: scratch });
    scratch[0] = 99;
    await w.write({ p: scratch });
    await w.close();
    expect((await readAll(file)).map((r) => Array.from(r.p as Float32Array))).toEqual([[1, 2], [99, 2]]);
  });

  it('keeps batches in order when writes are not awaited one by one', async () => {
    const file = path.join(dir, 'concurrent.arrow');
    const w = await TableWriter.open(file, [{ name: 'i', type: 'int32' }], META, { batchRows: 2 });
    // Make every other disk write slow, so writes issued concurrently would finish out of order.
    const proto = Object.getPrototypeOf((w as unknown as { fh: object }).fh) as { writev: (...a: unknown[]) => Promise<unknown> };
    const writev = proto.writev;
    let calls = 0;
    proto.writev = async function (this: unknown, ...args: unknown[]) {
      if (calls++ % 2 === 0) await new Promise((r) => setTimeout(r, 20));
      return writev.apply(this, args);
    };
    try {
      await Promise.all(Array.from({ length: 8 }, (_, i) => w.write({ i })));
      await w.close();
    } finally {
      proto.writev = writev;
    }
    expect(calls).toBeGreaterThan(4);
    expect((await readAll(file)).map((r) => r.i)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('writes a valid table with zero rows', async () => {
    const file = path.join(dir, 'empty.arrow');
    const { result } = await writeTable(file, ALL, []);
    expect(result.rows).toBe(0);
    const info = await readInfo(file);
    expect([info.numRows, info.numBatches]).toEqual([0, 0]);
    expect(await readAll(file)).toEqual([]);
  });
});

describe('metadata', () => {
  it('round-trips meta, column specs and versions, and puts tensor docs on the fields', async () => {
    const file = path.join(dir, 'meta.arrow');
    await writeTable(file, ALL, ROWS.slice(0, 2));
    const info = await readInfo(file);
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(info).toMatchObject({ file, schemaVersion: SCHEMA_VERSION, tagsegVersion: pkg.version, numRows: 2, numBatches: 1 });
    expect(info.meta).toEqual(META);
    expect(info.columns).toEqual(ALL);

    const reader = await RecordBatchReader.from(await fs.open(file));
    await reader.open();
    const md = reader.schema.metadata;
    expect(md.get('tagseg.schema_version')).toBe(String(SCHEMA_VERSION));
    expect(JSON.parse(md.get('tagseg.classes')!)).toEqual(META.classes);
    const probs = reader.schema.fields.find((f) => f.name === 'probs')!;
    expect(Object.fromEntries(probs.metadata)).toEqual({ 'tagseg.tensor.dtype': 'float32', 'tagseg.tensor.shape': '[channels, height, width]' });
    expect(reader.schema.fields.find((f) => f.name === 'id')!.metadata.get('tagseg.doc')).toBe('row id');
    await reader.cancel();
  });

  it('defaults meta.extra to {}', async () => {
    const file = path.join(dir, 'noextra.arrow');
    await writeTable(file, [{ name: 'i', type: 'int32' }], [{ i: 1 }], undefined, { stage: 's', paramsHash: 'h', classes: [] });
    expect((await readInfo(file)).meta.extra).toEqual({});
  });
});

/** An Arrow file written by plain arrow-js: one column 'i', whatever schema metadata a test wants. */
async function foreignFile(name: string, metadata: Record<string, string>, column: Data = makeData({ type: new Int32(), data: new Int32Array([1, 2]) })): Promise<string> {
  const file = path.join(dir, name);
  const schema = new Schema([new Field('i', column.type, false)], new Map(Object.entries(metadata)));
  const data = makeData({ type: new Struct(schema.fields), length: column.length, nullCount: 0, children: [column] });
  await fs.writeFile(file, tableToIPC(new Table(new RecordBatch(schema, data)), 'file'));
  return file;
}

describe('reader checks', () => {
  it('names the file and the stage to rerun on a schema-version mismatch', async () => {
    const file = await foreignFile('old.arrow', { 'tagseg.schema_version': '0', 'tagseg.stage': 'cam', 'tagseg.columns': '[]' });
    const err = await catchError(TableReader.open(file));
    expect(err.file).toBe(file);
    expect(err.message).toContain(file);
    expect(err.message).toContain(`was written with table schema 0, this tagseg reads ${SCHEMA_VERSION}: rerun \`tagseg run cam\``);
  });

  it('rejects Arrow files that are not tagseg tables, non-Arrow files and missing files', async () => {
    const plain = await foreignFile('plain.arrow', {});
    expect((await catchError(readAll(plain))).message).toContain('not a tagseg table');
    const text = path.join(dir, 'notes.arrow');
    await fs.writeFile(text, 'just some text, long enough to look like a file');
    const e2 = await catchError(readInfo(text));
    expect([e2.file, e2.reason]).toEqual([text, expect.stringContaining('not an Arrow IPC file')]);
    const e3 = await catchError(readInfo(path.join(dir, 'nope.arrow')));
    expect(e3.reason).toBe('table not found');
  });

  it('checks the expected stage and that columns have their declared types', async () => {
    const file = path.join(dir, 'stage.arrow');
    await writeTable(file, [{ name: 'i', type: 'int32' }], [{ i: 1 }]);
    expect((await catchError(readAll(file, { stage: 'refine' }))).message).toContain("holds output of stage 'cam', expected stage 'refine'");

    const liar = await foreignFile('liar.arrow', {
      'tagseg.schema_version': String(SCHEMA_VERSION), 'tagseg.stage': 'cam', 'tagseg.classes': '[]',
      'tagseg.columns': JSON.stringify([{ name: 'i', type: 'int32' }]),
    }, vectorFromArray(['x'], new Utf8()).data[0]);
    expect((await catchError(readAll(liar))).message).toContain("column 'i' is Utf8 in the file, tagseg expects Int32: rerun `tagseg run cam`");
  });
});

describe('atomic writes', () => {
  it('leaves the previous file untouched while writing and after abort()', async () => {
    const file = path.join(dir, 'atomic.arrow');
    const cols: ColumnSpec[] = [{ name: 'v', type: 'utf8' }];
    await writeTable(file, cols, [{ v: 'old' }]);
    const before = await fs.readFile(file);

    const w = await TableWriter.open(file, cols, META, { batchRows: 2 });
    for (let i = 0; i < 5; i++) await w.write({ v: `new${i}` }); // two batches already on disk in the temp file
    expect((await fs.readFile(file)).equals(before)).toBe(true);
    expect((await fs.readdir(dir)).filter((f) => f.startsWith('.atomic.arrow.'))).toHaveLength(1);
    await w.abort();

    expect((await fs.readFile(file)).equals(before)).toBe(true);
    expect(await readAll(file)).toEqual([{ v: 'old' }]);
    expect((await fs.readdir(dir)).filter((f) => f.startsWith('.atomic.arrow.'))).toEqual([]);
    await expect(w.write({ v: 'late' })).rejects.toThrow(/aborted/);
  });

  it('replaces the previous file on close()', async () => {
    const file = path.join(dir, 'replace.arrow');
    await writeTable(file, [{ name: 'v', type: 'int32' }], [{ v: 1 }]);
    await writeTable(file, [{ name: 'v', type: 'int32' }], [{ v: 2 }, { v: 3 }]);
    expect(await readAll(file)).toEqual([{ v: 2 }, { v: 3 }]);
  });
});

describe('row validation', () => {
  it.each([
    [{ id: 'seven' }, "column 'id' (int32) got string"],
    [{ id: 1.5 }, "column 'id' (int32) got number 1.5"],
    [{ id: 2 ** 31 }, "column 'id' (int32)"],
    [{ id: 1, ints: [1, 'x'] }, "column 'ints' (list<int32>) got array(2)"],
    [{ id: 1, blob: [1, 2] }, "column 'blob' (binary) got array(2)"],
    [{ id: 1, probs: new Int32Array(2) }, "column 'probs' (list<float32>) got Int32Array"],
    [{ id: 1, ok: 1 }, "column 'ok' (bool) got number 1"],
    [{ name: 'no id' }, "column 'id' is not nullable but row 1 has no value"],
    [{ id: 1, nmae: 'typo' }, "row 1 has column 'nmae', which the table does not declare"],
  ])('rejects %j naming the table file and the column', async (row, message) => {
    const file = path.join(dir, 'bad.arrow');
    const w = await TableWriter.open(file, ALL, META);
    try {
      const err = await catchError(w.write(row as unknown as Row));
      expect(err.file).toBe(file);
      expect(err.message).toContain(file);
      expect(err.message).toContain(message);
    } finally {
      await w.abort();
    }
  });
});

describe('memory', () => {
  it('keeps at most about batchBytes in memory while writing 50 MiB', async () => {
    const file = path.join(dir, 'big.arrow');
    const rowBytes = 256 * 1024;
    const limit = 2 ** 20;
    const w = await TableWriter.open(file, [{ name: 'i', type: 'int32' }, { name: 'b', type: 'binary' }], META, { batchBytes: limit });
    const payload = new Uint8Array(rowBytes);
    for (let i = 0; i < 200; i++) await w.write({ i, b: payload.fill(i & 255) });
    const { rows, bytes } = await w.close();

    expect(rows).toBe(200);
    expect(bytes).toBeGreaterThan(200 * rowBytes);
    // Encoded batches carry a few hundred bytes of IPC framing on top of the row bytes.
    expect(w.stats.peakBufferedBytes).toBeLessThanOrEqual(limit + 4096);
    expect(w.stats.peakBufferedBytes).toBeGreaterThanOrEqual(3 * rowBytes);
    expect(w.stats.batches).toBeGreaterThanOrEqual(50);

    const r = await TableReader.open(file);
    try {
      expect(r.info).toMatchObject({ numRows: 200, numBatches: w.stats.batches });
      const last = (await r.batch(r.info.numBatches - 1)).at(-1)!;
      expect(last.i).toBe(199);
      expect((last.b as Uint8Array).every((x) => x === 199)).toBe(true);
    } finally {
      await r.close();
    }
  });
});
