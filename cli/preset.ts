/**
 * Presets: a params file holding only the keys it changes (presets/<name>.yaml, or any YAML
 * file), applied to a workspace's params.yaml as a base under the user's --set overrides. A
 * preset may start from another (`_base_: photos`, or a path relative to it), as mmseg's configs
 * do: the base's keys first, its own win. It is validated against the params schema first, errors
 * naming the preset.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import { isPlainObject, setIn, validateParams } from '../stages/params.js';

/** The presets shipped with tagseg. */
export const PRESETS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'presets');

/** A bare name (`photos`) is presets/<name>.yaml; anything with a slash or a .yaml/.yml ending is a path. */
export function presetFile(spec: string): string {
  return /[/\\]|\.ya?ml$/i.test(spec) ? path.resolve(spec) : path.join(PRESETS_DIR, `${spec}.yaml`);
}

async function readPreset(spec: string): Promise<{ file: string; data: Record<string, unknown> }> {
  const file = presetFile(spec);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    const names = (await fs.readdir(PRESETS_DIR).catch(() => [])).filter((f) => f.endsWith('.yaml')).map((f) => f.slice(0, -5));
    const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? `preset not found ('${spec}')` : `cannot read the preset: ${messageOf(err)}`;
    throw new TagsegError(why, { file, hint: `presets: ${names.join(', ') || 'none'} (presets/), or a path to a YAML file` });
  }
  const doc = YAML.parseDocument(text);
  if (doc.errors.length) throw new TagsegError(`invalid YAML: ${doc.errors[0]!.message}`, { file });
  const data: unknown = doc.toJS();
  if (!isPlainObject(data) || Object.keys(data).length === 0) {
    throw new TagsegError('a preset must be a mapping of params.yaml sections (e.g. cam: {lr: 0.0001})', { file });
  }
  return { file, data };
}

/** `spec` with its `_base_` chain merged under it; `seen`: the files that led here (a cycle is an error). */
async function resolvePreset(spec: string, seen: readonly string[] = []): Promise<{ file: string; data: Record<string, unknown> }> {
  const { file, data } = await readPreset(spec);
  if (seen.includes(file)) throw new TagsegError(`_base_ makes a cycle: ${[...seen, file].join(' -> ')}`, { file });
  const { _base_: base, ...own } = data;
  if (base === undefined) return { file, data: own };
  if (typeof base !== 'string' || base === '') throw new TagsegError('_base_ must be one preset: a name in presets/ or a path relative to this file', { file });
  const parent = await resolvePreset(/[/\\]|\.ya?ml$/i.test(base) ? path.resolve(path.dirname(file), base) : base, [...seen, file]);
  const merged = structuredClone(parent.data);
  for (const [keyPath, value] of leaves(own)) setIn(merged, keyPath, value);
  return { file, data: merged };
}

/** Every leaf of a nested mapping as [dotted path, value]; lists are leaves. */
function leaves(data: Record<string, unknown>, prefix: string[] = []): [string[], unknown][] {
  return Object.entries(data).flatMap(([k, v]) => (isPlainObject(v) && Object.keys(v).length ? leaves(v, [...prefix, k]) : [[[...prefix, k], v]]));
}

/**
 * The preset `spec` as `key=value` overrides (values as JSON, which YAML reads back unchanged),
 * after checking that `base` (a parsed params.yaml) with the preset applied is valid params.
 */
export async function presetOverrides(spec: string, base: unknown): Promise<string[]> {
  const { file, data } = await resolvePreset(spec);
  const merged = structuredClone(isPlainObject(base) ? base : {});
  const entries = leaves(data);
  for (const [keyPath, value] of entries) setIn(merged, keyPath, value);
  const relative = path.relative(process.cwd(), file);
  validateParams(merged, relative.startsWith('..') ? file : relative);
  return entries.map(([keyPath, value]) => `${keyPath.join('.')}=${JSON.stringify(value)}`);
}
