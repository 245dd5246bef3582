/**
 * Tables read side by side, joined by id: the rows of a driving table (images.arrow, dataset.arrow)
 * in its order, and for each id the rows of the tables computed from it (the map stages' tables),
 * whether those are one file or a folder of shards' parts (pipeline/shard.ts).
 */
import { type Row, TableReader } from './arrow.js';
import { TagsegError } from './errors.js';

/** A table read by the loop: its file, the stage that writes it (checked) and its project path (for errors). */
export interface LoopTable { file: string; stage: string; name: string }

/**
 * The rows of `tables` side by side, by the first table's ids in its row order: a table written in
 * that order is checked row by row; a part folder (a sharded stage's table) gives each id's row from
 * its shard's part (TableReader.rowsAlong), so no reader depends on how a table was sharded.
 */
export async function* joinedRows(tables: readonly LoopTable[]): AsyncGenerator<Row[]> {
  const readers: TableReader[] = [];
  let id: string | undefined;
  async function* driverIds(): AsyncGenerator<string> {
    for (;;) yield id!; // rowsAlong asks for the next id when it is asked for the next row, after `id` is set
  }
  try {
    for (const t of tables) readers.push(await TableReader.open(t.file, { stage: t.stage }));
    const its = readers.map((r, k) => (k > 0 && r.numParts > 1 ? r.rowsAlong(driverIds()) : r.rows())[Symbol.asyncIterator]());
    for (let count = 0; ; count++) {
      const first = await its[0].next();
      id = first.done ? undefined : first.value.id as string;
      if (first.done) checkFoldersEnd(tables, readers, count);
      const rest = await Promise.all(its.slice(1).map((it, j) => (first.done && readers[j + 1].numParts > 1 ? Promise.resolve(first) : it.next())));
      const next = [first, ...rest];
      if (next.every((n) => n.done)) return;
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

/** At the end of the first table: a part folder read along it must hold no other rows. */
function checkFoldersEnd(tables: readonly LoopTable[], readers: TableReader[], count: number): void {
  readers.forEach((r, k) => {
    if (k > 0 && r.numParts > 1 && r.info.numRows !== count) {
      throw new TagsegError(`${tables[k].name} has ${r.info.numRows} rows, ${tables[0].name} ${count}`, { file: tables[k].file, hint: `rerun \`tagseg run ${tables[k].stage}\`` });
    }
  });
}
