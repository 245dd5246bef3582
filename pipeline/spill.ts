/**
 * Rows kept on disk instead of in memory while a whole-dataset step needs them in another order
 * (the audit report: records arrive in dataset order, the image table goes out in rank order).
 * Each row is one JSON line in a temp file; memory holds its offset and length only, and a row
 * is read back by position. JSON keeps numbers exactly (shortest round-trip form), strings,
 * lists, booleans and null: Arrow rows of scalar and list columns; not typed arrays or NaN.
 */
import * as fs from 'node:fs/promises';
import type { Row } from './arrow.js';
import { BufferedTextFile } from './fsutil.js';
import { removeTree } from './remove_tree.js';

export class RowSpill {
  private readonly offsets: number[] = [];
  private readonly lengths: number[] = [];
  private end = 0;
  private reader: fs.FileHandle | null = null;

  private constructor(readonly file: string, private writer: BufferedTextFile | null) {}

  /** A new spill file at `file` (a temp path the caller removes with `remove`). */
  static async create(file: string): Promise<RowSpill> {
    return new RowSpill(file, await BufferedTextFile.open(file));
  }

  get length(): number {
    return this.offsets.length;
  }

  async append(row: Row): Promise<void> {
    if (!this.writer) throw new Error('RowSpill: append after reading started');
    const line = `${JSON.stringify(row)}\n`;
    const bytes = Buffer.byteLength(line);
    this.offsets.push(this.end);
    this.lengths.push(bytes);
    this.end += bytes;
    await this.writer.write(line);
  }

  /** Row k (append order); the first read ends appending. */
  async get(k: number): Promise<Row> {
    if (this.writer) {
      await this.writer.close();
      this.writer = null;
    }
    this.reader ??= await fs.open(this.file, 'r');
    const buf = Buffer.alloc(this.lengths[k]);
    const { bytesRead } = await this.reader.read(buf, 0, buf.length, this.offsets[k]);
    if (bytesRead !== buf.length) throw new Error(`RowSpill: row ${k} of ${this.file} is short (${bytesRead} of ${buf.length} bytes)`);
    return JSON.parse(buf.toString('utf8')) as Row;
  }

  /** Closes and deletes the file. */
  async remove(): Promise<void> {
    await this.writer?.abort();
    await this.reader?.close().catch(() => undefined);
    this.writer = null;
    this.reader = null;
    await removeTree(this.file);
  }
}
