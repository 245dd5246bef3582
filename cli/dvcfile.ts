/**
 * dvc.yaml reader for tagseg's own runner (used when `dvc` is not installed). It accepts the
 * subset of DVC 3's format the project uses and rejects the rest with a clear error instead of
 * running something different from what `dvc repro` would run:
 *   - stages with cmd (string or list), deps, params, outs, metrics, plots, frozen,
 *     always_changed, desc, meta; out/metric/plot entries as `path` or `{path: {cache, persist...}}`;
 *   - params as keys of params.yaml (`{params.yaml: [keys]}` too; other params files are refused);
 *   - `${a.b}` templating from params.yaml (DVC's default `vars`), with DVC's rules: a mapping
 *     interpolated into `cmd` expands to `--key value` flags, anywhere else only scalars are allowed;
 *     `\${` is a literal `${`. Values are params.yaml's as DVC reads them (`1.0` renders as `1.0`);
 *   - `foreach` (a list, a mapping or `${key}`) and `matrix` stages, expanded as DVC expands them:
 *     `name@<key>` with `${item}` (and `${key}` for a mapping) or `${item.<matrix key>}`.
 * Custom `vars` and `wdir` are refused (tagseg does not use them).
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import { closest, isPlainObject } from '../pipeline/params_core.js';
import { PyFloat, PyRaw, type PyValue, parsePy, pyStr } from './pyyaml.js';

/** An output (outs, metrics or plots entry). */
export interface DvcOut {
  /** Normalised path relative to the project root (posix separators). */
  path: string;
  /** DVC caches it (default true); our runner only records it. */
  cache: boolean;
  /** Keep it before the command runs (default false: DVC deletes outputs first). */
  persist: boolean;
}

export interface DvcStage {
  name: string;
  /** Position in dvc.yaml: breaks ties in the topological order. */
  index: number;
  /** The interpolated command(s), run in order through a shell, exactly as written. */
  cmds: string[];
  /** `cmds` joined by newlines. */
  cmd: string;
  /** The command as dvc.lock records it: the string, or the list when dvc.yaml gives a list. */
  lockCmd: string | string[];
  deps: string[];
  /** params.yaml keys (sections or dotted keys). */
  params: string[];
  outs: DvcOut[];
  metrics: DvcOut[];
  plots: DvcOut[];
  frozen: boolean;
  alwaysChanged: boolean;
}

export interface DvcFile {
  /** Label for messages (normally `dvc.yaml`). */
  file: string;
  /** Stages in file order. */
  stages: DvcStage[];
}

const STAGE_FIELDS = ['cmd', 'wdir', 'deps', 'params', 'outs', 'metrics', 'plots', 'frozen', 'always_changed', 'vars', 'desc', 'meta'];
const OUT_FLAGS = ['cache', 'persist', 'checkpoint', 'desc', 'type', 'labels', 'meta', 'remote', 'push'];
const PLOT_FLAGS = [...OUT_FLAGS, 'x', 'y', 'x_label', 'y_label', 'title', 'header', 'template'];
const TOP_FIELDS = ['stages', 'vars', 'plots', 'params', 'metrics', 'artifacts'];

/** Read `<root>/dvc.yaml`; `vars` are the values of params.yaml as DVC reads them (pyyaml.ts's parsePy). */
export async function loadDvcYaml(root: string, vars: Record<string, unknown>): Promise<DvcFile> {
  const file = path.join(root, 'dvc.yaml');
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new TagsegError('file not found', { file: 'dvc.yaml' });
    throw new TagsegError(`cannot read: ${messageOf(err)}`, { file: 'dvc.yaml', cause: err });
  }
  return parseDvcYaml(text, vars);
}

/** Parse and interpolate dvc.yaml text. */
export function parseDvcYaml(text: string, vars: Record<string, unknown>, file = 'dvc.yaml'): DvcFile {
  // Python-typed as DVC reads it: `foreach: [1.0]` generates `name@1.0`, not `name@1`.
  const raw: unknown = parsePy(text, file);
  const fail = (reason: string, hint?: string): never => {
    throw new TagsegError(reason, { file, hint });
  };
  if (!isPlainObject(raw)) return fail('expected a mapping with a `stages` key');
  for (const k of Object.keys(raw)) {
    if (!TOP_FIELDS.includes(k)) fail(`unknown top-level key '${k}'${didYouMean(k, TOP_FIELDS)}`);
  }
  if (raw.vars !== undefined) {
    const ok = Array.isArray(raw.vars) && raw.vars.every((v) => v === 'params.yaml');
    if (!ok) fail("custom `vars` are not supported: tagseg interpolates `${...}` from params.yaml only");
  }
  if (!isPlainObject(raw.stages)) return fail('`stages` must be a mapping of stage name to stage');
  const stages = Object.entries(raw.stages).flatMap(([name, def], index) => expandStage(name, def, index, vars, file));
  return { file, stages };
}

/** A stage, or the stages a `foreach` / `matrix` definition generates (`name@key`), in DVC's order. */
function expandStage(name: string, def: unknown, index: number, vars: Record<string, unknown>, file: string): DvcStage[] {
  const fail = (reason: string): never => {
    throw new TagsegError(`stage '${name}': ${reason}`, { file });
  };
  if (!isPlainObject(def) || (!('foreach' in def) && !('matrix' in def))) return [parseStage(name, def, index, vars, vars, file)];
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(name)) fail('invalid stage name');
  const resolve = (v: unknown, field: string): unknown => {
    if (typeof v !== 'string') return v;
    const m = /^\$\{\s*([^}]*?)\s*\}$/.exec(v);
    const found = m ? lookup(vars, m[1]!) : undefined;
    return found === undefined ? fail(`\`${field}\` must be a list, a mapping or '\${key}' of one in params.yaml`) : found;
  };
  let generated: Generated[];
  if ('foreach' in def) {
    if ('matrix' in def) fail('a stage cannot have both `foreach` and `matrix`');
    for (const k of Object.keys(def)) if (k !== 'foreach' && k !== 'do') fail(`unknown field '${k}' next to \`foreach\` (the stage goes under \`do\`)`);
    const it = resolve(def.foreach, 'foreach');
    if (!Array.isArray(it) && !isMapping(it)) return fail('`foreach` must be a list or a mapping');
    generated = foreachItems(it, def.do);
  } else {
    const m = resolve(def.matrix, 'matrix');
    if (!isMapping(m) || !Object.keys(m).length) return fail('`matrix` must be a mapping of names to lists');
    const axes = Object.entries(m).map(([k, v]) => {
      const values = resolve(v, `matrix.${k}`);
      return Array.isArray(values) ? { k, values } : fail(`\`matrix.${k}\` must be a list`);
    });
    generated = matrixItems(axes, Object.fromEntries(Object.entries(def).filter(([k]) => k !== 'matrix')));
  }
  const seen = new Set<string>();
  return generated.map((g) => {
    if (seen.has(g.key)) fail(`generates '${name}@${g.key}' twice`);
    seen.add(g.key);
    return parseStage(`${name}@${g.key}`, g.def, index, { ...vars, ...g.ctx }, vars, file);
  });
}

interface Generated {
  key: string;
  /** Variables the generated stage adds: `item` (and `key` for a mapping). */
  ctx: Record<string, unknown>;
  def: unknown;
}

/** DVC's keys: a list of scalars is keyed by its values, a list with mappings or lists by index. */
function foreachItems(it: unknown[] | Record<string, unknown>, def: unknown): Generated[] {
  if (!Array.isArray(it)) return Object.entries(it).map(([key, item]) => ({ key, ctx: { key, item }, def }));
  const composite = it.some((v) => isMapping(v) || Array.isArray(v));
  return it.map((item, i) => ({ key: composite ? String(i) : pyStr(item as PyValue), ctx: { item }, def }));
}

/** Every combination, in key order; the key joins the values (`<name><index>` for a composite one) with `-`. */
function matrixItems(axes: Array<{ k: string; values: unknown[] }>, def: unknown): Generated[] {
  let combos: Array<{ frags: string[]; item: Record<string, unknown> }> = [{ frags: [], item: {} }];
  for (const { k, values } of axes) {
    combos = combos.flatMap((c) =>
      values.map((v, i) => ({ frags: [...c.frags, isMapping(v) || Array.isArray(v) ? `${k}${i}` : pyStr(v as PyValue)], item: { ...c.item, [k]: v } })),
    );
  }
  return combos.map((c) => ({ key: c.frags.join('-'), ctx: { item: c.item }, def }));
}

/** What the field parsers of one stage share: its mapping, its error and `${...}` interpolation. */
interface StageCtx {
  def: Record<string, unknown>;
  fail: (reason: string, hint?: string) => never;
  interp: (s: string, field: string, asCmd?: boolean) => string;
}

/** A list field (absent or null: empty). */
function listField(c: StageCtx, field: string): unknown[] {
  const v = c.def[field];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) return c.fail(`\`${field}\` must be a list`);
  return v;
}

/** `cmd`, a string or a list of strings (DVC runs a list's commands in order), interpolated. */
function stageCmds(c: StageCtx): string[] {
  let cmds: string[];
  if (typeof c.def.cmd === 'string') cmds = [c.def.cmd];
  else if (Array.isArray(c.def.cmd) && c.def.cmd.length > 0 && c.def.cmd.every((x) => typeof x === 'string')) cmds = c.def.cmd as string[];
  else return c.fail('`cmd` is required: a string or a list of strings');
  return cmds.map((x) => c.interp(x, 'cmd', true));
}

/** `params`: keys of params.yaml, or `{params.yaml: [keys] | null}` (null: every key); each must exist. */
function stageParams(c: StageCtx, paramsYaml: Record<string, unknown>): string[] {
  const params: string[] = [];
  for (const p of listField(c, 'params')) {
    if (typeof p === 'string') params.push(c.interp(p, 'params'));
    else if (isPlainObject(p)) {
      for (const [paramsFile, keys] of Object.entries(p)) {
        if (normalize(paramsFile) !== 'params.yaml') {
          c.fail(`params from '${paramsFile}' are not supported: tagseg tracks params.yaml only`, 'move these keys into params.yaml');
        }
        if (keys === null) params.push(...Object.keys(paramsYaml)); // `params.yaml:` with no list = every key
        else if (Array.isArray(keys) && keys.every((k) => typeof k === 'string')) params.push(...keys.map((k) => c.interp(k as string, 'params')));
        else c.fail(`\`params\`: '${paramsFile}' must map to a list of keys`);
      }
    } else c.fail('`params` entries must be keys of params.yaml');
  }
  assertUnique(params, 'params', c.fail);
  for (const key of params) {
    if (lookup(paramsYaml, key) === undefined) {
      const suggestion = closest(key, flattenKeys(paramsYaml));
      c.fail(`param '${key}' is not in params.yaml${suggestion ? ` (did you mean '${suggestion}'?)` : ''}`);
    }
  }
  return params;
}

/** One `outs`/`metrics`/`plots` entry's path and flags: a path, or `{path: {flags}}` with DVC's flags for the field. */
function outEntry(c: StageCtx, field: 'outs' | 'metrics' | 'plots', entry: unknown): { p: string; flags: Record<string, unknown> } {
  if (typeof entry === 'string') return { p: entry, flags: {} };
  if (!isPlainObject(entry) || Object.keys(entry).length !== 1) return c.fail(`\`${field}\` entries must be a path or {path: {flags}}`);
  const p = Object.keys(entry)[0]!;
  const f = entry[p];
  if (f !== null && !isPlainObject(f)) return c.fail(`\`${field}\`: flags of '${p}' must be a mapping`);
  const flags = f ?? {};
  const allowed = field === 'plots' ? PLOT_FLAGS : OUT_FLAGS;
  for (const k of Object.keys(flags)) {
    if (!allowed.includes(k)) c.fail(`\`${field}\`: unknown flag '${k}' on '${p}'${didYouMean(k, allowed)}`);
  }
  for (const k of ['cache', 'persist'] as const) {
    if (flags[k] !== undefined && typeof flags[k] !== 'boolean') c.fail(`\`${field}\`: '${p}': \`${k}\` must be true or false`);
  }
  return { p, flags };
}

/** The outputs of one field, inside the project. */
function stageOuts(c: StageCtx, field: 'outs' | 'metrics' | 'plots'): DvcOut[] {
  return listField(c, field).map((entry) => {
    const { p, flags } = outEntry(c, field, entry);
    const out = normalize(c.interp(p, field));
    // Outputs are deleted before the command runs: refuse anything outside the project.
    if (out === '.' || out === '..' || out.startsWith('../') || path.isAbsolute(out)) {
      c.fail(`\`${field}\`: '${out}' must be a path inside the project`);
    }
    return { path: out, cache: (flags.cache as boolean | undefined) ?? true, persist: (flags.persist as boolean | undefined) ?? false };
  });
}

/** One stage; `vars` interpolate `${...}` (params.yaml plus a generated stage's item), `paramsYaml` is params.yaml. */
function parseStage(name: string, def: unknown, index: number, vars: Record<string, unknown>, paramsYaml: Record<string, unknown>, file: string): DvcStage {
  const fail = (reason: string, hint?: string): never => {
    throw new TagsegError(`stage '${name}': ${reason}`, { file, hint });
  };
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*(@[A-Za-z0-9_.-]+)?$/.test(name)) fail('invalid stage name');
  if (!isPlainObject(def)) return fail('expected a mapping');
  for (const k of Object.keys(def)) {
    if (!STAGE_FIELDS.includes(k)) fail(`unknown field '${k}'${didYouMean(k, STAGE_FIELDS)}`);
  }
  if (def.vars !== undefined) fail('stage-level `vars` are not supported');
  if (def.wdir !== undefined && normalize(String(def.wdir)) !== '.') fail('`wdir` other than "." is not supported');
  const c: StageCtx = { def, fail, interp: (s, field, asCmd = false) => interpolate(s, vars, { file, stage: name, field, cmd: asCmd }) };
  const cmds = stageCmds(c);
  const deps = listField(c, 'deps').map((d) => {
    if (typeof d !== 'string') return fail('`deps` entries must be paths (strings)');
    return normalize(c.interp(d, 'deps'));
  });
  assertUnique(deps, 'deps', fail);
  const params = stageParams(c, paramsYaml);
  const frozen = def.frozen ?? false;
  const alwaysChanged = def.always_changed ?? false;
  if (typeof frozen !== 'boolean') fail('`frozen` must be true or false');
  if (typeof alwaysChanged !== 'boolean') fail('`always_changed` must be true or false');
  return {
    name, index, cmds, cmd: cmds.join('\n'), lockCmd: typeof def.cmd === 'string' ? cmds[0]! : cmds, deps, params,
    outs: stageOuts(c, 'outs'), metrics: stageOuts(c, 'metrics'), plots: stageOuts(c, 'plots'),
    frozen: frozen as boolean, alwaysChanged: alwaysChanged as boolean,
  };
}

/** Every output path of a stage: outs, metrics and plots. */
export function stageOutputs(stage: DvcStage): DvcOut[] {
  return [...stage.outs, ...stage.metrics, ...stage.plots];
}

// ---------------------------------------------------------------------------------------------
// Templating

// `${...}` not preceded by a backslash; `\${` stays literal (DVC's escape).
const TEMPLATE = /(\\)?\$\{([^}]*)\}/g;

/**
 * Replace `${key}` by values from `vars`. Keys are dotted, with optional `[i]` list indexing
 * (`${dataset.splits[0]}`). Scalars render as DVC renders them (booleans `true`/`false`); in a
 * `cmd`, a mapping expands to `--key value` flags (DVC's default: booleans as bare `--key` when
 * true and nothing when false, lists as `--key a b`, strings shell-quoted).
 */
export function interpolate(
  s: string,
  vars: Record<string, unknown>,
  where: { file?: string; stage: string; field: string; cmd?: boolean },
): string {
  const file = where.file ?? 'dvc.yaml';
  return s.replace(TEMPLATE, (match, escaped: string | undefined, inner: string) => {
    if (escaped) return match.slice(1);
    const key = inner.trim();
    const value = lookup(vars, key);
    if (value === undefined) {
      const suggestion = closest(key, flattenKeys(vars));
      throw new TagsegError(
        `stage '${where.stage}': ${where.field}: unknown variable '\${${key}}'${suggestion ? ` (did you mean '${suggestion}'?)` : ''}`,
        { file, hint: 'variables come from params.yaml' },
      );
    }
    if (isMapping(value)) {
      if (!where.cmd) {
        throw new TagsegError(`stage '${where.stage}': ${where.field}: '\${${key}}' is a mapping; only cmd can expand mappings`, { file });
      }
      return dictToArgs(value, { file, stage: where.stage, key });
    }
    if (Array.isArray(value)) {
      throw new TagsegError(`stage '${where.stage}': ${where.field}: cannot interpolate the list '\${${key}}'`, {
        file,
        hint: `index it (\${${key}[0]}) or interpolate its parent mapping in cmd`,
      });
    }
    return scalarToString(value);
  });
}

/** Python's str() of the value, which is what DVC writes (None, true/false, 1.0). */
function scalarToString(v: unknown): string {
  return pyStr(v as PyValue);
}

/** A mapping of params.yaml (not a float or date wrapper). */
function isMapping(v: unknown): v is Record<string, unknown> {
  return isPlainObject(v) && !(v instanceof PyFloat) && !(v instanceof PyRaw);
}

function dictToArgs(obj: Record<string, unknown>, where: { file: string; stage: string; key: string }): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(flattenDict(obj))) {
    if (typeof v === 'boolean') {
      if (v) parts.push(`--${k}`);
    } else if (typeof v === 'string') parts.push(`--${k} ${shellQuote(v)}`);
    else if (Array.isArray(v)) {
      v.forEach((item, i) => {
        if (Array.isArray(item) || isMapping(item)) {
          throw new TagsegError(`stage '${where.stage}': cmd: cannot interpolate nested lists in '${where.key}.${k}'`, { file: where.file });
        }
        const text = typeof item === 'string' ? shellQuote(item) : scalarToString(item);
        parts.push(i === 0 ? `--${k} ${text}` : text);
      });
    } else parts.push(`--${k} ${scalarToString(v)}`);
  }
  return parts.join(' ');
}

/** Nested mapping -> {'a.b': value}; lists stay values. */
function flattenDict(obj: Record<string, unknown>, prefix = ''): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (isMapping(v)) Object.assign(out, flattenDict(v, key));
    else out[key] = v;
  }
  return out;
}

/** Python's shlex.quote, which DVC uses for strings in expanded mappings. */
export function shellQuote(s: string): string {
  if (s === '') return "''";
  if (!/[^\w@%+=:,./-]/.test(s)) return s;
  return `'${s.replace(/'/g, `'"'"'`)}'`;
}

/** Value at `a.b[0].c`, or undefined. */
export function lookup(vars: unknown, key: string): unknown {
  if (!/^[^.[\]\s]+(\.[^.[\]\s]+|\[\d+\])*$/.test(key)) return undefined;
  let cur: unknown = vars;
  for (const m of key.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) {
    if (m[2] !== undefined) {
      if (!Array.isArray(cur)) return undefined;
      cur = cur[Number(m[2])];
    } else {
      if (!isMapping(cur) || !Object.hasOwn(cur, m[1]!)) return undefined;
      cur = cur[m[1]!];
    }
  }
  return cur;
}

function flattenKeys(obj: Record<string, unknown>, prefix = ''): string[] {
  return Object.entries(obj).flatMap(([k, v]) => {
    const key = prefix ? `${prefix}.${k}` : k;
    return isMapping(v) ? [key, ...flattenKeys(v, key)] : [key];
  });
}

// ---------------------------------------------------------------------------------------------

/** Project-relative posix path without `./` or a trailing slash (DVC compares paths this way). */
export function normalize(p: string): string {
  const n = path.posix.normalize(p.replace(/\\/g, '/'));
  return n.length > 1 ? n.replace(/\/+$/, '') : n;
}

function assertUnique(items: string[], field: string, fail: (reason: string) => never): void {
  const seen = new Set<string>();
  for (const i of items) {
    if (seen.has(i)) fail(`\`${field}\` lists '${i}' twice`);
    seen.add(i);
  }
}

function didYouMean(word: string, candidates: string[]): string {
  const c = closest(word, candidates);
  return c ? ` (did you mean '${c}'?)` : '';
}
