import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { commitFor } from './commit.js';
import { removeTree } from './remove_tree.js';

/**
 * A sibling temp path for `target` (same directory, so rename is atomic on POSIX).
 * Named `.<base>.<random>.tmp` so a killed run leaves an obvious, ignorable file.
 */
export function tempPathFor(target: string): string {
  const dir = path.dirname(target);
  return path.join(dir, `.${path.basename(target)}.${randomBytes(4).toString('hex')}.tmp`);
}

export async function ensureDir(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
}

/** Write a whole file and fsync it (the file itself; callers rename it into place). */
export async function writeFileSynced(file: string, data: string | Uint8Array): Promise<void> {
  const fh = await fs.open(file, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Write a whole file atomically: temp file, fsync, rename. Readers see old or new, never half. */
export async function writeFileAtomic(target: string, data: string | Uint8Array): Promise<void> {
  await ensureDir(path.dirname(target));
  const tmp = tempPathFor(target);
  // Inside a running stage, an output is staged and renamed at the stage's commit (commit.ts).
  const txn = commitFor(target);
  if (txn) await txn.add(tmp, target, { dir: false, ready: false });
  try {
    await writeFileSynced(tmp, data);
  } catch (err) {
    await (txn ? txn.drop(tmp) : fs.rm(tmp, { force: true }));
    throw err;
  }
  if (txn) return txn.ready(tmp);
  try {
    await fs.rename(tmp, target);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
}

/**
 * Replace directory `target` by `staged` (a fully written sibling directory). A kill between the
 * two renames leaves the old directory as `<target>.old-<hex>` and no `target`: removeLeftovers,
 * run before the next write of `target`, puts it back, so the old or the new directory survives.
 */
export async function replaceDirAtomic(staged: string, target: string): Promise<void> {
  const txn = commitFor(target);
  if (txn) return txn.add(staged, target, { dir: true, ready: true });
  const old = `${target}.old-${randomBytes(4).toString('hex')}`;
  let moved = false;
  try {
    await fs.rename(target, old);
    moved = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await fs.rename(staged, target);
  if (moved) await removeTree(old);
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Remove what killed writes of `target` left next to it: temp files/folders (tempPathFor) and
 * old folders of replaceDirAtomic. When `target` itself is missing, the newest old folder is
 * renamed back first (a kill between replaceDirAtomic's renames). Never looks inside `target`.
 * Returns the names removed or restored.
 */
export async function removeLeftovers(target: string): Promise<string[]> {
  const dir = path.dirname(target);
  const base = escapeRe(path.basename(target));
  const tmp = new RegExp(`^\\.${base}\\.[0-9a-f]{8}\\.tmp$`);
  const old = new RegExp(`^${base}\\.old-[0-9a-f]{8}$`);
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (err) {
    // ENOTDIR: `target` is a table part whose folder is still the unsharded file (pipeline/shard.ts)
    if (['ENOENT', 'ENOTDIR'].includes((err as NodeJS.ErrnoException).code ?? '')) return [];
    throw err;
  }
  const done: string[] = [];
  const olds = names.filter((n) => old.test(n));
  if (olds.length && !(await exists(target))) {
    const stats = await Promise.all(olds.map(async (n) => ({ n, t: (await fs.stat(path.join(dir, n))).mtimeMs })));
    const newest = stats.sort((a, b) => b.t - a.t)[0]!.n;
    await fs.rename(path.join(dir, newest), target);
    done.push(`${newest} -> ${path.basename(target)}`);
  }
  for (const n of names) {
    if (!tmp.test(n) && !old.test(n)) continue;
    if (!(await exists(path.join(dir, n)))) continue; // the restored one
    await removeTree(path.join(dir, n));
    done.push(n);
  }
  return done;
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}

/** Streaming sha256 of a file (hex). */
export async function hashFile(file: string, algo = 'sha256'): Promise<string> {
  const { createHash } = await import('node:crypto');
  const h = createHash(algo);
  await new Promise<void>((resolve, reject) => {
    createReadStream(file)
      .on('data', (c) => h.update(c))
      .on('end', () => resolve())
      .on('error', reject);
  });
  return h.digest('hex');
}

/**
 * A text file written piece by piece through one reused 256 KiB buffer, then fsynced: for large
 * outputs built row by row inside a staging folder that is swapped in whole (so not atomic by
 * itself). Text is encoded straight into the buffer: joining pieces into big strings instead
 * made large-object garbage that raised the audit report's peak RSS by ~30 MiB at 20k images.
 */
export class BufferedTextFile {
  private readonly buf: Buffer;
  private used = 0;

  private constructor(private readonly fh: fs.FileHandle, size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  static async open(file: string, bufferBytes = 2 ** 18): Promise<BufferedTextFile> {
    await ensureDir(path.dirname(file));
    return new BufferedTextFile(await fs.open(file, 'w'), bufferBytes);
  }

  async write(text: string): Promise<void> {
    const bytes = Buffer.byteLength(text, 'utf8');
    if (this.used + bytes > this.buf.length) await this.flush();
    if (bytes > this.buf.length) {
      await this.fh.write(text, null, 'utf8');
      return;
    }
    this.used += this.buf.write(text, this.used, 'utf8');
  }

  private async flush(): Promise<void> {
    if (this.used === 0) return;
    const n = this.used;
    this.used = 0;
    for (let off = 0; off < n;) off += (await this.fh.write(this.buf, off, n - off)).bytesWritten;
  }

  /** Flush, fsync and close; on a failure the handle is closed and the error rethrown. */
  async close(): Promise<void> {
    try {
      await this.flush();
      await this.fh.sync();
    } finally {
      await this.fh.close();
    }
  }

  /** Close without flushing (after an error: the caller removes the file or its folder). */
  async abort(): Promise<void> {
    this.used = 0;
    await this.fh.close().catch(() => undefined);
  }
}
