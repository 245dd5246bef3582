/**
 * Declaring params: each key is its zod schema with its default and a one-line doc, written once
 * in the folder that owns the section (stages/<x>/params.ts; seed, dataset and synth in
 * pipeline/shared_params.ts). The default params.yaml is generated from these declarations
 * (`paramsYaml`, the doc becoming the key's comment), so no default exists twice.
 *
 * The schemas themselves still require every key (no zod `.default()` filling a gap): DVC reads
 * params.yaml, and a value that exists only in code is invisible to `dvc params diff`.
 */
import YAML from 'yaml';
import { z } from 'zod';

/** The params.yaml sections a folder owns: top-level key -> schema. */
export type Sections = Record<string, z.ZodType>;

interface KeyDoc {
  /** undefined for a group (its default is its keys' defaults). */
  value?: unknown;
  doc: string;
  /** Write whole numbers as 1.0 (scales, weights: real-valued keys). */
  float: boolean;
}

const DOCS = z.registry<KeyDoc>();

/** Column of the comments in the generated params.yaml. */
const COMMENT_COLUMN = 30;

/**
 * `schema` with its default `value` and `doc` (the params.yaml comment; '' = none). The default
 * is checked against the schema here, so a wrong default fails when its module loads.
 */
export function key<T extends z.ZodType>(schema: T, value: z.output<T>, doc = '', o: { float?: boolean } = {}): T {
  const own = schema.clone() as T; // its own instance: a schema used elsewhere keeps its own docs
  const check = own.safeParse(value);
  if (!check.success) throw new Error(`default ${JSON.stringify(value)} does not satisfy its schema: ${check.error.issues[0]?.message}`);
  DOCS.add(own, { value, doc, float: o.float ?? false });
  return own;
}

/** A nested mapping of keys (refine.crf, audit.weights) with its doc. */
export function group<S extends Record<string, z.ZodType>>(doc: string, shape: S) {
  const g = z.strictObject(shape);
  DOCS.add(g, { doc, float: false });
  return g;
}

/** Look through optional/default/nullable wrappers. */
export function unwrap(schema: z.ZodType): z.ZodType {
  let s = schema;
  while (s instanceof z.ZodOptional || s instanceof z.ZodDefault || s instanceof z.ZodNullable) {
    s = (s.def as unknown as { innerType: z.ZodType }).innerType;
  }
  return s;
}

function docOf(schema: z.ZodType): KeyDoc | undefined {
  return DOCS.get(schema) ?? (unwrap(schema) !== schema ? DOCS.get(unwrap(schema)) : undefined);
}

/** The declared defaults of `schema` (a section, a group or a key); a key without one is an error. */
export function defaultsOf(schema: z.ZodType, where = 'params'): unknown {
  const d = docOf(schema);
  if (d && 'value' in d) return structuredClone(d.value);
  const s = unwrap(schema);
  if (!(s instanceof z.ZodObject)) throw new Error(`${where} has no default: declare it with key() (pipeline/params_spec.ts)`);
  return Object.fromEntries(Object.entries(s.shape as Record<string, z.ZodType>).map(([k, v]) => [k, defaultsOf(v, `${where}.${k}`)]));
}

/** Every section's defaults as one object. */
export function sectionDefaults(sections: Sections): Record<string, unknown> {
  return Object.fromEntries(Object.entries(sections).map(([k, v]) => [k, defaultsOf(v, k)]));
}

/** The commented params.yaml of `sections`: every key with its default, its doc as the comment. */
export function paramsYaml(sections: Sections): string {
  const lines: string[] = [];
  for (const [name, schema] of Object.entries(sections)) render(lines, name, schema, '');
  return `${lines.join('\n')}\n`;
}

function render(lines: string[], name: string, schema: z.ZodType, indent: string): void {
  const d = docOf(schema);
  if (d && 'value' in d) {
    lines.push(withComment(`${indent}${name}: ${valueText(d.value, d.float)}`, d.doc));
    return;
  }
  const s = unwrap(schema);
  if (!(s instanceof z.ZodObject)) throw new Error(`params key '${name}' has no default: declare it with key() (pipeline/params_spec.ts)`);
  lines.push(withComment(`${indent}${name}:`, d?.doc ?? ''));
  for (const [k, child] of Object.entries(s.shape as Record<string, z.ZodType>)) render(lines, k, child, `${indent}  `);
}

function withComment(line: string, doc: string): string {
  if (!doc) return line;
  return `${line.length < COMMENT_COLUMN ? line.padEnd(COMMENT_COLUMN) : `${line} `}# ${doc}`;
}

/** One-line YAML (flow style, single quotes) of a default. */
function valueText(value: unknown, float: boolean): string {
  if (float) {
    const num = (x: unknown) => (typeof x === 'number' && Number.isInteger(x) ? x.toFixed(1) : valueText(x, false));
    return Array.isArray(value) ? `[${value.map(num).join(', ')}]` : num(value);
  }
  return YAML.stringify(value, { collectionStyle: 'flow', flowCollectionPadding: false, lineWidth: 0, singleQuote: true }).replace(/\n$/, '');
}

/** Per key of `S`: its default and optional doc. */
export type KeySpec<S extends Record<string, z.ZodType>> = { [K in keyof S]: readonly [z.output<S[K]>, string?] };

/**
 * Shared key schemas (training keys, CRF keys) given this section's defaults and docs: the
 * constraints live once, each section keeps its own values. `float` names real-valued keys.
 */
export function keys<S extends Record<string, z.ZodType>>(schemas: S, spec: KeySpec<S>, float: (keyof S)[] = []): S {
  const out: Record<string, z.ZodType> = {};
  for (const k of Object.keys(schemas)) out[k] = key(schemas[k]!, spec[k]![0], spec[k]![1] ?? '', { float: float.includes(k) });
  return out as S;
}
