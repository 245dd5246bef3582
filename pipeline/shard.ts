/**
 * Shards of a per-image pass. An image's shard is a pure function of its id (sha256 of the UTF-8
 * id, first 8 bytes big-endian, modulo N), so a shard's output depends only on its inputs and
 * the shard count: the same bytes whether the shards run in one process, in parallel processes
 * or on different machines. Python: `int.from_bytes(hashlib.sha256(id.encode()).digest()[:8], 'big') % n`.
 *
 * A sharded table is a folder of `part-<k>-of-<N>.arrow` files (pipeline/arrow.ts reads it as
 * one table); each shard commits its own part (temp file + rename).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { z } from 'zod';
import { TagsegError } from './errors.js';
import { key } from './params_spec.js';
import type { ShardedStage } from './stage.js';
import { removeTree } from './remove_tree.js';

export interface Shard {
  /** 0-based shard index, < n. */
  k: number;
  /** Shard count (1 = unsharded). */
  n: number;
}

export const MAX_SHARDS = 100_000;

/** The `<section>.shards` params key of a sharded stage writing `table` (a map key: never in a training hash). */
export function shardsKey(stage: string, table: string): z.ZodNumber {
  return key(z.number().int().min(1).max(MAX_SHARDS), 1, `shards of the per-image pass (1 = one ${table} file; N: a folder of N parts; tagseg run ${stage} --shard k/N runs one)`);
}

/** The shard of `id` among `n`. */
export function shardOf(id: string, n: number): number {
  if (n === 1) return 0;
  const digest = createHash('sha256').update(id, 'utf8').digest();
  return Number(digest.readBigUInt64BE(0) % BigInt(n));
}

/** Parses `k/N` (the --shard option): 0 <= k < N. */
export function parseShard(text: string, where = '--shard'): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  const k = m ? Number(m[1]) : NaN;
  const n = m ? Number(m[2]) : NaN;
  if (!(n >= 1 && n <= MAX_SHARDS && k >= 0 && k < n)) {
    throw new TagsegError(`${where} must be k/N with 0 <= k < N <= ${MAX_SHARDS}, got '${text}'`, { hint: 'e.g. --shard 0/4 runs the first of four shards' });
  }
  return { k, n };
}

/** The shards a run covers: the one given, or all of `n` in order (a run without --shard). */
export function shardsToRun(n: number, only: Shard | undefined, key: string): Shard[] {
  if (!only) return Array.from({ length: n }, (_, k) => ({ k, n }));
  if (only.n !== n) {
    throw new TagsegError(`--shard ${only.k}/${only.n} does not match ${key}: ${n}`, { hint: `pass --shard k/${n}, or --set ${key}=${only.n}` });
  }
  return [only];
}

/** `part-<k>-of-<N>`: a part's name without extension (table parts add `.arrow`). */
export function partName(s: Shard): string {
  return `part-${s.k}-of-${s.n}`;
}

/** A run that covers every image (no --shard, or shard 0/1): only it writes plots, which need every image. */
export function wholeRun(shard: Shard | undefined): boolean {
  return !shard || shard.n === 1;
}

/** The stage's metrics file, or `<metrics>/part-<k>-of-<N>.json` (without .json) for a run of one shard of several. */
export function shardMetricsFile(metrics: string, shard: Shard | undefined): string {
  return wholeRun(shard) ? metrics : `${metrics.replace(/\.json$/, '')}/${partName(shard!)}.json`;
}

/** `sharded` of a stage writing one table and one metrics file (the map stages): shard s writes its part and its metrics part. */
export function tableShards(param: string, table: string, metrics: string): ShardedStage {
  return { param, outputs: (s) => ({ writes: [partPath(table, s)], metrics: [shardMetricsFile(metrics, s)] }) };
}

const PART_FILE = /^part-(\d+)-of-(\d+)\.arrow$/;

/** Parses a part file name; null for any other name. */
export function parsePartFile(name: string): Shard | null {
  const m = PART_FILE.exec(name);
  return m ? { k: Number(m[1]), n: Number(m[2]) } : null;
}

/**
 * Where shard `s` of the table `table` (a project path like cache/pseudo_masks.arrow) goes: the
 * table itself when unsharded, else `<table>/part-<k>-of-<N>.arrow`.
 */
export function partPath(table: string, s: Shard): string {
  return s.n === 1 ? table : path.join(table, `${partName(s)}.arrow`);
}

/**
 * Makes `table` ready for shard files of count `n`: an unsharded run removes a part folder left by
 * a sharded one; a sharded run turns a single file into a folder and removes parts of another
 * count. Safe while other shards of the same count write (it never touches their files).
 */
export async function prepareTableFor(table: string, n: number): Promise<void> {
  const st = await fs.lstat(table).catch(() => null);
  if (n === 1) {
    if (st?.isDirectory()) await removeTree(table);
    return;
  }
  if (st && !st.isDirectory()) await unlinkRacing(table); // another shard may have made the folder meanwhile: keep it
  await fs.mkdir(table, { recursive: true });
  for (const name of await fs.readdir(table)) {
    const p = parsePartFile(name);
    if (p && p.n !== n) await unlinkRacing(path.join(table, name));
  }
}

/** Removes a file that other shards' processes may remove, or replace by a folder, at the same time. */
async function unlinkRacing(p: string): Promise<void> {
  await fs.unlink(p).catch((err: NodeJS.ErrnoException) => {
    if (!['ENOENT', 'EISDIR', 'EPERM'].includes(err.code ?? '')) throw err;
  });
}

/** Removes a file or folder of another layout that other shards' processes may be removing too. */
async function removeRacing(p: string): Promise<void> {
  await removeTree(p).catch((err: NodeJS.ErrnoException) => {
    if (!['ENOENT', 'ENOTEMPTY'].includes(err.code ?? '')) throw err;
  });
}

/**
 * Same for a folder of per-image files with `n` > 1 (`<dir>/part-<k>-of-<N>/<id>.png`; unsharded,
 * the whole folder is replaced): removes what an unsharded run or another count left there, never
 * the folders of this count's shards (nor their staging and `.old-` siblings).
 */
export async function prepareFolderFor(dir: string, n: number): Promise<void> {
  const own = new RegExp(`^part-\\d+-of-${n}(\\.old-[0-9a-f]+)?$`);
  for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
    if (!own.test(name) && !name.startsWith('.')) await removeRacing(path.join(dir, name));
  }
}

/** One shard's outputs (a table part, a folder of files ...), committed or dropped together. */
export interface PartOutput {
  commit(): Promise<void>;
  abort(): Promise<void>;
}

/**
 * The outputs of `shards`, one open at a time, for a pass whose rows come shard by shard (in
 * `shards` order): `for(k)` commits the previous shards' outputs (a shard without rows gets an
 * empty part) and opens shard k's; `finish()` commits the rest. So each shard's part is committed
 * on its own, as a run of just that shard would.
 */
export class SequentialParts<T extends PartOutput> {
  private i = -1;
  private current: T | undefined;

  constructor(private readonly shards: Shard[], private readonly open: (s: Shard) => Promise<T>) {}

  async for(k: number): Promise<T> {
    const j = this.shards.findIndex((s) => s.k === k);
    if (j < this.i || j < 0) throw new TagsegError(`a row of shard ${k} came after shard ${this.shards[this.i]?.k} or is not in this run`);
    while (this.i < j) await this.advance();
    return this.current!;
  }

  async finish(): Promise<void> {
    while (this.i < this.shards.length) await this.advance();
  }

  async abort(): Promise<void> {
    const c = this.current;
    this.current = undefined;
    await c?.abort();
  }

  private async advance(): Promise<void> {
    const c = this.current;
    this.current = undefined;
    await c?.commit();
    this.i++;
    if (this.i < this.shards.length) this.current = await this.open(this.shards[this.i]);
  }
}

/** The shard count of a table on disk: 1 for a file, N for a folder of part-<k>-of-<N>.arrow files (the reader checks the rest). */
export async function tableShardCount(table: string): Promise<number> {
  const st = await fs.stat(table).catch(() => null);
  if (!st?.isDirectory()) return 1;
  return (await fs.readdir(table)).map(parsePartFile).find((p) => p !== null)?.n ?? 1;
}

/**
 * Row positions in a table of `n` parts (rows by part, each part in the ids' order) of ids seen in
 * their order: `add(id)` for every id, then `position()` of any of them (n = 1: the running count).
 */
export class PartPositions {
  private readonly counts: number[];

  constructor(readonly n: number) {
    this.counts = new Array<number>(n).fill(0);
  }

  add(id: string): { k: number; i: number } {
    const k = shardOf(id, this.n);
    return { k, i: this.counts[k]++ };
  }

  position(at: { k: number; i: number }): number {
    return this.counts.slice(0, at.k).reduce((a, b) => a + b, at.i);
  }
}

/** The rows of each shard in turn (`rows()` is read once per shard, keeping that shard's ids in order). */
export async function* rowsByShard<T>(shards: Shard[], rows: () => AsyncIterable<T>, idOf: (row: T) => string): AsyncGenerator<T> {
  for (const s of shards) {
    for await (const row of rows()) if (s.n === 1 || shardOf(idOf(row), s.n) === s.k) yield row;
  }
}
