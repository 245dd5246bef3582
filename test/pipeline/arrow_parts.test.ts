/**
 * Part tables: a folder of part-<k>-of-<N>.arrow files read as one table by TableReader / readAll /
 * readInfo (rows by part, then row), with the folder checked (every part present, one count, equal
 * schemas); rowsAlong gives a sharded table's rows in another table's id order; pyarrow's
 * dataset() and DuckDB (through pyarrow) read the same folder.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ColumnSpec, type Row, type TableMeta, TableReader, TableWriter, hashTable, readAll, readInfo } from '../../pipeline/arrow.js';
import { TagsegError } from '../../pipeline/errors.js';
import { parseShard, partPath, prepareTableFor, shardOf, shardsToRun } from '../../pipeline/shard.js';
import { skipWithout } from '../helpers/ci.js';
import { findPython } from '../helpers/python.js';

const COLUMNS: ColumnSpec[] = [
  { name: 'id', type: 'utf8' },
  { name: 'n', type: 'int32' },
  { name: 'mask', type: 'binary', tensor: { dtype: 'uint8', shape: '[n]' } },
  { name: 'tags', type: 'list<utf8>' },
];
const META: TableMeta = { stage: 'refine', paramsHash: 'p', classes: ['a', 'b'] };
const IDS = Array.from({ length: 40 }, (_, i) => `img ${i}`);
const rowOf = (id: string, i: number): Row => ({ id, n: i, mask: new Uint8Array([i, 255 - i, 7]), tags: [`t${i % 3}`] });

let dir: string;
beforeAll(async () => { dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-parts-')); });
afterAll(async () => { await fs.rm(dir, { recursive: true, force: true }); });

/** Writes `ids` as a table of `n` parts (each id into its shard's part), batches of 4 rows. */
async function writeSharded(table: string, ids: string[], n: number, meta: TableMeta = META): Promise<void> {
  await prepareTableFor(table, n);
  for (const s of shardsToRun(n, undefined, 'x.shards')) {
    const w = await TableWriter.open(partPath(table, s), COLUMNS, meta, { batchRows: 4 });
    for (const [i, id] of ids.entries()) if (shardOf(id, n) === s.k) await w.write(rowOf(id, i));
    await w.close();
  }
}

describe('shard assignment', () => {
  it('is a pure function of the id, spreads ids over every shard, and parses k/N', () => {
    expect(IDS.map((id) => shardOf(id, 3))).toEqual(IDS.map((id) => shardOf(id, 3)));
    expect(new Set(IDS.map((id) => shardOf(id, 3)))).toEqual(new Set([0, 1, 2]));
    expect(IDS.every((id) => shardOf(id, 1) === 0)).toBe(true);
    // sha256("a") starts ca978112ca1bbdca: 0xca978112ca1bbdca mod 7, as Python computes it
    expect(shardOf('a', 7)).toBe(Number(0xca978112ca1bbdcan % 7n));
    expect(parseShard('2/5')).toEqual({ k: 2, n: 5 });
    for (const bad of ['5/5', '-1/3', '1/0', 'a/b', '1']) expect(() => parseShard(bad)).toThrow(TagsegError);
    expect(() => shardsToRun(3, { k: 0, n: 4 }, 'refine.shards')).toThrow(/does not match refine.shards: 3/);
  });
});

describe('a part folder read as one table', () => {
  it('gives every row once, by part then row, with merged info; rowsAlong restores the id order', async () => {
    const table = path.join(dir, 'a.arrow');
    await writeSharded(table, IDS, 3);
    const rows = await readAll(table, { stage: 'refine' });
    const byPart = [0, 1, 2].flatMap((k) => IDS.filter((id) => shardOf(id, 3) === k));
    expect(rows.map((r) => r.id)).toEqual(byPart);
    const info = await readInfo(table);
    expect([info.numRows, info.file, info.meta]).toEqual([IDS.length, table, { ...META, extra: {} }]);
    const r = await TableReader.open(table);
    const along: Row[] = [];
    for await (const row of r.rowsAlong(IDS)) along.push(row);
    await r.close();
    expect(along).toEqual(IDS.map(rowOf));
    // negative controls: two ids of one part in swapped order, an id the table does not hold
    const [x, y] = IDS.filter((id) => shardOf(id, 3) === 0);
    for (const [ids, bad] of [[[y, x], y], [[IDS[0], 'nope'], 'nope']] as const) {
      const r2 = await TableReader.open(table);
      await expect(async () => { for await (const _ of r2.rowsAlong(ids)) void _; }).rejects.toThrow(new RegExp(`where '${bad}' was expected`));
      await r2.close();
    }
  });

  it('names a missing part, mixed shard counts, a stray file and parts of other runs', async () => {
    const table = path.join(dir, 'b.arrow');
    await writeSharded(table, IDS, 3);
    await fs.rm(path.join(table, 'part-1-of-3.arrow'));
    await expect(readAll(table, { stage: 'refine' })).rejects.toThrow(/part 'part-1-of-3.arrow' is missing.*tagseg run refine --shard 1\/3/s);
    await writeSharded(table, IDS, 3);
    await fs.copyFile(path.join(table, 'part-0-of-3.arrow'), path.join(table, 'part-0-of-2.arrow'));
    await expect(readInfo(table)).rejects.toThrow(/holds parts of/);
    await writeSharded(table, IDS, 3); // prepareTableFor removes the other count's parts
    expect((await fs.readdir(table)).sort()).toEqual(['part-0-of-3.arrow', 'part-1-of-3.arrow', 'part-2-of-3.arrow']);
    await fs.writeFile(path.join(table, 'notes.txt'), 'x');
    await expect(readInfo(table)).rejects.toThrow(/'notes.txt' is not a table part/);
    await fs.rm(path.join(table, 'notes.txt'));
    await fs.writeFile(path.join(table, '.part-1-of-3.arrow.1234.tmp'), 'half written'); // a shard still writing: ignored
    expect((await readInfo(table)).numRows).toBe(IDS.length);
    const w = await TableWriter.open(partPath(table, { k: 2, n: 3 }), COLUMNS, { ...META, paramsHash: 'other' });
    await w.close();
    await expect(readInfo(table)).rejects.toThrow(/part 'part-2-of-3.arrow' has other columns or metadata/);
  });

  it('switches between a single file and a folder; hashTable covers every part', async () => {
    const table = path.join(dir, 'c.arrow');
    await writeSharded(table, IDS, 1);
    expect((await fs.stat(table)).isFile()).toBe(true);
    await writeSharded(table, IDS, 2);
    expect((await fs.stat(table)).isDirectory()).toBe(true);
    const h = await hashTable(table);
    await writeSharded(table, IDS.slice(1), 2);
    expect(await hashTable(table)).not.toBe(h);
    await writeSharded(table, IDS, 1);
    expect((await readAll(table)).map((r) => r.id)).toEqual(IDS);
  });

  it('hashTable hashes the rows, not the layout: one file and N parts in any order hash the same', async () => {
    const table = path.join(dir, 'h.arrow');
    await writeSharded(table, IDS, 1);
    const one = await hashTable(table);
    await writeSharded(table, IDS, 3);
    expect(await hashTable(table)).toBe(one);
    // 2 parts, rows reversed in each, another params hash (it holds x.shards)
    await prepareTableFor(table, 2);
    for (const s of shardsToRun(2, undefined, 'x.shards')) {
      const w = await TableWriter.open(partPath(table, s), COLUMNS, { ...META, paramsHash: 'x.shards=2' }, { batchRows: 3 });
      for (const [i, id] of [...IDS.entries()].reverse()) if (shardOf(id, 2) === s.k) await w.write(rowOf(id, i));
      await w.close();
    }
    expect((await readAll(table)).map((r) => r.id)).not.toEqual(IDS);
    expect(await hashTable(table)).toBe(one);
    // negative controls: one byte of one row's mask, a row's tag, the classes, a row fewer
    const changed = async (edit: (row: Row) => Row, meta: TableMeta = META) => {
      await prepareTableFor(table, 1);
      const w = await TableWriter.open(table, COLUMNS, meta, { batchRows: 4 });
      for (const [i, id] of IDS.entries()) await w.write(i === 17 ? edit(rowOf(id, i)) : rowOf(id, i));
      await w.close();
      return hashTable(table);
    };
    expect(await changed((r) => r)).toBe(one);
    expect(await changed((r) => ({ ...r, mask: new Uint8Array([17, 238, 8]) }))).not.toBe(one);
    expect(await changed((r) => ({ ...r, tags: ['t0', 't1'] }))).not.toBe(one);
    expect(await changed((r) => r, { ...META, classes: ['a', 'c'] })).not.toBe(one);
    await writeSharded(table, IDS.filter((id) => id !== 'img 17'), 3);
    expect(await hashTable(table)).not.toBe(one);
    // a file that is not a table is keyed by its bytes; a missing one is an error
    const junk = path.join(dir, 'junk.arrow');
    await fs.writeFile(junk, 'not a table');
    const j = await hashTable(junk);
    await fs.writeFile(junk, 'not a table either');
    expect(await hashTable(junk)).not.toBe(j);
    await expect(hashTable(path.join(dir, 'missing.arrow'))).rejects.toThrow(/table not found/);
  });
});

const { python, why } = findPython(['pyarrow', 'duckdb']);
const noPython = skipWithout('part table pyarrow/DuckDB', python ? undefined : why);

describe.skipIf(noPython)('pyarrow dataset() and DuckDB read a part folder', () => {
  it('as one table with every row and column', async () => {
    const table = path.join(dir, 'py.arrow');
    await writeSharded(table, IDS, 3);
    const script = `
import sys, json, pyarrow.dataset as ds, duckdb
t = ds.dataset(sys.argv[1], format='ipc').to_table()
con = duckdb.connect()
con.register('t', t)
q = con.execute("select count(*), sum(n), count(distinct id), sum(octet_length(mask)) from t").fetchone()
rows = sorted(t.to_pylist(), key=lambda r: r['n'])
print(json.dumps({'rows': t.num_rows, 'duck': list(q), 'ids': [r['id'] for r in rows], 'mask5': list(rows[5]['mask']), 'tags5': rows[5]['tags']}))
`;
    const { stdout } = await promisify(execFile)(python!, ['-c', script, table]);
    const r = JSON.parse(stdout) as { rows: number; duck: number[]; ids: string[]; mask5: number[]; tags5: string[] };
    expect(r.rows).toBe(IDS.length);
    expect(r.duck).toEqual([IDS.length, (IDS.length * (IDS.length - 1)) / 2, IDS.length, 3 * IDS.length]);
    expect(r.ids).toEqual(IDS);
    expect(r.mask5).toEqual([5, 250, 7]);
    expect(r.tags5).toEqual(['t2']);
  });
});
