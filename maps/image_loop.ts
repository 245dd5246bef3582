/**
 * The per-image loop of a map stage (cam, affinity, contrast): the rows of images.arrow and of the
 * tables read beside it (joined by id in images.arrow's row order, whatever their sharding), `compute`
 * run at most `concurrency` images at a time (pipeline/concurrency.ts orderedMap), its results handed
 * to `consume` in row order (scores, and the row to write), written through a TableWriter per shard
 * (pipeline/shard.ts: one file, or a part per shard, each committed on its own) that is aborted on any
 * error, with a progress bar. Memory stays flat: a window of rows at a time.
 */
import * as tf from '@tensorflow/tfjs';
import { orderedMap } from '../pipeline/concurrency.js';
import { type ColumnSpec, type Row, type TableMeta, TableWriter } from '../pipeline/arrow.js';
import { type LoopTable, joinedRows } from '../pipeline/joined_rows.js';
import { progress } from '../pipeline/log.js';
import { type Shard, SequentialParts, partPath, prepareTableFor, rowsByShard, shardOf } from '../pipeline/shard.js';

export { type LoopTable, joinedRows } from '../pipeline/joined_rows.js';

export interface ImageLoop<R> {
  /** Progress bar label, e.g. 'cam maps'. */
  label: string;
  /** images.arrow first, then the tables joined to it. */
  tables: readonly LoopTable[];
  /** Rows, for the progress bar. */
  rows: number;
  out: { file: string; columns: ColumnSpec[]; meta: TableMeta };
  /** The output's shard count and the shards this run writes (pipeline/shard.ts shardsToRun); default one file. */
  shards?: { n: number; run: Shard[] };
  /** Images computed at once (tensor work of one image never depends on another's). */
  concurrency?: number;
  /** One image's maps from its joined rows; must not leak tensors (checked over the loop). */
  compute(rows: Row[]): Promise<R>;
  /** In row order: update the scores, return the row to write. */
  consume(rows: Row[], r: R): Row;
}

/**
 * Run the loop; returns the number of rows written. Each shard's output (the file, or its part)
 * appears only when every row of it is written.
 */
export async function runImageLoop<R>(o: ImageLoop<R>): Promise<number> {
  const { n, run } = o.shards ?? { n: 1, run: [{ k: 0, n: 1 }] };
  await prepareTableFor(o.out.file, n);
  const parts = new SequentialParts(run, async (s) => {
    const writer = await TableWriter.open(partPath(o.out.file, s), o.out.columns, o.out.meta, { batchRows: 64, batchBytes: 32 * 2 ** 20 });
    return { writer, commit: async () => { await writer.close(); }, abort: () => writer.abort() };
  });
  // some shards of n: about their share of the rows (the hash spreads ids evenly)
  const bar = progress(o.label, run.length === n ? o.rows : Math.round((o.rows * run.length) / n));
  const tensors = tf.memory().numTensors;
  const idOf = (joined: Row[]) => joined[0].id as string;
  let rows = 0;
  try {
    const joined = rowsByShard(run, () => joinedRows(o.tables), idOf);
    for await (const [j, r] of orderedMap(joined, async (j) => [j, await o.compute(j)] as const, { concurrency: o.concurrency ?? 1 })) {
      await (await parts.for(shardOf(idOf(j), n))).writer.write(o.consume(j, r));
      rows++;
      bar.tick();
    }
    if (tf.memory().numTensors !== tensors) throw new Error(`${o.label}: the loop leaked ${tf.memory().numTensors - tensors} tensors`);
    bar.stop();
    await parts.finish();
  } catch (err) {
    bar.stop();
    await parts.abort();
    throw err;
  }
  return rows;
}
