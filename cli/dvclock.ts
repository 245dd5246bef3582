/**
 * dvc.lock, written and read as DVC 3 does, so that `tagseg repro` and `dvc repro` share one
 * record of what ran (schema '2.0', see ../shared/dvc-fixtures/README.md):
 *   - a file: `md5` = MD5 of its bytes (no line-ending conversion), `size`, `isexec: true` when
 *     executable;
 *   - a directory: `md5` = `<hex>.dir`, the MD5 of its listing `[{"md5", "relpath"}]` sorted by
 *     relpath and serialised as Python's `json.dumps(..., sort_keys=True)`; `size` = total bytes,
 *     `nfiles`. Every file counts, dot-files too; `.git`, `.hg` and `.dvc` folders do not (DVC's
 *     default ignores), nor what the project's .dvcignore files exclude (cli/dvcignore.ts);
 *   - per stage: `cmd`, `deps` and `outs` (outs, metrics and plots together) sorted by path,
 *     `params` = {params.yaml: {key: value}} with the listed keys sorted (a section nested, a
 *     dotted key under its dotted name), empty fields left out.
 * File hashes are cached in `.tagseg/hash-cache.json` while (size, mtime, inode) match, so
 * unchanged big files are not read again.
 */
import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { DVCIGNORE, DvcIgnore, refuseNestedDvcignore } from './dvcignore.js';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import { hashFile, writeFileAtomic } from '../pipeline/fsutil.js';
import { type PyMap, type PyValue, dumpPy, parsePy } from './pyyaml.js';

export const DVC_LOCK = 'dvc.lock';
const HASH_CACHE = '.tagseg/hash-cache.json';
const HASH_CACHE_VERSION = 1;
const IGNORED_DIRS = new Set(['.git', '.hg', '.dvc']);

/** What DVC records for one dep or out. */
export interface PathInfo {
  path: string;
  md5: string;
  size: number;
  /** Directories only. */
  nfiles?: number;
  /** Files with an executable bit only. */
  isexec?: boolean;
}

export interface LockStage {
  cmd: string | string[];
  deps: PathInfo[];
  /** params.yaml key -> value (top-level keys sorted). */
  params: Record<string, PyValue>;
  outs: PathInfo[];
}

/** Python's default string order (code points), which DVC sorts paths and keys by. */
export function pyCompare(a: string, b: string): number {
  const ca = [...a];
  const cb = [...b];
  for (let i = 0; i < Math.min(ca.length, cb.length); i++) {
    const d = ca[i]!.codePointAt(0)! - cb[i]!.codePointAt(0)!;
    if (d) return d;
  }
  return ca.length - cb.length;
}

/** Python's json.dumps string escaping (ensure_ascii). */
function pyJsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ch = s[i]!;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

/** The `.dir` listing DVC hashes for a directory (its `<md5>.dir` is the MD5 of these bytes). */
export function dirListing(entries: Array<{ relpath: string; md5: string }>): string {
  const sorted = [...entries].sort((a, b) => pyCompare(a.relpath, b.relpath));
  return `[${sorted.map((e) => `{"md5": ${pyJsonString(e.md5)}, "relpath": ${pyJsonString(e.relpath)}}`).join(', ')}]`;
}

interface CacheEntry {
  size: number;
  mtimeMs: number;
  ino: number;
  md5: string;
}

/** File and directory hashes as DVC computes them, with a stat-keyed cache of file MD5s. */
export class DvcHasher {
  private readonly fresh = new Map<string, CacheEntry>();
  private cache: Record<string, CacheEntry> = {};
  private changed = false;

  constructor(private readonly root: string) {}

  get rootDir(): string {
    return this.root;
  }

  /** Load the hash cache (a missing or unreadable cache only costs re-reading files). */
  async open(): Promise<this> {
    try {
      const data = JSON.parse(await fs.readFile(path.join(this.root, HASH_CACHE), 'utf8')) as { version?: number; files?: Record<string, CacheEntry> };
      if (data.version === HASH_CACHE_VERSION && data.files && typeof data.files === 'object') this.cache = data.files;
    } catch {
      this.cache = {};
    }
    return this;
  }

  /** Save the cache: what was hashed now, plus old entries still under a `tracked` path. */
  async save(tracked: string[]): Promise<void> {
    if (!this.changed) return;
    const kept = Object.entries(this.cache).filter(([k]) => !this.fresh.has(k) && tracked.some((t) => k === t || k.startsWith(`${t}/`)));
    const files = Object.fromEntries([...kept, ...this.fresh.entries()].sort(([a], [b]) => pyCompare(a, b)));
    await fs.mkdir(path.join(this.root, '.tagseg'), { recursive: true });
    await writeFileAtomic(path.join(this.root, HASH_CACHE), `${JSON.stringify({ version: HASH_CACHE_VERSION, files }, null, 1)}\n`);
    this.changed = false;
  }

  /** DVC's record of a project path, or null when it does not exist. */
  async info(rel: string): Promise<PathInfo | null> {
    const abs = path.resolve(this.root, rel);
    let st: Stats;
    try {
      st = await fs.stat(abs);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    if (st.isDirectory()) {
      const { entries, size } = await this.dirEntries(rel);
      const md5 = createHash('md5').update(dirListing(entries), 'utf8').digest('hex');
      return { path: rel, md5: `${md5}.dir`, size, nfiles: entries.length };
    }
    const out: PathInfo = { path: rel, md5: await this.fileMd5(abs, st), size: st.size };
    if (st.mode & 0o111) out.isexec = true;
    return out;
  }

  /** The files of a project directory with their MD5s, and their total size. */
  async dirEntries(rel: string): Promise<{ entries: Array<{ relpath: string; md5: string }>; size: number }> {
    const abs = path.resolve(this.root, rel);
    const entries: Array<{ relpath: string; md5: string }> = [];
    let size = 0;
    const inside = path.relative(this.root, abs);
    // .dvcignore applies inside the project only (a dep outside it, e.g. ../datasets, is read whole)
    const ignore = inside.startsWith('..') || path.isAbsolute(inside) ? null : await DvcIgnore.forPath(this.root, inside.split(path.sep).join('/'));
    const skip = ignore && { ignore, base: inside.split(path.sep).join('/') };
    for (const f of await listFiles(abs, '', skip)) {
      const fst = await fs.stat(path.join(abs, f));
      entries.push({ relpath: f, md5: await this.fileMd5(path.join(abs, f), fst) });
      size += fst.size;
    }
    return { entries, size };
  }

  private async fileMd5(abs: string, st: Stats): Promise<string> {
    const rel = path.relative(this.root, abs);
    const key = rel.startsWith('..') || path.isAbsolute(rel) ? abs : rel.split(path.sep).join('/');
    const hit = this.fresh.get(key) ?? this.cache[key];
    if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs && hit.ino === st.ino) {
      if (!this.fresh.has(key)) this.changed = true;
      this.fresh.set(key, hit);
      return hit.md5;
    }
    const md5 = await hashFile(abs, 'md5');
    this.fresh.set(key, { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, md5 });
    this.changed = true;
    return md5;
  }
}

/**
 * Relative posix paths of all files under `dir` (symbolic links followed), DVC's default ignores
 * and the project's .dvcignore patterns (`skip`, with `dir`'s project path) skipped.
 */
async function listFiles(dir: string, prefix: string, skip: { ignore: DvcIgnore; base: string } | null): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    let isDir = e.isDirectory();
    if (e.isSymbolicLink()) {
      const target = await fs.stat(path.join(dir, rel)).catch(() => undefined);
      if (!target) throw new TagsegError(`broken symbolic link '${path.join(dir, rel)}'`, { hint: 'fix or remove it: it lies inside a dep or output' });
      isDir = target.isDirectory();
    }
    const projectRel = skip && (skip.base === '' ? rel : `${skip.base}/${rel}`);
    if (projectRel && e.name === DVCIGNORE && !isDir) refuseNestedDvcignore(projectRel);
    if (projectRel && skip.ignore.matches(projectRel, isDir)) continue;
    if (isDir) {
      if (!IGNORED_DIRS.has(e.name)) out.push(...(await listFiles(dir, rel, skip)));
    } else out.push(rel);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// dvc.lock text

function infoToPy(i: PathInfo): PyMap {
  const m: PyMap = { path: i.path, hash: 'md5', md5: i.md5, size: i.size };
  if (i.nfiles !== undefined) m.nfiles = i.nfiles;
  if (i.isexec) m.isexec = true;
  return m;
}

/** One stage's entry as DVC's to_single_stage_lockfile builds it. */
export function lockEntry(s: LockStage): PyMap {
  const byPath = (a: PathInfo, b: PathInfo) => pyCompare(a.path, b.path);
  const entry: PyMap = { cmd: s.cmd };
  if (s.deps.length) entry.deps = [...s.deps].sort(byPath).map(infoToPy);
  const keys = Object.keys(s.params).sort(pyCompare);
  if (keys.length) entry.params = { 'params.yaml': Object.fromEntries(keys.map((k) => [k, s.params[k]!])) };
  if (s.outs.length) entry.outs = [...s.outs].sort(byPath).map(infoToPy);
  return entry;
}

/** dvc.lock's text: stages in the order given (DVC keeps existing entries in place, appends new ones). */
export function lockText(stages: Map<string, PyMap>): string {
  return dumpPy({ schema: '2.0', stages: Object.fromEntries(stages) });
}

/** dvc.lock's stage entries (raw, in file order); empty when there is no dvc.lock. */
export async function readDvcLock(root: string): Promise<Map<string, PyMap>> {
  let text: string;
  try {
    text = await fs.readFile(path.join(root, DVC_LOCK), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw new TagsegError(`cannot read: ${messageOf(err)}`, { file: DVC_LOCK, cause: err });
  }
  const data = parsePy(text, DVC_LOCK);
  const hint = 'delete dvc.lock: every stage will then run once more';
  if (data === null) return new Map();
  if (!isMap(data) || data.schema !== '2.0') {
    throw new TagsegError("unsupported dvc.lock (expected `schema: '2.0'`, DVC 3)", { file: DVC_LOCK, hint });
  }
  const stages = data.stages ?? {};
  if (!isMap(stages)) throw new TagsegError('`stages` must be a mapping', { file: DVC_LOCK, hint });
  return new Map(Object.entries(stages).map(([k, v]) => [k, isMap(v) ? v : {}]));
}

export async function writeDvcLock(root: string, stages: Map<string, PyMap>): Promise<void> {
  await writeFileAtomic(path.join(root, DVC_LOCK), lockText(stages));
}

function isMap(v: PyValue | undefined): v is PyMap {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;
}

/** A lock entry read back into a LockStage (fields DVC may add that tagseg does not compare are dropped). */
export function parseLockEntry(entry: PyMap): LockStage {
  const infos = (v: PyValue | undefined): PathInfo[] =>
    (Array.isArray(v) ? v : []).filter(isMap).map((m) => ({
      path: String(m.path),
      md5: String(m.md5 ?? ''),
      size: Number(m.size ?? 0),
      ...(m.nfiles !== undefined ? { nfiles: Number(m.nfiles) } : {}),
      ...(m.isexec === true ? { isexec: true } : {}),
    }));
  const params = isMap(entry.params) && isMap(entry.params['params.yaml']) ? entry.params['params.yaml'] : {};
  const cmd = Array.isArray(entry.cmd) ? entry.cmd.map(String) : String(entry.cmd ?? '');
  return { cmd, deps: infos(entry.deps), params, outs: infos(entry.outs) };
}

// ---------------------------------------------------------------------------------------------
// DVC's cache

/**
 * The cache folder of a DVC project (`.dvc/cache`, or `[cache] dir` of .dvc/config(.local),
 * relative to .dvc/); null when `root` is not a DVC project.
 */
export async function dvcCacheDir(root: string): Promise<string | null> {
  const dotDvc = path.join(root, '.dvc');
  if (!(await fs.stat(dotDvc).then((st) => st.isDirectory(), () => false))) return null;
  let dir = 'cache';
  for (const f of ['config', 'config.local']) {
    const text = await fs.readFile(path.join(dotDvc, f), 'utf8').catch(() => '');
    let section = '';
    for (const line of text.split(/\r?\n/)) {
      const head = /^\s*\[\s*([^\]]+?)\s*\]/.exec(line);
      if (head) section = head[1]!.replace(/['"]/g, '');
      const kv = /^\s*dir\s*=\s*(.+?)\s*$/.exec(line);
      if (section === 'cache' && kv) dir = kv[1]!;
    }
  }
  return path.resolve(dotDvc, dir);
}

/** Where DVC 3 keeps an object: files/md5/<2 hex>/<rest> (a directory's `.dir` listing too). */
function objectPath(cacheDir: string, md5: string): string {
  return path.join(cacheDir, 'files', 'md5', md5.slice(0, 2), md5.slice(2));
}

async function storeObject(cacheDir: string, md5: string, write: (tmp: string) => Promise<void>): Promise<void> {
  const dest = objectPath(cacheDir, md5);
  if (await fs.access(dest).then(() => true, () => false)) return;
  await fs.mkdir(path.dirname(dest), { recursive: true });
  const tmp = `${dest}.${process.pid}.tmp`;
  await write(tmp);
  await fs.chmod(tmp, 0o444); // DVC keeps its cache read-only
  await fs.rename(tmp, dest);
}

/**
 * Put an output in DVC's cache as `dvc commit` does (copies), so that `dvc status` finds it
 * ("not in cache" otherwise) and `dvc push` / `dvc checkout` can use it.
 */
export async function storeInCache(cacheDir: string, hasher: DvcHasher, info: PathInfo): Promise<void> {
  const abs = path.resolve(hasher.rootDir, info.path);
  if (info.nfiles === undefined) {
    await storeObject(cacheDir, info.md5, (tmp) => fs.copyFile(abs, tmp));
    return;
  }
  const { entries } = await hasher.dirEntries(info.path);
  for (const e of entries) await storeObject(cacheDir, e.md5, (tmp) => fs.copyFile(path.join(abs, e.relpath), tmp));
  await storeObject(cacheDir, info.md5, (tmp) => fs.writeFile(tmp, dirListing(entries)));
}
