/**
 * Streaming training data: the network stages (cam, affinity, contrast, segment) read their
 * training images by row position from the Arrow tables instead of holding the train split in
 * memory (100k images at 320 x 240 would be 23 GB of uint8).
 *
 * Order: the loop (nn/loop.ts) still draws a seeded permutation of the item indices each epoch,
 * and the stage maps item i to a row position; so a seed gives the same batches, the same
 * augmentation draws and byte-identical weights as the in-memory path (test/nn/dataset.test.ts).
 * A block shuffle would read sequentially, but it changes every batch's composition (and so the
 * results for a seed), and its batches mix fewer distant images.
 *
 * Cost of random access: arrow-js reads a whole record batch body (images.arrow: ~16 MiB, up to
 * 256 rows) to return one row: 13-15 ms a row at 128 px (1k synthetic images, loaded machine),
 * half of a cam training step's compute per image. So RowReader reads only the asked rows' bytes
 * (TableReader.readRows: offsets, then the cell; 0.26 ms a row) when the batch allows it
 * (uncompressed, tagseg columns: every table tagseg writes), and falls back to whole bodies with a
 * small LRU (`cacheBatches`) otherwise. Those reads are synchronous page-cache reads, so the
 * prefetch overlaps I/O mainly on the fallback path. Memory: at most `cacheBatches` bodies + the
 * rows of the current and two prefetched steps, whatever the number of images.
 */
import type { RecordBatch } from 'apache-arrow';
import { type Row, TableReader, decodeRow } from '../pipeline/arrow.js';
import { TagsegError } from '../pipeline/errors.js';

/** What the training loop's step reads: items by index, and a hint of the next step's indices. */
export interface Dataset<T> {
  readonly size: number;
  get(idx: readonly number[]): Promise<T[]>;
  /** Start loading `idx` (the next step's items) while the current step computes. */
  prefetch(idx: readonly number[]): void;
}

/** The in-memory path (tests, small inputs): same interface, nothing to load. */
export function memoryDataset<T>(items: readonly T[]): Dataset<T> {
  return { size: items.length, get: (idx) => Promise.resolve(idx.map((i) => items[i])), prefetch: () => undefined };
}

export function asDataset<T>(items: readonly T[] | Dataset<T>): Dataset<T> {
  return Array.isArray(items) ? memoryDataset(items as readonly T[]) : (items as Dataset<T>);
}

/**
 * A dataset of `size` items loaded by `load` (item indices -> items, in that order), with
 * prefetch: the loop hints step b + 1 before step b reads its items (prefetched at b - 1), so two
 * prefetches are kept and an older one is dropped. The bound: three steps' items in memory.
 */
export function streamDataset<T>(size: number, load: (idx: readonly number[]) => Promise<T[]>): Dataset<T> {
  const ahead = new Map<string, Promise<T[]>>(); // insertion order: oldest first
  return {
    size,
    get(idx) {
      const key = idx.join(',');
      const items = ahead.get(key);
      if (!items) return load(idx);
      ahead.delete(key);
      return items;
    },
    prefetch(idx) {
      const key = idx.join(',');
      if (ahead.has(key)) return;
      const items = load(idx);
      items.catch(() => undefined); // the error surfaces from get(), if that step still comes
      ahead.set(key, items);
      while (ahead.size > 2) ahead.delete(ahead.keys().next().value!);
    },
  };
}

export interface RowReaderStats {
  /** Record batch bodies read from disk. */
  reads: number;
  /** Most bodies held at once (cache + the ones a call is decoding). */
  maxHeld: number;
  /** Rows read by their bytes alone (no body). */
  directRows: number;
}

/** Random access by row position to a tagseg Arrow table, holding at most `cacheBatches` record batch bodies. */
export class RowReader {
  private readonly cache = new Map<number, RecordBatch>(); // insertion order = LRU order
  private inUse = 0;
  readonly stats: RowReaderStats = { reads: 0, maxHeld: 0, directRows: 0 };

  private constructor(
    private readonly reader: TableReader, private readonly starts: number[], private readonly cacheBatches: number, private readonly direct: boolean,
  ) {}

  /** `direct: false` always reads whole bodies (tests, comparisons). */
  static async open(file: string, expect: { stage?: string } = {}, opts: { cacheBatches?: number; direct?: boolean } = {}): Promise<RowReader> {
    const reader = await TableReader.open(file, expect);
    const counts = await reader.batchRowCounts();
    const starts = [0];
    for (const n of counts) starts.push(starts[starts.length - 1] + n);
    return new RowReader(reader, starts, opts.cacheBatches ?? 2, opts.direct ?? true);
  }

  get numRows(): number { return this.starts[this.starts.length - 1]; }
  get file(): string { return this.reader.info.file; }

  /** Bodies held now (cache + in use). */
  get held(): number { return this.cache.size + this.inUse; }

  /** The rows at `positions` (any order, repeats allowed), decoded to plain JS copies. */
  async rows(positions: readonly number[]): Promise<Row[]> {
    const byBatch = new Map<number, number[]>();
    positions.forEach((pos, k) => {
      if (!Number.isInteger(pos) || pos < 0 || pos >= this.numRows) {
        throw new TagsegError(`row ${pos} is out of range (the table has ${this.numRows})`, { file: this.file });
      }
      const b = this.batchOf(pos);
      const ks = byBatch.get(b);
      if (ks) ks.push(k);
      else byBatch.set(b, [k]);
    });
    const out = new Array<Row>(positions.length);
    // one body at a time (plus the cache), so a step over many batches stays bounded too
    for (const [b, ks] of byBatch) {
      const direct = this.direct ? await this.reader.readRows(b, ks.map((k) => positions[k] - this.starts[b])) : null;
      if (direct) {
        ks.forEach((k, j) => { out[k] = direct[j]; });
        this.stats.directRows += ks.length;
        continue;
      }
      const batch = await this.acquire(b);
      try {
        for (const k of ks) out[k] = decodeRow(this.reader.info.columns, batch, positions[k] - this.starts[b]);
      } finally {
        this.release(b, batch);
      }
    }
    return out;
  }

  async close(): Promise<void> {
    this.cache.clear();
    await this.reader.close();
  }

  private batchOf(pos: number): number {
    let lo = 0;
    let hi = this.starts.length - 2;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid] <= pos) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  private async acquire(b: number): Promise<RecordBatch> {
    const hit = this.cache.get(b);
    this.cache.delete(b);
    this.inUse++;
    this.stats.maxHeld = Math.max(this.stats.maxHeld, this.held);
    try {
      if (hit) return hit;
      this.stats.reads++;
      return await this.reader.recordBatch(b);
    } catch (err) {
      this.inUse--;
      throw err;
    }
  }

  /** Back into the cache as most recent; the least recent bodies beyond the bound are dropped. */
  private release(b: number, batch: RecordBatch): void {
    this.inUse--;
    if (this.cacheBatches === 0) return;
    this.cache.set(b, batch);
    while (this.cache.size > this.cacheBatches) this.cache.delete(this.cache.keys().next().value!);
  }
}

/**
 * Items 0..positions.length-1 read from row-aligned tables (same row order, as the stages'
 * tables are): item i is `make` of the rows at `positions[i]` of each reader, in reader order.
 */
export function tableDataset<T>(readers: readonly RowReader[], positions: readonly number[], make: (rows: Row[], i: number) => T): Dataset<T> {
  return joinDataset(readers.map((reader) => ({ reader, positions })), (rows, i) => make(rows as Row[], i));
}

/** One table of a join: its reader and each item's row position in it (null: the item reads no row there). */
export interface JoinSource {
  reader: RowReader;
  positions: readonly (number | null)[];
}

/**
 * Items 0..size-1 read from tables whose row orders differ (pseudo_masks.arrow, possibly a folder
 * of parts, against images.arrow): item i is `make` of its row in each source (null where its
 * position is null), in source order. The caller joins by id once (positions); the items then
 * depend only on those rows, whatever each table's layout.
 */
export function joinDataset<T>(sources: readonly JoinSource[], make: (rows: (Row | null)[], i: number) => T | Promise<T>): Dataset<T> {
  const size = sources[0]?.positions.length ?? 0;
  if (sources.some((s) => s.positions.length !== size)) throw new RangeError('joinDataset: every source needs one position per item');
  return streamDataset(size, async (idx) => {
    const tables = await Promise.all(sources.map(async ({ reader, positions }) => {
      const ks = idx.flatMap((i, k) => (positions[i] === null ? [] : [k]));
      const rows = await reader.rows(ks.map((k) => positions[idx[k]]!));
      const out = new Array<Row | null>(idx.length).fill(null);
      ks.forEach((k, j) => { out[k] = rows[j]; });
      return out;
    }));
    return Promise.all(idx.map((i, k) => make(tables.map((rows) => rows[k]), i)));
  });
}
