/**
 * The pipeline graph from dvc.yaml, and tagseg's own runner for machines without `dvc`.
 *
 * The runner follows DVC 3's rules so that `tagseg repro` and `dvc repro` agree on what is stale:
 *   - B depends on A when a dep of B equals or lies inside an output of A, or an output of A lies
 *     inside a dep of B; two stages may not write the same or nested paths; no cycles.
 *   - Stages run in topological order (ties: dvc.yaml order). A stage runs when it never ran, its
 *     cmd, a dep's content, a listed param value or an output changed or went missing. Whether a
 *     downstream stage runs is decided after its upstream ran, on the new contents: an upstream
 *     that rewrote identical outputs does not make its dependants run (as in `dvc repro` without
 *     --force-downstream).
 *   - Outputs are deleted before the command runs unless `persist: true`; the command is the
 *     interpolated `cmd` string, run through a shell in the project root.
 * Fingerprints live in `.tagseg/lock.json` (not dvc.lock, whose format is DVC's business), written
 * atomically after each successful stage, so a failed or killed stage stays stale.
 */
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import * as fs from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { type DvcFile, type DvcStage, loadDvcYaml, stageOutputs } from './dvcfile.js';
import { TagsegError, messageOf } from './errors.js';
import { hashFile, writeFileAtomic } from './fsutil.js';
import { log } from './log.js';
import { type Params, closest, getParam, isPlainObject, loadParams, stableStringify } from './params.js';

export const LOCK_FILE = '.tagseg/lock.json';
const PID_FILE = '.tagseg/repro.pid';
const LOCK_VERSION = 1;

// ---------------------------------------------------------------------------------------------
// Graph

export interface Dag {
  /** Stages in topological order, ties broken by dvc.yaml order. */
  stages: DvcStage[];
  byName: Map<string, DvcStage>;
  /** Direct upstream stage names of each stage (in topological order). */
  upstream: Map<string, string[]>;
  /** Direct downstream stage names of each stage (in topological order). */
  downstream: Map<string, string[]>;
}

/** `child` equals `parent` or lies inside it (both normalised). */
export function isInside(child: string, parent: string): boolean {
  if (parent === '.') return !child.startsWith('/') && child !== '..' && !child.startsWith('../');
  return child === parent || child.startsWith(`${parent}/`);
}

/** Build and check the graph: overlapping outputs and cycles are errors naming the stages. */
export function buildDag(stages: DvcStage[], file = 'dvc.yaml'): Dag {
  const outs = stages.flatMap((s) => stageOutputs(s).map((o) => ({ stage: s.name, path: o.path })));
  for (let i = 0; i < outs.length; i++) {
    for (let j = i + 1; j < outs.length; j++) {
      const a = outs[i]!;
      const b = outs[j]!;
      if (a.path === b.path) {
        const who = a.stage === b.stage ? `stage '${a.stage}' lists it twice` : `stages '${a.stage}' and '${b.stage}' both write it`;
        throw new TagsegError(`output '${a.path}' is duplicated: ${who}`, { file });
      }
      if (isInside(a.path, b.path) || isInside(b.path, a.path)) {
        const [inner, outer] = isInside(a.path, b.path) ? [a, b] : [b, a];
        throw new TagsegError(
          `overlapping outputs: '${inner.path}' (stage '${inner.stage}') lies inside '${outer.path}' (stage '${outer.stage}')`,
          { file, hint: 'each path may be written by one output only' },
        );
      }
    }
  }

  const up = new Map<string, Set<string>>(stages.map((s) => [s.name, new Set()]));
  for (const b of stages) {
    for (const dep of b.deps) {
      for (const o of outs) {
        if (!isInside(dep, o.path) && !isInside(o.path, dep)) continue;
        if (o.stage === b.name) {
          throw new TagsegError(`cycle: stage '${b.name}' depends on its own output '${o.path}' (dep '${dep}')`, { file });
        }
        up.get(b.name)!.add(o.stage);
      }
    }
  }

  // Kahn's algorithm, always taking the earliest stage in dvc.yaml among those ready.
  const byName = new Map(stages.map((s) => [s.name, s]));
  const remaining = new Map(stages.map((s) => [s.name, new Set(up.get(s.name))]));
  const order: DvcStage[] = [];
  while (remaining.size) {
    const ready = [...remaining.entries()].filter(([, u]) => u.size === 0).map(([n]) => byName.get(n)!);
    if (!ready.length) throw new TagsegError(`cycle: ${findCycle(remaining, byName).join(' -> ')}`, { file });
    const next = ready.reduce((a, b) => (b.index < a.index ? b : a));
    order.push(next);
    remaining.delete(next.name);
    for (const u of remaining.values()) u.delete(next.name);
  }
  const pos = new Map(order.map((s, i) => [s.name, i]));
  const byPos = (a: string, b: string) => pos.get(a)! - pos.get(b)!;
  const upstream = new Map(order.map((s) => [s.name, [...up.get(s.name)!].sort(byPos)]));
  const downstream = new Map(order.map((s) => [s.name, order.filter((d) => up.get(d.name)!.has(s.name)).map((d) => d.name)]));
  return { stages: order, byName, upstream, downstream };
}

function findCycle(remaining: Map<string, Set<string>>, byName: Map<string, DvcStage>): string[] {
  // Every remaining node has an upstream in `remaining`: walk upstream until a node repeats.
  const start = [...remaining.keys()].sort((a, b) => byName.get(a)!.index - byName.get(b)!.index)[0]!;
  const seen: string[] = [];
  let cur = start;
  while (!seen.includes(cur)) {
    seen.push(cur);
    cur = [...remaining.get(cur)!].sort((a, b) => byName.get(a)!.index - byName.get(b)!.index)[0]!;
  }
  // seen[k..] is the cycle walked against the edges: print it in data-flow order, starting from
  // its earliest stage in dvc.yaml.
  const cycle = seen.slice(seen.indexOf(cur)).reverse();
  const first = cycle.indexOf(cycle.reduce((a, b) => (byName.get(b)!.index < byName.get(a)!.index ? b : a)));
  const rotated = [...cycle.slice(first), ...cycle.slice(0, first)];
  return [...rotated, rotated[0]!];
}

/** The stage named `target` (also `dvc.yaml:name`) and, unless `single`, all its upstream stages, in order. */
export function selectStages(dag: Dag, target?: string, single = false): DvcStage[] {
  if (!target) {
    if (single) throw new TagsegError('--single needs a target stage');
    return dag.stages;
  }
  const name = target.replace(/^(\.\/)?dvc\.yaml:/, '');
  if (!dag.byName.has(name)) {
    const suggestion = closest(name, dag.byName.keys());
    throw new TagsegError(`unknown stage '${name}'${suggestion ? ` (did you mean '${suggestion}'?)` : ''}`, {
      file: 'dvc.yaml',
      hint: `stages: ${[...dag.byName.keys()].join(', ')}`,
    });
  }
  if (single) return [dag.byName.get(name)!];
  const wanted = new Set<string>([name]);
  const stack = [name];
  while (stack.length) {
    for (const u of dag.upstream.get(stack.pop()!)!) {
      if (!wanted.has(u)) {
        wanted.add(u);
        stack.push(u);
      }
    }
  }
  return dag.stages.filter((s) => wanted.has(s.name));
}

export interface Pipeline {
  root: string;
  params: Params;
  dvc: DvcFile;
  dag: Dag;
}

/** params.yaml (validated) + dvc.yaml (interpolated) + graph, for the project at `root`. */
export async function loadPipeline(root: string): Promise<Pipeline> {
  const params = await loadParams(path.join(root, 'params.yaml'));
  const dvc = await loadDvcYaml(root, params as Record<string, unknown>);
  return { root, params, dvc, dag: buildDag(dvc.stages, dvc.file) };
}

// ---------------------------------------------------------------------------------------------
// Content hashes and the lock file

interface HashEntry {
  size: number;
  mtimeMs: number;
  ino: number;
  hash: string;
}

/** What a successful run of a stage saw: the fingerprint compared by `status`. */
export interface StageLock {
  cmd: string;
  /** dep path -> content hash. */
  deps: Record<string, string>;
  /** params key -> value. */
  params: Record<string, unknown>;
  /** outs, metrics and plots path -> content hash. */
  outs: Record<string, string>;
}

export interface LockData {
  version: number;
  stages: Record<string, StageLock>;
  /** File hash cache keyed by path; valid while size, mtime and inode match. */
  hashes: Record<string, HashEntry>;
}

export async function readLock(root: string): Promise<LockData> {
  const file = path.join(root, LOCK_FILE);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: LOCK_VERSION, stages: {}, hashes: {} };
    throw err;
  }
  const hint = `delete ${LOCK_FILE}: every stage will then run once more`;
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new TagsegError(`corrupt lock file: ${messageOf(err)}`, { file: LOCK_FILE, hint });
  }
  if (!isPlainObject(data) || data.version !== LOCK_VERSION || !isPlainObject(data.stages) || !isPlainObject(data.hashes)) {
    throw new TagsegError(`unrecognised lock file (expected version ${LOCK_VERSION})`, { file: LOCK_FILE, hint });
  }
  return data as unknown as LockData;
}

async function writeLock(root: string, lock: LockData): Promise<void> {
  await writeFileAtomic(path.join(root, LOCK_FILE), `${JSON.stringify(lock, null, 1)}\n`);
}

/**
 * Content hashes. Files: sha256. Directories: sha256 over the sorted relative paths and file
 * hashes, skipping dot-files (temp files like `.x.tmp` that atomic writers leave). File hashes
 * are reused while (size, mtimeMs, inode) match the cache, so unchanged big files are not re-read.
 */
class Hasher {
  private readonly fresh = new Map<string, HashEntry>();
  newEntries = 0;

  constructor(
    private readonly root: string,
    private readonly cache: Record<string, HashEntry>,
  ) {}

  /** Hash of a project path, or null when it does not exist. */
  async hash(rel: string): Promise<string | null> {
    const abs = path.resolve(this.root, rel);
    let st: Stats;
    try {
      st = await fs.stat(abs);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    if (st.isDirectory()) {
      const files = await listFiles(abs);
      const h = createHash('sha256');
      for (const f of files) h.update(`${f}\0${await this.fileHash(path.join(abs, f))}\n`);
      return `${h.digest('hex')}.dir`;
    }
    return this.fileHash(abs, st);
  }

  private async fileHash(abs: string, known?: Stats): Promise<string> {
    const st = known ?? (await fs.stat(abs));
    const key = this.key(abs);
    const hit = this.fresh.get(key) ?? this.cache[key];
    if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs && hit.ino === st.ino) {
      this.fresh.set(key, hit);
      return hit.hash;
    }
    const hash = await hashFile(abs);
    this.fresh.set(key, { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, hash });
    this.newEntries++;
    return hash;
  }

  private key(abs: string): string {
    const rel = path.relative(this.root, abs);
    return rel.startsWith('..') || path.isAbsolute(rel) ? abs : rel.split(path.sep).join('/');
  }

  /** The cache to save: old entries still under a tracked path, plus everything hashed now. */
  snapshot(tracked: string[]): Record<string, HashEntry> {
    const out: Record<string, HashEntry> = {};
    for (const [k, v] of Object.entries(this.cache)) if (tracked.some((t) => isInside(k, t))) out[k] = v;
    for (const [k, v] of this.fresh) out[k] = v;
    return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }
}

/** Relative posix paths of all files under `dir`, sorted, dot-files and dot-dirs skipped. */
async function listFiles(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  const entries = await fs.readdir(path.join(dir, prefix), { withFileTypes: true });
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    let isDir = e.isDirectory();
    if (e.isSymbolicLink()) {
      const target = await fs.stat(path.join(dir, rel)).catch(() => undefined);
      if (!target) throw new TagsegError(`broken symbolic link '${path.join(dir, rel)}'`, { hint: 'fix or remove it: it lies inside a dep or output' });
      isDir = target.isDirectory();
    }
    if (isDir) out.push(...(await listFiles(dir, rel)));
    else out.push(rel);
  }
  return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

// ---------------------------------------------------------------------------------------------
// Status

export interface StageStatus {
  name: string;
  /** Would run under `repro`. */
  stale: boolean;
  /** Why it is stale, e.g. `dep changed: data/synth.ts`, `param changed: ingest.size (128 -> 256)`. */
  reasons: string[];
  /** Frozen stages are never run nor checked. */
  frozen: boolean;
}

interface Evaluation {
  reasons: string[];
  deps: Record<string, string | null>;
  params: Record<string, unknown>;
}

/** Compare a stage with its lock entry; hashes deps and outputs. */
async function evaluate(stage: DvcStage, params: Params, lock: LockData, hasher: Hasher): Promise<Evaluation> {
  const deps: Record<string, string | null> = {};
  for (const d of stage.deps) deps[d] = await hasher.hash(d);
  const values: Record<string, unknown> = {};
  for (const k of stage.params) values[k] = getParam(params, k);

  const prev = lock.stages[stage.name];
  const reasons: string[] = [];
  if (!prev) return { reasons: ['never run'], deps, params: values };
  if (stage.alwaysChanged) reasons.push('always changed');
  if (prev.cmd !== stage.cmd) reasons.push('cmd changed');

  for (const [d, h] of Object.entries(deps)) {
    if (h === null) reasons.push(`dep missing: ${d}`);
    else if (!(d in prev.deps)) reasons.push(`dep added: ${d}`);
    else if (prev.deps[d] !== h) reasons.push(`dep changed: ${d}`);
  }
  for (const d of Object.keys(prev.deps)) if (!(d in deps)) reasons.push(`dep removed: ${d}`);

  for (const [k, v] of Object.entries(values)) {
    if (!(k in prev.params)) reasons.push(`param added: ${k}`);
    else for (const diff of diffValues(k, prev.params[k], v)) reasons.push(`param changed: ${diff}`);
  }
  for (const k of Object.keys(prev.params)) if (!(k in values)) reasons.push(`param removed: ${k}`);

  const outPaths = stageOutputs(stage).map((o) => o.path);
  for (const o of outPaths) {
    const h = await hasher.hash(o);
    if (h === null) reasons.push(`out missing: ${o}`);
    else if (!(o in prev.outs)) reasons.push(`out added: ${o}`);
    else if (prev.outs[o] !== h) reasons.push(`out modified: ${o}`);
  }
  for (const o of Object.keys(prev.outs)) if (!outPaths.includes(o)) reasons.push(`out removed: ${o}`);
  return { reasons, deps, params: values };
}

/** Leaf-level differences, so a section param reports `ingest.size (128 -> 256)`, not `ingest`. */
function diffValues(key: string, before: unknown, after: unknown): string[] {
  if (isPlainObject(before) && isPlainObject(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
    return keys.flatMap((k) => diffValues(`${key}.${k}`, before[k], after[k]));
  }
  if (stableStringify(before) === stableStringify(after)) return [];
  return [`${key} (${show(before)} -> ${show(after)})`];
}

function show(v: unknown): string {
  if (v === undefined) return 'absent';
  return YAML.stringify(v, { collectionStyle: 'flow', flowCollectionPadding: false, lineWidth: 0 }).trim();
}

/**
 * Per stage (of `target` and its upstream, or all): stale or not, and why. A stage downstream of
 * a stale one is reported stale with `upstream stale: <name>` (it may run after it).
 */
export async function status(root: string, opts: { target?: string } = {}): Promise<StageStatus[]> {
  const p = await loadPipeline(root);
  const lock = await readLock(root);
  return statusOf(p, lock, new Hasher(root, lock.hashes), selectStages(p.dag, opts.target), true);
}

async function statusOf(p: Pipeline, lock: LockData, hasher: Hasher, stages: DvcStage[], propagate: boolean): Promise<StageStatus[]> {
  const stale = new Set<string>();
  const out: StageStatus[] = [];
  for (const s of stages) {
    if (s.frozen) {
      out.push({ name: s.name, stale: false, reasons: [], frozen: true });
      continue;
    }
    const { reasons } = await evaluate(s, p.params, lock, hasher);
    if (propagate) for (const u of p.dag.upstream.get(s.name)!) if (stale.has(u)) reasons.push(`upstream stale: ${u}`);
    if (reasons.length) stale.add(s.name);
    out.push({ name: s.name, stale: reasons.length > 0, reasons, frozen: false });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Repro

/** Runs one command; returns its exit code. Injectable so tests need no real stages. */
export type RunCmd = (cmd: string, opts: { cwd: string; stage: string }) => Promise<number>;

/** The real runner: exactly `cmd` through a shell in the project root, output streamed, env inherited. */
export const shellRunCmd: RunCmd = async (cmd, { cwd }) => {
  const r = await execa(cmd, { shell: true, cwd, stdio: 'inherit', reject: false });
  if (typeof r.exitCode === 'number') return r.exitCode;
  if (r.signal) {
    log.warn(`command killed by ${r.signal}`);
    return 128 + (osConstants.signals[r.signal as keyof typeof osConstants.signals] ?? 0);
  }
  log.warn(r.message ?? `could not run \`${cmd}\``);
  return 1;
};

export interface ReproOptions {
  /** Stage name (or `dvc.yaml:name`): run it and what it depends on. Default: every stage. */
  target?: string;
  /** Run the selected stages even when up to date (`dvc repro -f`). */
  force?: boolean;
  /** Report what would run; run nothing, write nothing. */
  dryRun?: boolean;
  /** Only the target, not its upstream (`dvc repro -s`). */
  single?: boolean;
}

export type StageAction = 'ran' | 'skipped' | 'frozen' | 'would run' | 'failed';

export interface ReproResult {
  /** No stage failed (exitCode === 0). */
  ok: boolean;
  /** 0 when every selected stage is up to date or ran; otherwise the failing stage's code (or 1). */
  exitCode: number;
  /** Selected stages, in run order, with what happened and why. Stages after a failure are absent. */
  stages: Array<{ name: string; action: StageAction; reasons: string[] }>;
  /** Names of the stages that ran (dry run: that would run). */
  ran: string[];
  failed?: { stage: string; exitCode: number; message: string };
}

/** Bring the selected stages up to date, in order, stopping at the first failure. */
export async function repro(root: string, opts: ReproOptions = {}, runCmd: RunCmd = shellRunCmd): Promise<ReproResult> {
  const p = await loadPipeline(root);
  const selected = selectStages(p.dag, opts.target, opts.single);
  const result: ReproResult = { ok: true, exitCode: 0, stages: [], ran: [] };

  if (opts.dryRun) {
    const lock = await readLock(root);
    const statuses = await statusOf(p, lock, new Hasher(root, lock.hashes), selected, !opts.single);
    for (const s of statuses) {
      const run = !s.frozen && (s.stale || Boolean(opts.force));
      const reasons = run && !s.stale ? ['forced'] : s.reasons;
      result.stages.push({ name: s.name, action: s.frozen ? 'frozen' : run ? 'would run' : 'skipped', reasons });
      if (run) result.ran.push(s.name);
    }
    return result;
  }

  const release = await acquirePidLock(root);
  try {
    const lock = await readLock(root);
    const hasher = new Hasher(root, lock.hashes);
    const tracked = p.dvc.stages.flatMap((s) => [...s.deps, ...stageOutputs(s).map((o) => o.path)]);
    let saved = hasher.newEntries;
    const save = async () => {
      lock.hashes = hasher.snapshot(tracked);
      await writeLock(root, lock);
      saved = hasher.newEntries;
    };

    for (const stage of selected) {
      if (stage.frozen) {
        log.info(`Stage '${stage.name}' is frozen, skipping`);
        result.stages.push({ name: stage.name, action: 'frozen', reasons: [] });
        continue;
      }
      const ev = await evaluate(stage, p.params, lock, hasher);
      if (!opts.force && ev.reasons.length === 0) {
        log.info(`Stage '${stage.name}' didn't change, skipping`);
        result.stages.push({ name: stage.name, action: 'skipped', reasons: [] });
        continue;
      }
      const reasons = ev.reasons.length ? ev.reasons : ['forced'];
      const outcome = await runStage(root, stage, ev, runCmd, hasher);
      if ('error' in outcome) {
        log.warn(outcome.error);
        result.stages.push({ name: stage.name, action: 'failed', reasons });
        result.failed = { stage: stage.name, exitCode: outcome.exitCode, message: outcome.error };
        result.exitCode = outcome.exitCode;
        result.ok = false;
        break;
      }
      lock.stages[stage.name] = { cmd: stage.cmd, deps: ev.deps as Record<string, string>, params: ev.params, outs: outcome.outs };
      await save();
      result.stages.push({ name: stage.name, action: 'ran', reasons });
      result.ran.push(stage.name);
    }
    // Keep hashes computed for skipped stages too, so the next status need not re-read big files.
    if (hasher.newEntries !== saved) await save();
  } finally {
    await release();
  }
  return result;
}

type RunOutcome = { outs: Record<string, string> } | { error: string; exitCode: number };

async function runStage(root: string, stage: DvcStage, ev: Evaluation, runCmd: RunCmd, hasher: Hasher): Promise<RunOutcome> {
  const missing = Object.entries(ev.deps).filter(([, h]) => h === null);
  if (missing.length) {
    return { error: `stage '${stage.name}': dependency '${missing[0]![0]}' does not exist`, exitCode: 1 };
  }
  // DVC deletes outputs before running so a stage cannot silently reuse a stale one.
  for (const o of stageOutputs(stage)) if (!o.persist) await fs.rm(path.join(root, o.path), { recursive: true, force: true });
  log.info(`Running stage '${stage.name}':`);
  for (const cmd of stage.cmds) {
    log.info(`> ${cmd}`);
    const code = await runCmd(cmd, { cwd: root, stage: stage.name });
    if (code !== 0) return { error: `stage '${stage.name}' failed: \`${cmd}\` exited with code ${code}`, exitCode: code };
  }
  const outs: Record<string, string> = {};
  for (const o of stageOutputs(stage)) {
    const h = await hasher.hash(o.path);
    if (h === null) return { error: `stage '${stage.name}' did not create its output '${o.path}'`, exitCode: 1 };
    outs[o.path] = h;
  }
  return { outs };
}

/**
 * One repro at a time per project: two runners would interleave writes to the same outputs and
 * lock file. A pid file whose process is gone is taken over.
 */
async function acquirePidLock(root: string): Promise<() => Promise<void>> {
  const file = path.join(root, PID_FILE);
  await fs.mkdir(path.dirname(file), { recursive: true });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await fs.open(file, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      return () => fs.rm(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number((await fs.readFile(file, 'utf8').catch(() => '')).trim());
      if (pid > 0 && pidAlive(pid)) {
        throw new TagsegError(`another repro is running in this project (pid ${pid})`, {
          file: PID_FILE,
          hint: 'wait for it to finish, or delete the file if that process is not tagseg',
        });
      }
      await fs.rm(file, { force: true });
    }
  }
  throw new TagsegError('could not take the repro lock', { file: PID_FILE });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
