/**
 * The map stages' per-image loop (maps/image_loop.ts): rows joined by id, results consumed and
 * written in row order whatever order the concurrent computations finish in, no output at all
 * when a computation fails (the writer is aborted), a mismatched joined table named with the
 * stage to rerun, and a computation that leaks tensors caught. In shards: a part folder joined by id
 * (rows by part), a part per output shard holding that shard's ids in images.arrow's order, one
 * shard's run writing the same part bytes, and a folder with a row too many or too few named.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { joinedRows, runImageLoop } from '../../maps/image_loop.js';
import { type ColumnSpec, type Row, TableWriter, readAll } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError } from '../../pipeline/errors.js';
import { setQuiet } from '../../pipeline/log.js';
import { partPath, prepareTableFor, shardOf } from '../../pipeline/shard.js';

const COLUMNS: ColumnSpec[] = [{ name: 'id', type: 'utf8' }, { name: 'v', type: 'int32' }];
let tmp: string;

async function table(name: string, stage: string, ids: string[]): Promise<string> {
  const file = path.join(tmp, name);
  const w = await TableWriter.open(file, COLUMNS, { stage, paramsHash: 'x', classes: [] }, { batchRows: 3 });
  for (const [i, id] of ids.entries()) await w.write({ id, v: i });
  await w.close();
  return file;
}

/** A table written as a folder of `n` parts (each id in its shard's part, in `ids` order). */
async function parts(name: string, stage: string, ids: string[], n: number): Promise<string> {
  const dir = path.join(tmp, name);
  await prepareTableFor(dir, n);
  for (let k = 0; k < n; k++) {
    const w = await TableWriter.open(partPath(dir, { k, n }), COLUMNS, { stage, paramsHash: 'x', classes: [] }, { batchRows: 2 });
    for (const [i, id] of ids.entries()) if (shardOf(id, n) === k) await w.write({ id, v: i });
    await w.close();
  }
  return dir;
}

const IDS = Array.from({ length: 10 }, (_, i) => `im${i}`);
beforeAll(async () => {
  setQuiet(true);
  await initBackend();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-loop-'));
  await table('images.arrow', 'ingest', IDS);
  await table('maps.arrow', 'cam', IDS);
  await table('short.arrow', 'cam', IDS.slice(0, 7));
  await table('swapped.arrow', 'cam', [IDS[1], IDS[0], ...IDS.slice(2)]);
});
afterAll(async () => fs.rm(tmp, { recursive: true, force: true }));

const t = (name: string, stage: string) => ({ file: path.join(tmp, name), stage, name });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the per-image loop', () => {
  it('writes in row order, whatever order the computations finish in', async () => {
    const done: number[] = [];
    const out = path.join(tmp, 'out.arrow');
    const rows = await runImageLoop({
      label: 'test', rows: IDS.length, concurrency: 3, tables: [t('images.arrow', 'ingest'), t('maps.arrow', 'cam')],
      out: { file: out, columns: COLUMNS, meta: { stage: 'test', paramsHash: 'x', classes: [] } },
      compute: async ([ir, mr]) => {
        const v = ir.v as number;
        await sleep((IDS.length - v) * 3); // later rows finish first
        done.push(v);
        return 10 * (mr.v as number);
      },
      consume: ([ir], r) => ({ id: ir.id, v: r }),
    });
    expect(rows).toBe(IDS.length);
    expect(done).not.toEqual([...done].sort((a, b) => a - b)); // they did finish out of order
    expect((await readAll(out)).map((r) => [r.id, r.v])).toEqual(IDS.map((id, i) => [id, 10 * i]));
  });

  it('leaves no output when a computation fails, and no leaked tensor goes unnoticed', async () => {
    const out = path.join(tmp, 'failed.arrow');
    const base = {
      label: 'test', rows: IDS.length, concurrency: 2, tables: [t('images.arrow', 'ingest')],
      out: { file: out, columns: COLUMNS, meta: { stage: 'test', paramsHash: 'x', classes: [] } },
      consume: ([ir]: Row[]): Row => ({ id: ir.id, v: 0 }),
    };
    const failing = runImageLoop({ ...base, compute: async ([ir]) => { if (ir.id === 'im6') throw new Error('no luck'); } });
    await expect(failing).rejects.toThrow('no luck');
    const leaking = runImageLoop({ ...base, compute: async ([ir]) => { if (ir.id === 'im4') tf.scalar(1); } });
    await expect(leaking).rejects.toThrow(/test: the loop leaked 1 tensors/);
    expect((await fs.readdir(tmp)).filter((f) => f.startsWith('failed') || f.startsWith('.failed'))).toEqual([]);
  });

  it('a joined table out of step names itself and the stage to rerun', async () => {
    for (const name of ['short.arrow', 'swapped.arrow']) {
      const err = await (async () => {
        for await (const _ of joinedRows([t('images.arrow', 'ingest'), t(name, 'cam')])) { /* drain */ }
      })().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TagsegError);
      expect((err as TagsegError).message).toMatch(new RegExp(`${name} row '(end of table|im1)' does not match images.arrow row 'im(7|0)'`));
      expect((err as TagsegError).hint).toBe('rerun `tagseg run cam`');
    }
    let n = 0;
    for await (const [a, b] of joinedRows([t('images.arrow', 'ingest'), t('maps.arrow', 'cam')])) n += a.id === b.id ? 1 : 0;
    expect(n).toBe(IDS.length);
  });

  it('joins a part folder by id and writes a part per shard, each on its own', async () => {
    await parts('maps2.arrow', 'cam', IDS, 2);
    expect((await readAll(path.join(tmp, 'maps2.arrow'))).map((r) => r.id)).not.toEqual(IDS); // rows by part
    const loop = (file: string, run: { k: number; n: number }[]) => runImageLoop({
      label: 'test', rows: IDS.length, concurrency: 2, tables: [t('images.arrow', 'ingest'), t('maps2.arrow', 'cam')], shards: { n: 3, run },
      out: { file, columns: COLUMNS, meta: { stage: 'test', paramsHash: 'x', classes: [] } },
      compute: async ([ir, mr]) => { expect(mr.id).toBe(ir.id); return 10 * (mr.v as number); },
      consume: ([ir], r) => ({ id: ir.id, v: r }),
    });
    const all = path.join(tmp, 'out3.arrow');
    expect(await loop(all, [0, 1, 2].map((k) => ({ k, n: 3 })))).toBe(IDS.length);
    for (const k of [0, 1, 2]) {
      const own = IDS.filter((id) => shardOf(id, 3) === k);
      expect((await readAll(partPath(all, { k, n: 3 }))).map((r) => [r.id, r.v])).toEqual(own.map((id) => [id, 10 * IDS.indexOf(id)]));
    }
    const one = path.join(tmp, 'out3b.arrow');
    expect(await loop(one, [{ k: 1, n: 3 }])).toBe(IDS.filter((id) => shardOf(id, 3) === 1).length);
    expect(await fs.readdir(one)).toEqual(['part-1-of-3.arrow']);
    expect((await fs.readFile(partPath(one, { k: 1, n: 3 }))).equals(await fs.readFile(partPath(all, { k: 1, n: 3 })))).toBe(true);
  });

  it('a part folder with a row too many or too few is named', async () => {
    await parts('extra.arrow', 'cam', [...IDS, 'im99'], 2);
    await parts('missing.arrow', 'cam', IDS.filter((id) => id !== 'im3'), 2);
    const drain = async (name: string) => {
      for await (const _ of joinedRows([t('images.arrow', 'ingest'), t(name, 'cam')])) { /* drain */ }
    };
    await expect(drain('extra.arrow')).rejects.toThrow(/extra\.arrow has 11 rows, images\.arrow 10/);
    await expect(drain('missing.arrow')).rejects.toThrow(/part-\d-of-2\.arrow.*where 'im3' was expected/s);
  });
});
