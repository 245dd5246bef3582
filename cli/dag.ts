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
 * What ran is recorded in dvc.lock exactly as DVC 3 writes it (dvclock.ts), atomically after each
 * successful stage, so a failed or killed stage stays stale, and a project brought up to date by
 * `tagseg repro` is up to date for `dvc status` (and the other way round).
 */
import { execa } from 'execa';
import * as fs from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import { type DvcFile, type DvcStage, loadDvcYaml, lookup, stageOutputs } from './dvcfile.js';
import { DVC_LOCK, DvcHasher, type LockStage, type PathInfo, dvcCacheDir, lockEntry, parseLockEntry, readDvcLock, storeInCache, writeDvcLock } from './dvclock.js';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import { log } from '../pipeline/log.js';
import { applyOverridesToText, closest, isPlainObject, loadParams } from '../stages/params.js';
import { type PyMap, type PyValue, parsePy, pyEqual, pyStr } from './pyyaml.js';
import { removeTree } from '../pipeline/remove_tree.js';

export { DVC_LOCK } from './dvclock.js';
const PID_FILE = '.tagseg/repro.pid';
const OLD_LOCK_FILE = '.tagseg/lock.json';

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

/** No path written twice nor inside another output (DVC's overlapping-outputs rule). */
function checkOutputs(outs: { stage: string; path: string }[], file: string): void {
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
}

/** Each stage's direct upstream stages: those with an output at, inside or around one of its deps. */
function upstreamSets(stages: DvcStage[], outs: { stage: string; path: string }[], file: string): Map<string, Set<string>> {
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
  return up;
}

/** Kahn's algorithm, always taking the earliest stage in dvc.yaml among those ready (DVC's run order). */
function topoOrder(stages: DvcStage[], up: Map<string, Set<string>>, byName: Map<string, DvcStage>, file: string): DvcStage[] {
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
  return order;
}

/** Build and check the graph: overlapping outputs and cycles are errors naming the stages. */
export function buildDag(stages: DvcStage[], file = 'dvc.yaml'): Dag {
  const outs = stages.flatMap((s) => stageOutputs(s).map((o) => ({ stage: s.name, path: o.path })));
  checkOutputs(outs, file);
  const up = upstreamSets(stages, outs, file);
  const byName = new Map(stages.map((s) => [s.name, s]));
  const order = topoOrder(stages, up, byName, file);
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
  /** params.yaml as DVC reads it (Python-typed values): what dvc.lock records and cmds interpolate. */
  raw: Record<string, unknown>;
  dvc: DvcFile;
  dag: Dag;
}

export interface LoadOptions {
  /** `key=value` params overrides, applied in memory only: params.yaml is not touched. */
  overrides?: string[];
  /** Check params.yaml against tagseg's schema first (default true; false for any DVC project). */
  validate?: boolean;
}

/** params.yaml (validated) + dvc.yaml (interpolated) + graph, for the project at `root`. */
export async function loadPipeline(root: string, opts: LoadOptions = {}): Promise<Pipeline> {
  const file = path.join(root, 'params.yaml');
  const overrides = opts.overrides ?? [];
  if (opts.validate ?? true) await loadParams(file, overrides);
  const text = overrides.length ? await applyOverridesToText(file, overrides) : await fs.readFile(file, 'utf8');
  const parsed = parsePy(text, 'params.yaml');
  const raw = isPlainObject(parsed) ? (parsed as Record<string, unknown>) : {};
  const dvc = await loadDvcYaml(root, raw);
  return { root, raw, dvc, dag: buildDag(dvc.stages, dvc.file) };
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
  /**
   * The stage's own changes in `dvc status --json`'s form (`{"changed deps": {path: "modified",
   * "params.yaml": {key: "modified"}}}`, `{"changed outs": ...}`, "changed command", "always
   * changed"); empty when up to date or never run (reasons says `never run`).
   */
  dvc: Array<Record<string, Record<string, unknown>> | string>;
}

interface Evaluation {
  reasons: string[];
  dvc: StageStatus['dvc'];
  /** Current deps (null: missing). */
  deps: Array<{ path: string; info: PathInfo | null }>;
  params: Record<string, PyValue>;
}

/** The listed params' current values, as dvc.lock records them. */
function paramValues(stage: DvcStage, raw: Record<string, unknown>): Record<string, PyValue> {
  const values: Record<string, PyValue> = {};
  for (const k of stage.params) {
    const v = lookup(raw, k);
    if (v === undefined) throw new TagsegError(`stage '${stage.name}': param '${k}' is not in params.yaml`, { file: 'params.yaml' });
    values[k] = v as PyValue;
  }
  return values;
}

/** One change found by the checks below: a reason for people and an entry in dvc status's vocabulary. */
type Note = (reason: string, into: Record<string, unknown>, key: string, state: string) => void;

/** Deps against the lock entry's (dvc status `changed deps`: deleted, new, modified). */
function depChanges(stage: DvcStage, deps: Evaluation['deps'], prev: LockStage, note: Note, reasons: string[]): Record<string, unknown> {
  const changedDeps: Record<string, unknown> = {};
  const prevDeps = new Map(prev.deps.map((d) => [d.path, d.md5]));
  for (const { path: d, info } of deps) {
    if (info === null) note(`dep missing: ${d}`, changedDeps, d, 'deleted');
    else if (!prevDeps.has(d)) note(`dep added: ${d}`, changedDeps, d, 'new');
    else if (prevDeps.get(d) !== info.md5) note(`dep changed: ${d}`, changedDeps, d, 'modified');
  }
  for (const d of prevDeps.keys()) if (!stage.deps.includes(d)) reasons.push(`dep removed: ${d}`);
  return changedDeps;
}

/** Params against the lock entry's (dvc status's `params.yaml` entry), with leaf-level reasons. */
function paramChanges(values: Record<string, PyValue>, prev: LockStage, note: Note, reasons: string[]): Record<string, string> {
  const changedParams: Record<string, string> = {};
  for (const [k, v] of Object.entries(values)) {
    if (!(k in prev.params)) note(`param added: ${k}`, changedParams, k, 'new');
    else if (!pyEqual(prev.params[k]!, v)) {
      changedParams[k] = 'modified';
      for (const diff of diffValues(k, prev.params[k]!, v)) reasons.push(`param changed: ${diff}`);
    }
  }
  for (const k of Object.keys(prev.params)) if (!(k in values)) reasons.push(`param removed: ${k}`);
  return changedParams;
}

/** Outputs in the workspace against the lock entry's (dvc status `changed outs`). */
async function outChanges(stage: DvcStage, prev: LockStage, hasher: DvcHasher, note: Note, reasons: string[]): Promise<Record<string, string>> {
  const changedOuts: Record<string, string> = {};
  const prevOuts = new Map(prev.outs.map((o) => [o.path, o.md5]));
  const outPaths = stageOutputs(stage).map((o) => o.path);
  for (const o of outPaths) {
    const info = await hasher.info(o);
    if (info === null) note(`out missing: ${o}`, changedOuts, o, 'deleted');
    else if (!prevOuts.has(o)) note(`out added: ${o}`, changedOuts, o, 'new');
    else if (prevOuts.get(o) !== info.md5) note(`out modified: ${o}`, changedOuts, o, 'modified');
  }
  for (const o of prevOuts.keys()) if (!outPaths.includes(o)) reasons.push(`out removed: ${o}`);
  return changedOuts;
}

/** Compare a stage with its dvc.lock entry as DVC does: cmd, deps' md5, params' values, outs' md5. */
async function evaluate(stage: DvcStage, raw: Record<string, unknown>, lock: Map<string, PyMap>, hasher: DvcHasher): Promise<Evaluation> {
  const deps: Evaluation['deps'] = [];
  for (const d of stage.deps) deps.push({ path: d, info: await hasher.info(d) });
  const values = paramValues(stage, raw);
  const entry = lock.get(stage.name);
  if (!entry) return { reasons: ['never run'], dvc: [], deps, params: values };
  const prev = parseLockEntry(entry);

  const reasons: string[] = [];
  const note: Note = (reason, into, key, state) => {
    reasons.push(reason);
    into[key] = state;
  };
  const changedDeps = depChanges(stage, deps, prev, note, reasons);
  const changedParams = paramChanges(values, prev, note, reasons);
  if (Object.keys(changedParams).length) changedDeps['params.yaml'] = changedParams;
  const changedOuts = await outChanges(stage, prev, hasher, note, reasons);

  const cmdChanged = JSON.stringify(prev.cmd) !== JSON.stringify(stage.lockCmd);
  if (cmdChanged) reasons.unshift('cmd changed');
  if (stage.alwaysChanged) reasons.unshift('always changed');
  const dvc: StageStatus['dvc'] = [];
  if (Object.keys(changedDeps).length) dvc.push({ 'changed deps': changedDeps });
  if (Object.keys(changedOuts).length) dvc.push({ 'changed outs': changedOuts });
  if (stage.alwaysChanged) dvc.push('always changed');
  if (cmdChanged) dvc.push('changed command');
  return { reasons, dvc, deps, params: values };
}

/** Leaf-level differences, so a section param reports `ingest.size (128 -> 256)`, not `ingest`. */
function diffValues(key: string, before: PyValue | undefined, after: PyValue | undefined): string[] {
  if (isMapping(before) && isMapping(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
    return keys.flatMap((k) => diffValues(`${key}.${k}`, before[k], after[k]));
  }
  if (before !== undefined && after !== undefined && pyEqual(before, after)) return [];
  return [`${key} (${show(before)} -> ${show(after)})`];
}

function isMapping(v: PyValue | undefined): v is PyMap {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;
}

function show(v: PyValue | undefined): string {
  if (v === undefined) return 'absent';
  if (Array.isArray(v)) return `[${v.map(show).join(',')}]`;
  if (isMapping(v)) return `{${Object.entries(v).map(([k, x]) => `${k}: ${show(x)}`).join(', ')}}`;
  return v === null ? 'null' : pyStr(v);
}

/**
 * Per stage (of `target` and its upstream, or all): stale or not, and why, against dvc.lock. A
 * stage downstream of a stale one is reported stale with `upstream stale: <name>` (it may run
 * after it).
 */
export async function status(root: string, opts: { target?: string; validate?: boolean } = {}): Promise<StageStatus[]> {
  const p = await loadPipeline(root, { validate: opts.validate });
  const lock = await readDvcLock(root);
  const hasher = await new DvcHasher(root).open();
  const out = await statusOf(p, lock, hasher, selectStages(p.dag, opts.target), true);
  await hasher.save(trackedPaths(p));
  return out;
}

async function statusOf(p: Pipeline, lock: Map<string, PyMap>, hasher: DvcHasher, stages: DvcStage[], propagate: boolean): Promise<StageStatus[]> {
  const stale = new Set<string>();
  const out: StageStatus[] = [];
  for (const s of stages) {
    if (s.frozen) {
      out.push({ name: s.name, stale: false, reasons: [], frozen: true, dvc: [] });
      continue;
    }
    const { reasons, dvc } = await evaluate(s, p.raw, lock, hasher);
    if (propagate) for (const u of p.dag.upstream.get(s.name)!) if (stale.has(u)) reasons.push(`upstream stale: ${u}`);
    if (reasons.length) stale.add(s.name);
    out.push({ name: s.name, stale: reasons.length > 0, reasons, frozen: false, dvc });
  }
  return out;
}

/**
 * dvc.lock's entries for every stage as the workspace stands now (what `dvc commit` records),
 * in run order; null for a stage with a missing dep or output.
 */
export async function lockFromWorkspace(root: string, opts: LoadOptions = {}): Promise<Map<string, PyMap | null>> {
  const p = await loadPipeline(root, opts);
  const hasher = await new DvcHasher(root).open();
  const out = new Map<string, PyMap | null>();
  for (const s of p.dag.stages) {
    const deps = await Promise.all(s.deps.map((d) => hasher.info(d)));
    const outs = await Promise.all(stageOutputs(s).map((o) => hasher.info(o.path)));
    const ok = [...deps, ...outs].every((i) => i !== null);
    out.set(s.name, ok ? lockEntry({ cmd: s.lockCmd, deps: deps as PathInfo[], params: paramValues(s, p.raw), outs: outs as PathInfo[] }) : null);
  }
  return out;
}

function trackedPaths(p: Pipeline): string[] {
  return p.dvc.stages.flatMap((s) => [...s.deps, ...stageOutputs(s).map((o) => o.path)]);
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
  /** Dry run only: `key=value` params overrides applied in memory (params.yaml is not touched). */
  overrides?: string[];
  /** Check params.yaml against tagseg's schema first (default true). */
  validate?: boolean;
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

/** `repro --dry`: what would run and why. Read-only: neither dvc.lock nor the hash cache is written. */
async function dryRepro(root: string, p: Pipeline, selected: DvcStage[], opts: ReproOptions): Promise<ReproResult> {
  const result: ReproResult = { ok: true, exitCode: 0, stages: [], ran: [] };
  const lock = await readDvcLock(root);
  const statuses = await statusOf(p, lock, await new DvcHasher(root).open(), selected, !opts.single);
  for (const s of statuses) {
    const run = !s.frozen && (s.stale || Boolean(opts.force));
    const reasons = run && !s.stale ? ['forced'] : s.reasons;
    result.stages.push({ name: s.name, action: s.frozen ? 'frozen' : run ? 'would run' : 'skipped', reasons });
    if (run) result.ran.push(s.name);
  }
  return result;
}

/** What `dvc repro` records after a stage ran: its cached outputs in DVC's cache, then its dvc.lock entry. */
async function recordStage(root: string, stage: DvcStage, ev: Evaluation, outs: PathInfo[], lock: Map<string, PyMap>, hasher: DvcHasher, cacheDir: string | null): Promise<void> {
  const deps = ev.deps.map((d) => d.info!);
  if (cacheDir) {
    // In a DVC project, cached outputs go to DVC's cache too, or `dvc status` says "not in cache".
    const cached = new Set(stageOutputs(stage).filter((o) => o.cache).map((o) => o.path));
    for (const info of outs) if (cached.has(info.path)) await storeInCache(cacheDir, hasher, info);
  }
  lock.set(stage.name, lockEntry({ cmd: stage.lockCmd, deps, params: ev.params, outs }));
  await writeDvcLock(root, lock);
  log.info(`Updating lock file '${DVC_LOCK}'`);
}

/** Run each selected stage that changed (or all with --force), in order, into `result`; stops at the first failure. */
async function runSelected(root: string, p: Pipeline, selected: DvcStage[], opts: ReproOptions, runCmd: RunCmd, hasher: DvcHasher, result: ReproResult): Promise<void> {
  // The lock file of tagseg before dvc.lock: nothing reads it any more.
  await fs.rm(path.join(root, OLD_LOCK_FILE), { force: true });
  const lock = await readDvcLock(root);
  const cacheDir = await dvcCacheDir(root);
  for (const stage of selected) {
    if (stage.frozen) {
      log.info(`Stage '${stage.name}' is frozen, skipping`);
      result.stages.push({ name: stage.name, action: 'frozen', reasons: [] });
      continue;
    }
    const ev = await evaluate(stage, p.raw, lock, hasher);
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
    await recordStage(root, stage, ev, outcome.outs, lock, hasher, cacheDir);
    result.stages.push({ name: stage.name, action: 'ran', reasons });
    result.ran.push(stage.name);
  }
}

/** Bring the selected stages up to date, in order, stopping at the first failure. */
export async function repro(root: string, opts: ReproOptions = {}, runCmd: RunCmd = shellRunCmd): Promise<ReproResult> {
  if (opts.overrides?.length && !opts.dryRun) throw new TagsegError('in-memory params overrides are for a dry run only');
  const p = await loadPipeline(root, { overrides: opts.overrides, validate: opts.validate });
  const selected = selectStages(p.dag, opts.target, opts.single);
  if (opts.dryRun) return dryRepro(root, p, selected, opts);

  const result: ReproResult = { ok: true, exitCode: 0, stages: [], ran: [] };
  const release = await acquirePidLock(root);
  const hasher = await new DvcHasher(root).open();
  try {
    await runSelected(root, p, selected, opts, runCmd, hasher, result);
  } finally {
    // Keep hashes computed for skipped stages too, so the next status need not re-read big files.
    await hasher.save(trackedPaths(p)).catch((err: unknown) => log.warn(`could not save the hash cache: ${messageOf(err)}`));
    await release();
  }
  return result;
}

type RunOutcome = { outs: PathInfo[] } | { error: string; exitCode: number };

async function runStage(root: string, stage: DvcStage, ev: Evaluation, runCmd: RunCmd, hasher: DvcHasher): Promise<RunOutcome> {
  const missing = ev.deps.filter((d) => d.info === null);
  if (missing.length) {
    return { error: `stage '${stage.name}': dependency '${missing[0]!.path}' does not exist`, exitCode: 1 };
  }
  // DVC deletes outputs before running so a stage cannot silently reuse a stale one.
  for (const o of stageOutputs(stage)) if (!o.persist) await removeTree(path.join(root, o.path));
  log.info(`Running stage '${stage.name}':`);
  for (const cmd of stage.cmds) {
    log.info(`> ${cmd}`);
    const code = await runCmd(cmd, { cwd: root, stage: stage.name });
    if (code !== 0) return { error: `stage '${stage.name}' failed: \`${cmd}\` exited with code ${code}`, exitCode: code };
  }
  const outs: PathInfo[] = [];
  for (const o of stageOutputs(stage)) {
    const info = await hasher.info(o.path);
    if (info === null) return { error: `stage '${stage.name}' did not create its output '${o.path}'`, exitCode: 1 };
    outs.push(info);
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
