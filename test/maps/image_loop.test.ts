/**
 * The map stages' per-image loop (maps/image_loop.ts): rows joined by id, results consumed and
 * written in row order whatever order the concurrent computations finish in, no output at all
 * when a computation fails (the writer is aborted), a mismatched joined table named with the
 * stage to rerun, and a computation that leaks tensors caught.
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

const COLUMNS: ColumnSpec[] = [{ name: 'id', type: 'utf8' }, { name: 'v', type: 'int32' }];
let tmp: string;

async function table(name: string, stage: string, ids: string[]): Promise<string> {
  const file = path.join(tmp, name);
  const w = await TableWriter.open(file, COLUMNS, { stage, paramsHash: 'x', classes: [] }, { batchRows: 3 });
  for (const [i, id] of ids.entries()) await w.write({ id, v: i });
  await w.close();
  return file;
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
});
