/**
 * The per-image loop of a map stage (cam, affinity, contrast): the rows of images.arrow and of the
 * tables read beside it (joined by id: a map table keeps images.arrow's row order), `compute` run
 * at most `concurrency` images at a time (pipeline/concurrency.ts orderedMap), its results handed to
 * `consume` in row order (scores, and the row to write), written through a TableWriter that is
 * aborted on any error, with a progress bar. Memory stays flat: a window of rows at a time.
 */
import * as tf from '@tensorflow/tfjs';
import { orderedMap } from '../pipeline/concurrency.js';
import { type ColumnSpec, type Row, type TableMeta, TableReader, TableWriter } from '../pipeline/arrow.js';
import { TagsegError } from '../pipeline/errors.js';
import { progress } from '../pipeline/log.js';

/** A table read by the loop: its file, the stage that writes it (checked) and its project path (for errors). */
export interface LoopTable { file: string; stage: string; name: string }

/** The rows of `tables` side by side, checked to have the first table's ids in the same order. */
export async function* joinedRows(tables: readonly LoopTable[]): AsyncGenerator<Row[]> {
  const readers: TableReader[] = [];
  try {
    for (const t of tables) readers.push(await TableReader.open(t.file, { stage: t.stage }));
    const its = readers.map((r) => r.rows()[Symbol.asyncIterator]());
    for (;;) {
      const next = await Promise.all(its.map((it) => it.next()));
      if (next.every((n) => n.done)) return;
      const id = next[0].done ? undefined : next[0].value.id;
      next.forEach((n, k) => {
        if (k > 0 && (n.done || id === undefined || n.value.id !== id)) {
          const at = (m: IteratorResult<Row>) => (m.done ? 'end of table' : String(m.value.id));
          throw new TagsegError(`${tables[k].name} row '${at(n)}' does not match ${tables[0].name} row '${at(next[0])}'`, {
            file: tables[k].file, hint: `rerun \`tagseg run ${tables[k].stage}\``,
          });
        }
      });
      yield next.map((n) => n.value as Row);
    }
  } finally {
    for (const r of readers) await r.close();
  }
}

export interface ImageLoop<R> {
  /** Progress bar label, e.g. 'cam maps'. */
  label: string;
  /** images.arrow first, then the tables joined to it. */
  tables: readonly LoopTable[];
  /** Rows, for the progress bar. */
  rows: number;
  out: { file: string; columns: ColumnSpec[]; meta: TableMeta };
  /** Images computed at once (tensor work of one image never depends on another's). */
  concurrency?: number;
  /** One image's maps from its joined rows; must not leak tensors (checked over the loop). */
  compute(rows: Row[]): Promise<R>;
  /** In row order: update the scores, return the row to write. */
  consume(rows: Row[], r: R): Row;
}

/** Run the loop; returns the number of rows written. The output appears only when every row is written. */
export async function runImageLoop<R>(o: ImageLoop<R>): Promise<number> {
  const writer = await TableWriter.open(o.out.file, o.out.columns, o.out.meta, { batchRows: 64, batchBytes: 32 * 2 ** 20 });
  const bar = progress(o.label, o.rows);
  const tensors = tf.memory().numTensors;
  let rows = 0;
  try {
    const computed = orderedMap(joinedRows(o.tables), async (j) => [j, await o.compute(j)] as const, { concurrency: o.concurrency ?? 1 });
    for await (const [joined, r] of computed) {
      await writer.write(o.consume(joined, r));
      rows++;
      bar.tick();
    }
    if (tf.memory().numTensors !== tensors) throw new Error(`${o.label}: the loop leaked ${tf.memory().numTensors - tensors} tensors`);
    bar.stop();
    await writer.close();
  } catch (err) {
    bar.stop();
    await writer.abort();
    throw err;
  }
  return rows;
}
