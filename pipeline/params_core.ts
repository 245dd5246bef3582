/**
 * params.yaml machinery the stages stand on: loading with `--set` overrides, validation against a
 * set of sections, in-place edits that keep comments (what `dvc exp run -S` does), and stable
 * hashes of parameter subsets. Which sections exist is not known here: a ParamSpec names them.
 * stages/params.ts (the registry the CLI uses) validates every section; a stage run validates
 * the shared sections and its own (`stageSpec`), so its code deps hold its own params file only.
 *
 * Why strict: a typo such as `ingest.sise: 256` would otherwise be ignored silently and the run
 * would use the old value while DVC reports the param as changed. Every key is required (no
 * defaults) because DVC reads params.yaml itself: a value that exists only as a default in code
 * is invisible to `dvc params diff` and to the lock fingerprint.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import YAML, { isCollection, isScalar } from 'yaml';
import { z } from 'zod';
import { TagsegError, messageOf } from './errors.js';
import { writeFileAtomic } from './fsutil.js';
import { type Sections, unwrap } from './params_spec.js';
import { SHARED_SECTIONS } from './shared_params.js';

/** Validated params: section name -> values. */
export type ParamValues = Record<string, unknown>;

/**
 * The sections to validate. partial: other top-level sections pass through unchecked (a stage run
 * checks only what it reads; the full registry is not loaded on its path).
 */
export interface ParamSpec {
  sections: Sections;
  zod: z.ZodObject;
  partial: boolean;
}

export function paramSpec(sections: Sections, partial = false): ParamSpec {
  return { sections, zod: partial ? z.looseObject(sections) : z.strictObject(sections), partial };
}

/** What a stage run validates: the shared sections (seed, dataset, synth) and the stages' own. */
export function stageSpec(...own: Sections[]): ParamSpec {
  return paramSpec(Object.assign({}, SHARED_SECTIONS, ...own) as Sections, true);
}

// ---------------------------------------------------------------------------------------------
// Loading and validation

/**
 * Read, apply `overrides` (`a.b=value`, value parsed as YAML: `dataset.splits=[train,test]`) and
 * validate against `spec`. Errors name the file (or `--set` for a bad override) and the dotted key.
 */
export async function readParams(spec: ParamSpec, file: string, overrides: string[] = []): Promise<ParamValues> {
  const label = displayPath(file);
  const text = await readText(file, label);
  const raw = parseYamlText(text, label);
  return applyAndValidate(spec, raw, label, overrides);
}

/** Validate an already parsed params object against `spec`; `source` names it in error messages. */
export function checkParams(spec: ParamSpec, raw: unknown, source = 'params.yaml', overrides: string[] = []): ParamValues {
  return applyAndValidate(spec, raw, source, overrides);
}

/** One parsed `--set key=value`. */
export interface Override {
  /** As given on the command line. */
  raw: string;
  key: string;
  path: string[];
  /** The value text after `=`. */
  text: string;
  value: unknown;
}

/**
 * Parse and check one override against the schema. The key must be a known dotted path.
 * Where the schema wants a string, a value YAML would read as a number/boolean (`2007`, `yes`)
 * is kept as its text: `--set dataset.train_split=2007` means the split named "2007".
 */
export function parseOverrideIn(spec: ParamSpec, raw: string): Override {
  const eq = raw.indexOf('=');
  if (eq <= 0) {
    throw new TagsegError(`'${raw}' is not key=value`, { file: '--set', hint: 'e.g. --set ingest.size=256' });
  }
  const key = raw.slice(0, eq).trim();
  const text = raw.slice(eq + 1);
  const keyPath = key.split('.');
  if (keyPath.some((k) => k === '')) throw new TagsegError(`'${key}' is not a dotted key`, { file: '--set' });
  const leaf = schemaAt(spec.zod, keyPath);
  const unchecked = spec.partial && !Object.hasOwn(spec.sections, keyPath[0]!);
  if (!leaf && !unchecked) {
    const suggestion = suggestPath(spec, keyPath);
    throw new TagsegError(`unknown key '${key}'${suggestion ? ` (did you mean '${suggestion}'?)` : ''}`, { file: '--set' });
  }
  let value: unknown;
  try {
    value = YAML.parse(text);
  } catch (err) {
    throw new TagsegError(`${key}: value '${text}' is not valid YAML: ${firstLine(messageOf(err))}`, { file: '--set' });
  }
  if (leaf && unwrap(leaf) instanceof z.ZodString && (typeof value === 'number' || typeof value === 'boolean')) value = text.trim();
  return { raw, key, path: keyPath, text, value };
}

function applyAndValidate(spec: ParamSpec, raw: unknown, source: string, overrideArgs: string[]): ParamValues {
  const overrides = overrideArgs.map((o) => parseOverrideIn(spec, o));
  let data = raw === null || raw === undefined ? raw : structuredClone(raw);
  for (const o of overrides) {
    if (!isPlainObject(data)) data = {};
    setIn(data as Record<string, unknown>, o.path, o.value);
  }
  const result = spec.zod.safeParse(data);
  if (result.success) return result.data;
  // Unknown keys first: a typo is the usual root cause of the other complaints.
  const issues = [...result.error.issues].sort((a, b) => rank(a.code) - rank(b.code));
  // A typo `ingest.sise` also makes `ingest.size` missing: report the typo only.
  const suggested = new Set(
    issues.flatMap((i) => (i.code === 'unrecognized_keys' ? i.keys.map((k) => suggestPath(spec, [...i.path.map(String), k])) : [])),
  );
  const relevant = issues.filter((i) => !(getIn(data, i.path) === undefined && suggested.has(dotted(i.path))));
  const messages = relevant.map((issue) => {
    // Blame --set when the offending key lies inside a value that an override wrote.
    const full = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]!] : issue.path;
    const fromOverride = overrides.some((o) => startsWith(full, o.path));
    return { where: fromOverride ? '--set' : source, text: describeIssue(spec, issue, data) };
  });
  const first = messages[0]!;
  const rest = messages.slice(1).map((m) => `${m.where}: ${m.text}`);
  throw new TagsegError(first.text + (rest.length ? `\n${rest.join('\n')}` : ''), { file: first.where });
}

const rank = (code: string) => (code === 'unrecognized_keys' ? 0 : 1);

type Issue = z.core.$ZodIssue;

function describeIssue(spec: ParamSpec, issue: Issue, data: unknown): string {
  const where = dotted(issue.path);
  const prefix = where ? `${where}: ` : '';
  const value = getIn(data, issue.path);
  if (value === undefined && issue.code !== 'unrecognized_keys') {
    const expected = issue.code === 'invalid_value' ? `one of ${issue.values.map(String).join(' | ')}` : article(issue.code === 'invalid_type' ? issue.expected : '');
    if (!where) return `empty file (expected ${expected})`;
    // A section or key missing is what a params.yaml from before a stage or key existed looks like.
    const fill = ` -- \`tagseg params --fill\` adds it with its default${issue.path.length === 1 ? 's' : ''}`;
    return `missing key '${where}' (expected ${expected})${fill}`;
  }
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys
        .map((k) => {
          const full = [...issue.path.map(String), k];
          const suggestion = suggestPath(spec, full);
          return `unknown key '${dotted(full)}'${suggestion ? ` (did you mean '${suggestion}'?)` : ''}`;
        })
        .join('; ');
    case 'invalid_type': {
      return `${prefix}expected ${article(issue.expected)}, got ${describeValue(value)}`;
    }
    case 'invalid_value':
      return `${prefix}expected one of ${issue.values.map(String).join(' | ')}, got ${describeValue(value)}`;
    case 'too_small':
    case 'too_big': {
      const small = issue.code === 'too_small';
      const bound = small ? (issue as { minimum: number | bigint }).minimum : (issue as { maximum: number | bigint }).maximum;
      const op = small ? (issue.inclusive ? '>=' : '>') : issue.inclusive ? '<=' : '<';
      if (issue.origin === 'string') {
        return Number(bound) === 1 && small ? `${prefix}expected a non-empty string` : `${prefix}expected a string of length ${op} ${bound}`;
      }
      if (issue.origin === 'array') return `${prefix}expected a list of length ${op} ${bound}, got ${describeValue(value)}`;
      return `${prefix}expected a number ${op} ${bound}, got ${describeValue(value)}`;
    }
    default:
      return `${prefix}${issue.message}`;
  }
}

function article(expected: string): string {
  const names: Record<string, string> = {
    object: 'a mapping',
    array: 'a list',
    string: 'a string',
    number: 'a number',
    int: 'an integer',
    boolean: 'a boolean',
  };
  return names[expected] ?? (expected || 'a value');
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `a list ${flow(v)}`;
  if (typeof v === 'object') return `a mapping ${flow(v)}`;
  if (typeof v === 'string') return `string ${JSON.stringify(v)}`;
  return `${typeof v} ${String(v)}`;
}

// ---------------------------------------------------------------------------------------------
// Editing params.yaml in place

/**
 * Apply `overrides` to params.yaml and rewrite it atomically, keeping comments and layout: each
 * existing value is spliced in place (padding keeps aligned comments aligned); only a key that
 * does not exist yet makes the YAML library re-render the file. The result is validated before
 * anything is written, so a bad `--set` leaves params.yaml untouched. Returns the new params.
 */
export async function editParams(spec: ParamSpec, file: string, overrides: string[]): Promise<ParamValues> {
  const text = await editParamsText(spec, file, overrides);
  const written = checkParams(spec, parseYamlText(text, displayPath(file)), displayPath(file));
  await writeFileAtomic(file, text);
  return written;
}

/** params.yaml's text with `overrides` spliced in (comments and layout kept); the file is not written. */
export async function editParamsText(spec: ParamSpec, file: string, overrides: string[]): Promise<string> {
  const label = displayPath(file);
  let text = await readText(file, label);
  // Throws (naming --set or the file) before we touch anything.
  const expected = applyAndValidate(spec, parseYamlText(text, label), label, overrides);
  for (const o of overrides.map((x) => parseOverrideIn(spec, x))) text = spliceValue(text, o, label);
  const written = checkParams(spec, parseYamlText(text, label), label);
  if (stableStringify(written) !== stableStringify(expected)) {
    // Defensive: the splice must mean exactly what the overrides mean.
    throw new TagsegError('internal error: editing params.yaml did not give the expected values', { file: label });
  }
  return text;
}

function spliceValue(text: string, o: Override, label: string): string {
  const doc = YAML.parseDocument(text);
  const node = doc.getIn(o.path, true);
  const rendered = renderInline(o.value);
  if ((isScalar(node) || isCollection(node)) && node.range && rendered !== undefined) {
    const [start, end] = node.range;
    // Keep a trailing comment in its column: eat or add spaces after the value.
    let after = text.slice(end);
    const delta = rendered.length - (end - start);
    const spaces = /^ +(?=#)/.exec(after)?.[0].length ?? 0;
    if (spaces > 0) {
      const newSpaces = Math.max(1, spaces - delta);
      after = ' '.repeat(newSpaces) + after.slice(spaces);
    }
    return text.slice(0, start) + rendered + after;
  }
  // New key (or a value that cannot be written inline): let the YAML library place it.
  doc.setIn(o.path, doc.createNode(o.value));
  if (doc.errors.length) throw new TagsegError(`cannot set ${o.key}: ${doc.errors[0]!.message}`, { file: label });
  return doc.toString();
}

/** One-line YAML for a value, or undefined when it needs several lines. */
function renderInline(value: unknown): string | undefined {
  const out = flow(value);
  return out.includes('\n') ? undefined : out;
}

function flow(value: unknown): string {
  return YAML.stringify(value, { collectionStyle: 'flow', flowCollectionPadding: false, lineWidth: 0 }).replace(/\n$/, '');
}

// ---------------------------------------------------------------------------------------------
// Access and hashing

/** Value at a dotted key (`ingest.size`, or a whole section `ingest`); unknown -> TagsegError. */
export function getParam(params: object, key: string): unknown {
  const keyPath = key.split('.');
  const value = getIn(params, keyPath);
  if (value === undefined || key === '') {
    const suggestion = suggestIn(keyPath, params);
    throw new TagsegError(`unknown param '${key}'${suggestion ? ` (did you mean '${suggestion}'?)` : ''}`, { file: 'params.yaml' });
  }
  return value;
}

/**
 * Short stable hash (16 hex chars of sha256) of the values at `keys`. Independent of the order of
 * `keys` and of object key order in the values, so it only changes when a listed value changes.
 */
export function paramsHash(params: object, keys: string[]): string {
  const picked: Record<string, unknown> = {};
  for (const k of [...new Set(keys)].sort()) picked[k] = getParam(params, k);
  return createHash('sha256').update(stableStringify(picked)).digest('hex').slice(0, 16);
}

/** JSON with object keys sorted at every level: equal values give equal strings. */
export function stableStringify(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (isPlainObject(v)) {
      const sorted: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) sorted[k] = v[k];
      return sorted;
    }
    return v;
  });
}

// ---------------------------------------------------------------------------------------------
// Small helpers shared with dvcfile.ts / dag.ts

/** The candidate closest to `word` by edit distance, if it is close enough to be a likely typo. */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = levenshtein(word, c);
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  const limit = Math.max(2, Math.floor(word.length / 3));
  return best !== undefined && bestD <= limit && bestD < word.length ? best : undefined;
}

function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}

/** Every dotted path `spec` knows (sections and leaves). */
export function paramKeys(spec: ParamSpec): string[] {
  const out: string[] = [];
  const walk = (schema: z.ZodType, prefix: string[]) => {
    const s = unwrap(schema);
    if (!(s instanceof z.ZodObject)) return;
    for (const [k, child] of Object.entries(s.shape as Record<string, z.ZodType>)) {
      out.push([...prefix, k].join('.'));
      walk(child, [...prefix, k]);
    }
  };
  walk(spec.zod, []);
  return out;
}

/** Suggest a known dotted path for an unknown one: a sibling spelled alike, else the same leaf name elsewhere. */
function suggestPath(spec: ParamSpec, keyPath: string[]): string | undefined {
  const parent = keyPath.slice(0, -1);
  const last = keyPath[keyPath.length - 1]!;
  const parentSchema = schemaAt(spec.zod, parent);
  const siblings = parentSchema && unwrap(parentSchema) instanceof z.ZodObject ? Object.keys((unwrap(parentSchema) as z.ZodObject).shape) : [];
  const near = closest(last, siblings);
  if (near) return [...parent, near].join('.');
  const all = paramKeys(spec);
  const sameLeaf = all.filter((k) => k.split('.').pop() === last);
  if (sameLeaf.length === 1) return sameLeaf[0];
  return closest(keyPath.join('.'), all);
}

function suggestIn(keyPath: string[], data: unknown): string | undefined {
  const parent = keyPath.slice(0, -1);
  const container = parent.length ? getIn(data, parent) : data;
  if (!isPlainObject(container)) return undefined;
  const near = closest(keyPath[keyPath.length - 1]!, Object.keys(container));
  return near ? [...parent, near].join('.') : undefined;
}

function schemaAt(schema: z.ZodType, keyPath: string[]): z.ZodType | undefined {
  let cur: z.ZodType | undefined = schema;
  for (const k of keyPath) {
    const s: z.ZodType | undefined = cur ? unwrap(cur) : undefined;
    if (!(s instanceof z.ZodObject)) return undefined;
    cur = (s.shape as Record<string, z.ZodType>)[k];
    if (!cur || !Object.hasOwn(s.shape, k)) return undefined;
  }
  return cur;
}

function getIn(data: unknown, keyPath: readonly PropertyKey[]): unknown {
  let cur: unknown = data;
  for (const k of keyPath) {
    if (Array.isArray(cur) && typeof k === 'number') cur = cur[k];
    else if (isPlainObject(cur) && typeof k === 'string' && Object.hasOwn(cur, k)) cur = cur[k];
    else return undefined;
  }
  return cur;
}

export function setIn(data: Record<string, unknown>, keyPath: string[], value: unknown): void {
  let cur = data;
  for (const k of keyPath.slice(0, -1)) {
    if (!isPlainObject(cur[k])) cur[k] = {};
    cur = cur[k] as Record<string, unknown>;
  }
  cur[keyPath[keyPath.length - 1]!] = value;
}

function startsWith(full: readonly PropertyKey[], prefix: readonly PropertyKey[]): boolean {
  return prefix.length <= full.length && prefix.every((p, i) => String(p) === String(full[i]));
}

function dotted(keyPath: readonly PropertyKey[]): string {
  return keyPath.map((k, i) => (typeof k === 'number' ? `[${k}]` : `${i ? '.' : ''}${String(k)}`)).join('');
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

/** A path as the user would write it: relative to the cwd when inside it. */
function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), path.resolve(file));
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
}

async function readText(file: string, label: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new TagsegError('file not found', { file: label, hint: '`tagseg workspace DIR` writes a params.yaml with the defaults' });
    }
    throw new TagsegError(`cannot read: ${messageOf(err)}`, { file: label, cause: err });
  }
}

function parseYamlText(text: string, label: string): unknown {
  const doc = YAML.parseDocument(text);
  if (doc.errors.length) throw new TagsegError(`invalid YAML: ${doc.errors[0]!.message}`, { file: label });
  return doc.toJS();
}
