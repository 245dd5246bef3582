/**
 * Typed Arrow tables: every stage's inputs and outputs. Files are Arrow IPC *file* format (random
 * access by batch, readable by pyarrow/DuckDB/polars), written batch by batch so a table never has
 * to fit in memory, and renamed into place only when complete.
 *
 * Values come back as plain JS: utf8 -> string, int32/float32/float64 -> number, bool -> boolean,
 * binary -> Uint8Array, list<int32> -> number[], list<float32> -> Float32Array (maps are large;
 * a number[] would cost 4x the memory), list<utf8> -> string[], null for nulls. Typed arrays are
 * copies, so holding one row does not pin the whole batch it came from.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import {
  AsyncByteQueue, Binary, Bool, Data, DataType, Field, Float32, Float64, Int32, List, Message,
  RecordBatch, RecordBatchFileWriter, RecordBatchReader, Schema, Struct, Utf8, Vector, makeData,
} from 'apache-arrow';
import type { AsyncRecordBatchFileReader } from 'apache-arrow';
import { type StageCommit, commitFor } from './commit.js';
import { TagsegError, fsError, messageOf } from './errors.js';
import { ensureDir, hashFile, tempPathFor } from './fsutil.js';
import { parsePartFile, partName, shardOf } from './shard.js';

export const SCHEMA_VERSION = 1; // bump when a table layout changes

export type ColumnType =
  | 'utf8' | 'int32' | 'float32' | 'float64' | 'bool' | 'binary' | 'list<int32>' | 'list<float32>' | 'list<utf8>';
/** e.g. shape '[height, width, 3]' naming other columns of the same row. */
export interface TensorDoc { dtype: 'uint8' | 'int32' | 'float16' | 'float32'; shape: string }
export interface ColumnSpec { name: string; type: ColumnType; nullable?: boolean; tensor?: TensorDoc; doc?: string }
export interface TableMeta { stage: string; paramsHash: string; classes: string[]; extra?: Record<string, unknown> }
export type Value = string | number | boolean | Uint8Array | Int32Array | Float32Array | number[] | string[] | null;
export type Row = Record<string, Value>;
export interface TableInfo {
  file: string; schemaVersion: number; tagsegVersion: string; meta: TableMeta;
  columns: ColumnSpec[]; numRows: number; numBatches: number;
}

const KEY = {
  version: 'tagseg.version',
  schemaVersion: 'tagseg.schema_version',
  stage: 'tagseg.stage',
  paramsHash: 'tagseg.params_hash',
  classes: 'tagseg.classes',
  columns: 'tagseg.columns',
  extra: 'tagseg.extra',
} as const;

let cachedVersion: string | undefined;
function tagsegVersion(): string {
  cachedVersion ??= (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  return cachedVersion;
}

// ---------------------------------------------------------------- types and schema

const ARROW_TYPE: Record<ColumnType, () => DataType> = {
  utf8: () => new Utf8(),
  int32: () => new Int32(),
  float32: () => new Float32(),
  float64: () => new Float64(),
  bool: () => new Bool(),
  binary: () => new Binary(),
  // Child field named "item", nullable: what pyarrow's pa.list_() makes, so types compare equal there.
  'list<int32>': () => new List(new Field('item', new Int32(), true)),
  'list<float32>': () => new List(new Field('item', new Float32(), true)),
  'list<utf8>': () => new List(new Field('item', new Utf8(), true)),
};

function buildSchema(file: string, columns: ColumnSpec[], meta: TableMeta): Schema {
  const seen = new Set<string>();
  const fields = columns.map((c) => {
    if (!(c.type in ARROW_TYPE)) throw new TagsegError(`column '${c.name}' has unknown type '${c.type}'`, { file });
    if (seen.has(c.name)) throw new TagsegError(`column '${c.name}' is declared twice`, { file });
    seen.add(c.name);
    // Field metadata too, so pyarrow/DuckDB users see a column's dtype and shape without our JSON.
    const fm = new Map<string, string>();
    if (c.tensor) {
      fm.set('tagseg.tensor.dtype', c.tensor.dtype);
      fm.set('tagseg.tensor.shape', c.tensor.shape);
    }
    if (c.doc) fm.set('tagseg.doc', c.doc);
    return new Field(c.name, ARROW_TYPE[c.type](), c.nullable ?? false, fm);
  });
  const md = new Map<string, string>([
    [KEY.version, tagsegVersion()],
    [KEY.schemaVersion, String(SCHEMA_VERSION)],
    [KEY.stage, meta.stage],
    [KEY.paramsHash, meta.paramsHash],
    [KEY.classes, JSON.stringify(meta.classes)],
    [KEY.columns, JSON.stringify(columns)],
    [KEY.extra, JSON.stringify(meta.extra ?? {})],
  ]);
  return new Schema(fields, md);
}

// ---------------------------------------------------------------- row validation

/** A row value after validation: typed arrays are private copies, so callers may reuse their buffers. */
type Cell = string | number | boolean | Uint8Array | Int32Array | Float32Array | string[] | null;

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;
const isInt32 = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x >= INT32_MIN && x <= INT32_MAX;

function describeValue(v: unknown): string {
  if (v === null || v === undefined) return String(v);
  if (Array.isArray(v)) return `array(${v.length})`;
  if (ArrayBuffer.isView(v)) return v.constructor.name;
  return `${typeof v} ${JSON.stringify(v)?.slice(0, 40)}`;
}

/** Returns the normalized cell, or undefined when `v` does not fit `type`. */
function normalize(type: ColumnType, v: unknown): Cell | undefined {
  switch (type) {
    case 'utf8': return typeof v === 'string' ? v : undefined;
    case 'int32': return isInt32(v) ? v : undefined;
    case 'float32':
    case 'float64': return typeof v === 'number' ? v : undefined;
    case 'bool': return typeof v === 'boolean' ? v : undefined;
    case 'binary': return v instanceof Uint8Array ? v.slice() : undefined;
    case 'list<int32>':
      if (v instanceof Int32Array) return v.slice();
      return Array.isArray(v) && v.every(isInt32) ? Int32Array.from(v) : undefined;
    case 'list<float32>':
      if (v instanceof Float32Array) return v.slice();
      return Array.isArray(v) && v.every((x) => typeof x === 'number') ? Float32Array.from(v) : undefined;
    case 'list<utf8>':
      return Array.isArray(v) && v.every((x) => typeof x === 'string') ? [...v] : undefined;
  }
}

function cellBytes(c: Cell): number {
  if (c === null) return 0;
  if (typeof c === 'string') return Buffer.byteLength(c) + 4;
  if (ArrayBuffer.isView(c)) return c.byteLength + 4;
  if (Array.isArray(c)) return c.reduce((n, s) => n + Buffer.byteLength(s) + 4, 4);
  return 8;
}

// ---------------------------------------------------------------- column encoding

function validity(cells: Cell[]): { nullCount: number; nullBitmap?: Uint8Array } {
  let nullCount = 0;
  const bitmap = new Uint8Array((cells.length + 7) >> 3);
  cells.forEach((c, i) => {
    if (c === null) nullCount++;
    else bitmap[i >> 3] |= 1 << (i & 7);
  });
  return nullCount > 0 ? { nullCount, nullBitmap: bitmap } : { nullCount };
}

/** Offsets + concatenated values of variable-length cells (nulls become empty slots). */
function concat<T extends Uint8Array | Int32Array | Float32Array>(
  parts: (T | null)[], make: (n: number) => T, file: string, column: string,
): { valueOffsets: Int32Array; data: T } {
  const valueOffsets = new Int32Array(parts.length + 1);
  let n = 0;
  parts.forEach((p, i) => {
    n += p?.length ?? 0;
    valueOffsets[i + 1] = n;
  });
  if (n > INT32_MAX) {
    throw new TagsegError(`column '${column}' holds ${n} values in one batch, more than Arrow's 32-bit offsets allow`, { file, hint: 'lower batchBytes' });
  }
  const data = make(n);
  parts.forEach((p, i) => p && data.set(p, valueOffsets[i]));
  return { valueOffsets, data };
}

const utf8 = new TextEncoder();

function utf8Data(type: DataType, strings: (string | null)[], file: string, column: string, nulls = validity(strings)): Data {
  const { valueOffsets, data } = concat(strings.map((s) => (s === null ? null : utf8.encode(s))), (n) => new Uint8Array(n), file, column);
  return makeData({ type: type as Utf8, length: strings.length, valueOffsets, data, ...nulls });
}

function columnData(spec: ColumnSpec, type: DataType, cells: Cell[], file: string): Data {
  const nulls = validity(cells);
  const length = cells.length;
  const name = spec.name;
  switch (spec.type) {
    case 'utf8': return utf8Data(type, cells as (string | null)[], file, name, nulls);
    case 'int32': return makeData({ type: type as Int32, length, data: Int32Array.from(cells, (c) => (c as number | null) ?? 0), ...nulls });
    case 'float32': return makeData({ type: type as Float32, length, data: Float32Array.from(cells, (c) => (c as number | null) ?? 0), ...nulls });
    case 'float64': return makeData({ type: type as Float64, length, data: Float64Array.from(cells, (c) => (c as number | null) ?? 0), ...nulls });
    case 'bool': {
      const bits = new Uint8Array((length + 7) >> 3);
      cells.forEach((c, i) => { if (c === true) bits[i >> 3] |= 1 << (i & 7); });
      return makeData({ type: type as Bool, length, data: bits, ...nulls });
    }
    case 'binary': {
      const { valueOffsets, data } = concat(cells as (Uint8Array | null)[], (n) => new Uint8Array(n), file, name);
      return makeData({ type: type as Binary, length, valueOffsets, data, ...nulls });
    }
    case 'list<int32>':
    case 'list<float32>': {
      const list = type as List;
      const make = spec.type === 'list<int32>' ? (n: number) => new Int32Array(n) : (n: number) => new Float32Array(n);
      const { valueOffsets, data } = concat(cells as (Int32Array | Float32Array | null)[], make, file, name);
      const child = spec.type === 'list<int32>'
        ? makeData({ type: list.valueType as Int32, length: data.length, data: data as Int32Array })
        : makeData({ type: list.valueType as Float32, length: data.length, data: data as Float32Array });
      return makeData({ type: list, length, valueOffsets, child, ...nulls });
    }
    case 'list<utf8>': {
      const list = type as List;
      const lists = cells as (string[] | null)[];
      const child = utf8Data(list.valueType, lists.flatMap((l) => l ?? []), file, name);
      const valueOffsets = new Int32Array(length + 1);
      lists.forEach((l, i) => { valueOffsets[i + 1] = valueOffsets[i] + (l?.length ?? 0); });
      return makeData({ type: list, length, valueOffsets, child, ...nulls });
    }
  }
}

// ---------------------------------------------------------------- writer

/**
 * arrow-js's writer pushes each IPC chunk into its sink synchronously. Its default sink (and pipe())
 * queues chunks until the event loop reaches I/O, so a caller whose awaits all resolve at once would
 * hold the whole table in memory. Taking the chunks here lets write() put each batch on disk before
 * it accepts more rows.
 */
class ChunkSink extends AsyncByteQueue {
  private chunks: Uint8Array[] = [];
  private pending = 0;
  override write(value: Uint8Array): void {
    if (value.byteLength === 0) return;
    this.chunks.push(value);
    this.pending += value.byteLength;
  }
  get pendingBytes(): number { return this.pending; }
  take(): Uint8Array[] {
    const out = this.chunks;
    this.chunks = [];
    this.pending = 0;
    return out;
  }
}

export interface WriterStats {
  batches: number;
  /** Most bytes held at once: buffered rows, or one encoded batch not yet on disk. */
  peakBufferedBytes: number;
}

export class TableWriter {
  private rowsBuffered: Cell[][] = [];
  private bufferedBytes = 0;
  private rowCount = 0;
  private written = 0;
  private io: Promise<void> = Promise.resolve();
  private state: 'open' | 'closed' | 'failed' = 'open';
  private readonly types: DataType[];
  private readonly names: Set<string>;
  readonly stats: WriterStats = { batches: 0, peakBufferedBytes: 0 };

  private constructor(
    private readonly file: string,
    private readonly tmp: string,
    private readonly fh: FileHandle,
    private readonly columns: ColumnSpec[],
    private readonly schema: Schema,
    private readonly writer: RecordBatchFileWriter,
    private readonly sink: ChunkSink,
    private readonly batchRows: number,
    private readonly batchBytes: number,
    private readonly txn: StageCommit | undefined,
  ) {
    this.types = schema.fields.map((f) => f.type);
    this.names = new Set(columns.map((c) => c.name));
  }

  /** Opens a temp file beside `file`; nothing appears at `file` until close(). */
  static async open(
    file: string, columns: ColumnSpec[], meta: TableMeta, opts: { batchRows?: number; batchBytes?: number } = {},
  ): Promise<TableWriter> {
    const schema = buildSchema(file, columns, meta);
    const batchRows = opts.batchRows ?? 64;
    const batchBytes = opts.batchBytes ?? 64 * 2 ** 20;
    if (!(batchRows >= 1 && batchBytes >= 1)) throw new TagsegError(`batchRows and batchBytes must be >= 1`, { file });
    await ensureDir(path.dirname(file));
    const tmp = tempPathFor(file);
    // Inside a running stage the finished file is committed with the stage's other outputs (commit.ts).
    const txn = commitFor(file);
    if (txn) await txn.add(tmp, file, { dir: false, ready: false });
    const fh = await fs.open(tmp, 'w').catch(async (err: unknown) => {
      await txn?.drop(tmp);
      throw fsError(err, 'cannot create the table', file);
    });
    const sink = new ChunkSink();
    // One Schema object for the whole file: arrow-js closes the writer on a batch whose schema differs.
    // Writing it now (not with the first batch) also makes a table with zero rows a valid file.
    const writer = new RecordBatchFileWriter().reset(sink, schema);
    const w = new TableWriter(file, tmp, fh, columns, schema, writer, sink, batchRows, batchBytes, txn);
    await w.drain(); // aborts (removing the temp file) if it fails
    return w;
  }

  /** Buffers the row; flushes a record batch when batchRows or batchBytes is reached. */
  async write(row: Row): Promise<void> {
    this.ensureOpen();
    const cells = this.validate(row);
    const size = cells.reduce<number>((n, c) => n + cellBytes(c), 0);
    if (this.rowsBuffered.length > 0 && this.bufferedBytes + size > this.batchBytes) await this.flush();
    this.rowsBuffered.push(cells);
    this.bufferedBytes += size;
    this.rowCount++;
    this.stats.peakBufferedBytes = Math.max(this.stats.peakBufferedBytes, this.bufferedBytes);
    if (this.rowsBuffered.length >= this.batchRows || this.bufferedBytes >= this.batchBytes) await this.flush();
  }

  /** Flushes, finishes the IPC file, fsyncs, renames into place atomically. */
  async close(): Promise<{ rows: number; bytes: number }> {
    this.ensureOpen();
    try {
      await this.flush();
      this.writer.close(); // writes the footer into the sink
      await this.drain();
      await this.fh.sync();
      await this.fh.close();
      if (this.txn) this.txn.ready(this.tmp);
      else await fs.rename(this.tmp, this.file);
      this.state = 'closed';
    } catch (err) {
      await this.abort();
      throw err instanceof TagsegError ? err : fsError(err, 'could not write table', this.file);
    }
    return { rows: this.rowCount, bytes: this.written };
  }

  /** Deletes the temp file; the previous `file` (if any) stays intact. */
  async abort(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'failed';
    await this.fh.close().catch(() => undefined);
    await (this.txn ? this.txn.drop(this.tmp) : fs.rm(this.tmp, { force: true }));
  }

  private ensureOpen(): void {
    if (this.state !== 'open') throw new TagsegError(`table writer is already ${this.state === 'closed' ? 'closed' : 'aborted'}`, { file: this.file });
  }

  private validate(row: Row): Cell[] {
    const row1 = this.rowCount + 1;
    for (const key of Object.keys(row)) {
      if (!this.names.has(key)) {
        throw new TagsegError(`row ${row1} has column '${key}', which the table does not declare`, { file: this.file });
      }
    }
    return this.columns.map((c) => {
      const v = row[c.name];
      if (v === null || v === undefined) {
        if (c.nullable) return null;
        throw new TagsegError(`column '${c.name}' is not nullable but row ${row1} has no value`, { file: this.file });
      }
      const cell = normalize(c.type, v);
      if (cell === undefined) throw new TagsegError(`column '${c.name}' (${c.type}) got ${describeValue(v)} in row ${row1}`, { file: this.file });
      return cell;
    });
  }

  private async flush(): Promise<void> {
    if (this.rowsBuffered.length === 0) return;
    const rows = this.rowsBuffered;
    this.rowsBuffered = [];
    this.bufferedBytes = 0;
    const children = this.columns.map((c, j) => columnData(c, this.types[j], rows.map((r) => r[j]), this.file));
    const data = makeData({ type: new Struct(this.schema.fields), length: rows.length, nullCount: 0, children });
    this.writer.write(new RecordBatch(this.schema, data));
    this.stats.batches++;
    this.stats.peakBufferedBytes = Math.max(this.stats.peakBufferedBytes, this.sink.pendingBytes);
    await this.drain();
  }

  /**
   * Writes the sink's chunks. Chained, so that callers who do not await each write() still get
   * batches on disk in order (concurrent writes on one file handle may land in any order).
   */
  private drain(): Promise<void> {
    const chunks = this.sink.take();
    if (chunks.length > 0) this.io = this.io.then(() => this.writeChunks(chunks));
    return this.io;
  }

  private async writeChunks(chunks: Uint8Array[]): Promise<void> {
    const want = chunks.reduce((n, c) => n + c.byteLength, 0);
    try {
      const { bytesWritten } = await this.fh.writev(chunks);
      if (bytesWritten !== want) throw new Error(`short write (${bytesWritten} of ${want} bytes)`);
    } catch (err) {
      await this.abort();
      throw fsError(err, 'could not write table', this.file);
    }
    this.written += want;
  }
}

// ---------------------------------------------------------------- reader

function rerun(stage: string | undefined): string {
  return stage ? `rerun \`tagseg run ${stage}\`` : 'delete it and rerun the stage that writes it';
}

function parseJson<T>(file: string, key: string, raw: string | undefined, stage: string | undefined): T {
  try {
    if (raw === undefined) throw new Error('missing');
    return JSON.parse(raw) as T;
  } catch (err) {
    throw new TagsegError(`schema metadata '${key}' is unreadable (${messageOf(err)}): ${rerun(stage)}`, { file });
  }
}

/** Reads each batch's message header (a few hundred bytes) to count its rows without loading bodies. */
async function batchRowCounts(fh: FileHandle, reader: AsyncRecordBatchFileReader): Promise<number[]> {
  const counts: number[] = [];
  for (let i = 0; i < reader.numRecordBatches; i++) {
    const block = reader.footer!.getRecordBatch(i)!;
    const buf = new Uint8Array(block.metaDataLength);
    await fh.read(buf, 0, buf.byteLength, Number(block.offset));
    const prefix = new DataView(buf.buffer).getInt32(0, true) === -1 ? 8 : 4; // continuation marker since Arrow 0.15
    const msg = Message.decode(buf.subarray(prefix));
    counts.push(msg.isRecordBatch() ? msg.header().length : 0);
  }
  return counts;
}

function decodeCell(type: ColumnType, vec: Vector, i: number): Value {
  const v: unknown = vec.get(i);
  if (v === null || v === undefined) return null;
  switch (type) {
    case 'binary': return (v as Uint8Array).slice();
    case 'list<int32>': return Array.from((v as Vector<Int32>).toArray());
    case 'list<float32>': return Float32Array.from((v as Vector<Float32>).toArray());
    case 'list<utf8>': return Array.from(v as Vector<Utf8>, (s) => s ?? '');
    default: return v as Value;
  }
}

// ---------------------------------------------------------------- reading single rows

interface ColumnLayout { spec: ColumnSpec; nullCount: number; buffers: { offset: number; length: number }[] }
interface BatchLayout { body: number; length: number; columns: ColumnLayout[] }

/** Buffers per column in IPC order: validity + data, + offsets for variable width, + the child's for lists. */
const BUFFERS: Record<ColumnType, number> = {
  utf8: 3, binary: 3, int32: 2, float32: 2, float64: 2, bool: 2, 'list<int32>': 4, 'list<float32>': 4, 'list<utf8>': 5,
};

/** Where each column's buffers of batch `i` lie in the file (from its message header), or null if unsupported. */
async function batchLayout(fh: FileHandle, reader: AsyncRecordBatchFileReader, i: number, columns: readonly ColumnSpec[]): Promise<BatchLayout | null> {
  const fields = reader.schema.fields;
  if (fields.length !== columns.length || fields.some((f, j) => f.name !== columns[j].name)) return null;
  const block = reader.footer!.getRecordBatch(i)!;
  const buf = new Uint8Array(block.metaDataLength);
  await fh.read(buf, 0, buf.byteLength, Number(block.offset));
  const prefix = new DataView(buf.buffer).getInt32(0, true) === -1 ? 8 : 4;
  const msg = Message.decode(buf.subarray(prefix));
  if (!msg.isRecordBatch()) return null;
  const h = msg.header();
  if (h.compression) return null;
  let b = 0;
  let n = 0;
  const out: ColumnLayout[] = columns.map((spec) => {
    const count = BUFFERS[spec.type];
    const c = { spec, nullCount: Number(h.nodes[n].nullCount), buffers: h.buffers.slice(b, b + count).map((x) => ({ offset: Number(x.offset), length: Number(x.length) })) };
    b += count;
    n += spec.type.startsWith('list<') ? 2 : 1;
    return c;
  });
  if (b !== h.buffers.length) return null;
  return { body: Number(block.offset) + block.metaDataLength, length: Number(h.length), columns: out };
}

function readAt(fd: number, pos: number, out: Uint8Array, file: string): Uint8Array {
  let done = 0;
  while (done < out.byteLength) {
    const got = readSync(fd, out, done, out.byteLength - done, pos + done);
    if (got === 0) throw new TagsegError(`is truncated (a read at byte ${pos} ran past its end): ${rerun(undefined)}`, { file });
    done += got;
  }
  return out;
}

/** Cell `r` of one column, as decodeCell gives it; page-cache reads, so synchronous. */
function readCell(fd: number, body: number, c: ColumnLayout, r: number, file: string): Value {
  const at = (k: number, byte: number, n: number) => readAt(fd, body + c.buffers[k].offset + byte, new Uint8Array(n), file);
  const view = (u: Uint8Array) => new DataView(u.buffer, u.byteOffset, u.byteLength);
  const bit = (k: number, j: number) => (at(k, j >> 3, 1)[0] >> (j & 7)) & 1;
  if (c.nullCount > 0 && c.buffers[0].length > 0 && !bit(0, r)) return null;
  const span = (k: number, j: number) => {
    const o = view(at(k, 4 * j, 8));
    return [o.getInt32(0, true), o.getInt32(4, true)] as const;
  };
  switch (c.spec.type) {
    case 'int32': return view(at(1, 4 * r, 4)).getInt32(0, true);
    case 'float32': return view(at(1, 4 * r, 4)).getFloat32(0, true);
    case 'float64': return view(at(1, 8 * r, 8)).getFloat64(0, true);
    case 'bool': return bit(1, r) === 1;
    case 'utf8':
    case 'binary': {
      const [a, z] = span(1, r);
      const bytes = z > a ? at(2, a, z - a) : new Uint8Array(0);
      return c.spec.type === 'utf8' ? new TextDecoder().decode(bytes) : bytes;
    }
    case 'list<int32>':
    case 'list<float32>': {
      const [a, z] = span(1, r);
      const bytes = z > a ? at(3, 4 * a, 4 * (z - a)) : new Uint8Array(0);
      return c.spec.type === 'list<int32>' ? Array.from(new Int32Array(bytes.buffer)) : new Float32Array(bytes.buffer);
    }
    case 'list<utf8>': {
      const [a, z] = span(1, r);
      const out: string[] = [];
      for (let j = a; j < z; j++) {
        const [s0, s1] = span(3, j);
        out.push(s1 > s0 ? new TextDecoder().decode(at(4, s0, s1 - s0)) : '');
      }
      return out;
    }
  }
}

/** Row `r` of a record batch as plain JS (see the header for the value types). */
export function decodeRow(columns: readonly ColumnSpec[], batch: RecordBatch, r: number): Row {
  const row: Row = {};
  for (const c of columns) row[c.name] = decodeCell(c.type, batch.getChild(c.name)!, r);
  return row;
}

interface Part { info: TableInfo; reader: AsyncRecordBatchFileReader; fh: FileHandle; firstBatch: number }

/**
 * Reads a table: one Arrow IPC file, or a folder of `part-<k>-of-<N>.arrow` files (pipeline/shard.ts)
 * that together are the table, read as one: rows in part order (k = 0..N-1), then row order.
 */
export class TableReader {
  /** Serializes batch reads of each part: arrow-js seeks a shared file position for each one. */
  private locks: Promise<unknown>[];

  private constructor(
    readonly info: TableInfo,
    private readonly parts: Part[],
  ) {
    this.locks = parts.map(() => Promise.resolve());
  }

  /**
   * Opens a table for random access by batch. Throws TagsegError (naming the file and what to
   * rerun) for a missing file, a file that is not a tagseg table, a schema-version or stage
   * mismatch, and for a part folder with a missing part or parts that disagree.
   */
  static async open(file: string, expect: { stage?: string } = {}): Promise<TableReader> {
    const st = await fs.stat(file).catch(() => null);
    if (!st?.isDirectory()) {
      const part = await openPart(file, expect, 0);
      return new TableReader(part.info, [part]);
    }
    const parts: Part[] = [];
    try {
      let firstBatch = 0;
      for (const f of await partFiles(file, expect.stage)) {
        const part = await openPart(path.join(file, f), expect, firstBatch);
        parts.push(part);
        firstBatch += part.info.numBatches;
      }
      return new TableReader(mergeInfo(file, parts), parts);
    } catch (err) {
      for (const p of parts) await p.fh.close().catch(() => undefined);
      throw err;
    }
  }

  /** Number of parts (1 for a single file). */
  get numParts(): number {
    return this.parts.length;
  }

  async *rows(): AsyncGenerator<Row> {
    for (let i = 0; i < this.info.numBatches; i++) yield* this.batchRows(i);
  }

  /** Batch i's rows, each decoded when asked for: a streaming reader holds one decoded row, not the batch's. */
  private async *batchRows(i: number): AsyncGenerator<Row> {
    const batch = await this.recordBatch(i);
    for (let r = 0; r < batch.numRows; r++) yield decodeRow(this.info.columns, batch, r);
  }

  /**
   * The rows of `ids`, in that order (a table written in the same order, e.g. cams.arrow's): a
   * part folder gives each id's row from its shard's part (shardOf), so readers that walk tables
   * in lockstep read a sharded table as if it were one file. Throws where a row's id differs.
   */
  async *rowsAlong(ids: AsyncIterable<string> | Iterable<string>): AsyncGenerator<Row> {
    const n = this.parts.length;
    const its = this.parts.map((_, k) => this.partRows(k)[Symbol.asyncIterator]());
    try {
      for await (const id of ids) {
        const k = n === 1 ? 0 : shardOf(id, n);
        const next = await its[k].next();
        if (next.done || next.value.id !== id) {
          throw new TagsegError(`has '${next.done ? 'end of table' : String(next.value.id)}' where '${id}' was expected`, {
            file: this.parts[k].info.file, hint: `the tables come from different runs: ${rerun(this.info.meta.stage)}`,
          });
        }
        yield next.value;
      }
    } finally {
      for (const it of its) await it.return?.(undefined);
    }
  }

  private async *partRows(k: number): AsyncGenerator<Row> {
    const p = this.parts[k];
    for (let i = 0; i < p.info.numBatches; i++) yield* this.batchRows(p.firstBatch + i);
  }

  async batch(i: number): Promise<Row[]> {
    const batch = await this.recordBatch(i);
    return Array.from({ length: batch.numRows }, (_, r) => decodeRow(this.info.columns, batch, r));
  }

  /** The part holding batch `i` (checked) and the batch's index in it. */
  private partOf(i: number): { k: number; part: Part; j: number } {
    const { file, numBatches } = this.info;
    if (!Number.isInteger(i) || i < 0 || i >= numBatches) {
      throw new TagsegError(`batch ${i} is out of range (the table has ${numBatches})`, { file });
    }
    const k = this.parts.findLastIndex((p) => p.firstBatch <= i);
    return { k, part: this.parts[k], j: i - this.parts[k].firstBatch };
  }

  /** Batch `i` as Arrow data (views of one read of its body): decode only the rows you need with decodeRow. */
  async recordBatch(i: number): Promise<RecordBatch> {
    const { k, part, j } = this.partOf(i);
    const read = this.locks[k].then(() => part.reader.readRecordBatch(j));
    this.locks[k] = read.catch(() => undefined);
    const batch = await read.catch((err: unknown) => {
      throw new TagsegError(`cannot read batch ${j} (${messageOf(err)}): ${rerun(this.info.meta.stage)}`, { file: part.info.file, cause: err });
    });
    if (!batch) throw new TagsegError(`batch ${j} is missing or damaged: ${rerun(this.info.meta.stage)}`, { file: part.info.file });
    return batch;
  }

  /**
   * Rows `rows` of batch `i`, reading only their bytes (a few small reads per cell) instead of the
   * batch's whole body; null when the batch cannot be read that way (compressed body, or columns
   * the tagseg metadata does not declare): use recordBatch then. `columns` limits the rows to those
   * columns (a pass over ids and sizes reads no pixels).
   */
  async readRows(i: number, rows: readonly number[], columns?: readonly string[]): Promise<Row[] | null> {
    const { part } = this.partOf(i);
    const layout = await this.layoutOf(i);
    if (!layout) return null;
    return rows.map((r) => {
      if (!Number.isInteger(r) || r < 0 || r >= layout.length) {
        throw new TagsegError(`row ${r} of batch ${i} is out of range (it has ${layout.length})`, { file: part.info.file });
      }
      const row: Row = {};
      for (const c of layout.columns) if (!columns || columns.includes(c.spec.name)) row[c.spec.name] = readCell(part.fh.fd, layout.body, c, r, part.info.file);
      return row;
    });
  }

  private readonly layouts = new Map<number, BatchLayout | null>();

  private async layoutOf(i: number): Promise<BatchLayout | null> {
    if (this.layouts.has(i)) return this.layouts.get(i)!;
    const { k, part, j } = this.partOf(i);
    const read = this.locks[k].then(() => batchLayout(part.fh, part.reader, j, this.info.columns));
    this.locks[k] = read.catch(() => undefined);
    const layout = await read;
    this.layouts.set(i, layout);
    return layout;
  }

  /** Rows of each batch (all parts, in batch order), from the batches' message headers (no body is read). */
  async batchRowCounts(): Promise<number[]> {
    const counts: number[] = [];
    for (const [k, p] of this.parts.entries()) {
      const read = this.locks[k].then(() => batchRowCounts(p.fh, p.reader));
      this.locks[k] = read.catch(() => undefined);
      counts.push(...await read);
    }
    return counts;
  }

  async close(): Promise<void> {
    await Promise.all(this.locks);
    for (const p of this.parts) await p.fh.close().catch(() => undefined);
  }
}

async function openPart(file: string, expect: { stage?: string }, firstBatch: number): Promise<Part> {
  let fh: FileHandle;
  try {
    fh = await fs.open(file, 'r');
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new TagsegError(missing ? 'table not found' : `cannot open table: ${messageOf(err)}`, {
      file, hint: missing && expect.stage ? rerun(expect.stage) : undefined, cause: err,
    });
  }
  try {
    const reader = await RecordBatchReader.from(fh).catch(() => null);
    if (!reader?.isFile()) throw new TagsegError(`is not an Arrow IPC file: ${rerun(expect.stage)}`, { file });
    await reader.open({ autoDestroy: false }).catch((err: unknown) => {
      throw new TagsegError(`is a damaged Arrow IPC file (${messageOf(err)}): ${rerun(expect.stage)}`, { file, cause: err });
    });
    const info = await readTableInfo(file, fh, reader as AsyncRecordBatchFileReader, expect);
    return { info, reader: reader as AsyncRecordBatchFileReader, fh, firstBatch };
  } catch (err) {
    await fh.close().catch(() => undefined);
    throw err;
  }
}

/** The part files of a table folder, by k; every part of one count N present, nothing else. */
async function partFiles(dir: string, stage: string | undefined): Promise<string[]> {
  const names = (await fs.readdir(dir)).filter((f) => !f.startsWith('.')); // .<name>.tmp: a part being written
  const parts = names.map((f) => ({ f, s: parsePartFile(f) }));
  const stray = parts.find((p) => !p.s);
  if (stray) throw new TagsegError(`'${stray.f}' is not a table part (part-<k>-of-<N>.arrow)`, { file: dir, hint: 'a table folder holds only its parts: remove it' });
  if (parts.length === 0) throw new TagsegError('is a table folder without parts', { file: dir, hint: rerun(stage) });
  const n = parts[0].s!.n;
  const other = parts.find((p) => p.s!.n !== n);
  if (other) throw new TagsegError(`holds parts of ${n} and of ${other.s!.n} shards ('${other.f}')`, { file: dir, hint: `delete the folder and ${rerun(stage)}` });
  const have = new Set(parts.map((p) => p.s!.k));
  for (let k = 0; k < n; k++) {
    if (!have.has(k)) {
      throw new TagsegError(`part '${partName({ k, n })}.arrow' is missing`, {
        file: dir, hint: stage ? `run \`tagseg run ${stage} --shard ${k}/${n}\`` : `run shard ${k}/${n} of the stage that writes it`,
      });
    }
  }
  return Array.from({ length: n }, (_, k) => `${partName({ k, n })}.arrow`);
}

/** One TableInfo for a part folder; the parts must agree on schema and metadata (one run's params). */
function mergeInfo(dir: string, parts: Part[]): TableInfo {
  const first = parts[0].info;
  const signature = (i: TableInfo) => JSON.stringify([i.schemaVersion, i.columns, i.meta]);
  for (const p of parts.slice(1)) {
    if (signature(p.info) !== signature(first)) {
      throw new TagsegError(`part '${path.basename(p.info.file)}' has other columns or metadata (stage, params, classes) than '${path.basename(first.file)}'`, {
        file: dir, hint: `the parts come from different runs: ${rerun(first.meta.stage)} (every shard)`,
      });
    }
  }
  return {
    ...first,
    file: dir,
    numRows: parts.reduce((a, p) => a + p.info.numRows, 0),
    numBatches: parts.reduce((a, p) => a + p.info.numBatches, 0),
  };
}

async function readTableInfo(
  file: string, fh: FileHandle, reader: AsyncRecordBatchFileReader, expect: { stage?: string },
): Promise<TableInfo> {
  const md = reader.schema.metadata;
  const stage = md.get(KEY.stage);
  const rawVersion = md.get(KEY.schemaVersion);
  if (rawVersion === undefined) {
    throw new TagsegError(`is an Arrow file but not a tagseg table (no '${KEY.schemaVersion}' metadata): ${rerun(stage ?? expect.stage)}`, { file });
  }
  const schemaVersion = Number(rawVersion);
  if (schemaVersion !== SCHEMA_VERSION) {
    throw new TagsegError(`was written with table schema ${rawVersion}, this tagseg reads ${SCHEMA_VERSION}: ${rerun(stage ?? expect.stage)}`, { file });
  }
  if (stage === undefined) throw new TagsegError(`has no '${KEY.stage}' metadata: ${rerun(expect.stage)}`, { file });
  if (expect.stage !== undefined && stage !== expect.stage) {
    throw new TagsegError(`holds output of stage '${stage}', expected stage '${expect.stage}'`, { file });
  }
  const columns = parseJson<ColumnSpec[]>(file, KEY.columns, md.get(KEY.columns), stage);
  for (const c of columns) {
    const field = reader.schema.fields.find((f) => f.name === c.name);
    const want = c.type in ARROW_TYPE ? String(ARROW_TYPE[c.type]()) : `(unknown type '${c.type}')`;
    if (!field) throw new TagsegError(`column '${c.name}' is declared in '${KEY.columns}' but missing: ${rerun(stage)}`, { file });
    if (String(field.type) !== want) {
      throw new TagsegError(`column '${c.name}' is ${field.type} in the file, tagseg expects ${want}: ${rerun(stage)}`, { file });
    }
  }
  const meta: TableMeta = {
    stage,
    paramsHash: md.get(KEY.paramsHash) ?? '',
    classes: parseJson<string[]>(file, KEY.classes, md.get(KEY.classes), stage),
    extra: parseJson<Record<string, unknown>>(file, KEY.extra, md.get(KEY.extra) ?? '{}', stage),
  };
  return {
    file,
    schemaVersion,
    tagsegVersion: md.get(KEY.version) ?? 'unknown',
    meta,
    columns,
    numRows: (await batchRowCounts(fh, reader)).reduce((a, b) => a + b, 0),
    numBatches: reader.numRecordBatches,
  };
}

export async function readInfo(file: string): Promise<TableInfo> {
  const r = await TableReader.open(file);
  await r.close();
  return r.info;
}

/** Convenience for small tables: every row in memory. */
export async function readAll(file: string, expect?: { stage?: string }): Promise<Row[]> {
  const r = await TableReader.open(file, expect);
  try {
    const out: Row[] = [];
    for await (const row of r.rows()) out.push(row);
    return out;
  } finally {
    await r.close();
  }
}

/**
 * sha256 of a table's content, not of its files: the columns, classes and `extra` metadata, then
 * every row's cells in id order. One file and the same rows in N parts (any order within them)
 * hash the same; the params hash in the metadata is left out (it holds `<x>.shards`), and so is
 * the tagseg version. Streams the rows, keeping only each row's id and digest. A single file that
 * is not a table (no reader could take it) is keyed by its bytes.
 */
export async function hashTable(file: string): Promise<string> {
  let r: TableReader;
  try {
    r = await TableReader.open(file);
  } catch (err) {
    if ((await fs.stat(file).catch(() => null))?.isFile()) return `file:${await hashFile(file)}`;
    throw err;
  }
  const digests: { id: string; digest: string }[] = [];
  try {
    const { columns, meta } = r.info;
    if (!columns.some((c) => c.name === 'id' && c.type === 'utf8')) throw new TagsegError("has no utf8 'id' column to order its rows by", { file });
    for await (const row of r.rows()) {
      const h = createHash('sha256');
      for (const c of columns) hashCell(h, c.type, row[c.name]);
      digests.push({ id: row.id as string, digest: h.digest('hex') });
    }
    const h = createHash('sha256').update(JSON.stringify([r.info.schemaVersion, meta.stage, meta.classes, meta.extra ?? {}, columns]));
    digests.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
    for (const d of digests) h.update(`\n${JSON.stringify(d.id)}:${d.digest}`);
    return h.digest('hex');
  } finally {
    await r.close();
  }
}

/** A cell's bytes for hashTable: a null mark, or the value with its length, by the column's type. */
function hashCell(h: ReturnType<typeof createHash>, type: ColumnType, v: Value): void {
  if (v === null) {
    h.update('N');
    return;
  }
  const sized = (b: Uint8Array) => {
    h.update(`V${b.byteLength}:`);
    h.update(b);
  };
  const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  switch (type) {
    case 'utf8': return sized(Buffer.from(v as string, 'utf8'));
    case 'int32':
    case 'float32':
    case 'float64': return sized(bytes(Float64Array.of(v as number)));
    case 'bool': return sized(Uint8Array.of(v ? 1 : 0));
    case 'binary': return sized(v as Uint8Array);
    case 'list<int32>': return sized(bytes(Int32Array.from(v as ArrayLike<number>)));
    case 'list<float32>': return sized(bytes(v as Float32Array));
    case 'list<utf8>': return sized(Buffer.from(JSON.stringify(v)));
  }
}

/** The `id` column of a table, streamed (e.g. the order another table's rows should follow). */
export async function* tableIds(file: string): AsyncGenerator<string> {
  const r = await TableReader.open(file);
  try {
    for await (const row of r.rows()) yield row.id as string;
  } finally {
    await r.close();
  }
}
