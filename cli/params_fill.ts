/**
 * Bringing an existing params.yaml up to date when tagseg gains a stage or a key: every key is
 * required (so `dvc params diff` sees everything), so a params.yaml written by an older tagseg
 * lacks the new stage's section or the new key. `fillMissingSections` appends each missing
 * top-level section with its default text, comments included, then adds each key a present
 * section lacks with its default value; what the user wrote keeps its values.
 */
import * as fs from 'node:fs/promises';
import YAML from 'yaml';
import { TagsegError } from '../pipeline/errors.js';
import { writeFileAtomic } from '../pipeline/fsutil.js';
import { DEFAULT_PARAMS_YAML, validateParams } from '../stages/params.js';

/** Top-level sections of a params text, each with its lines up to the next top-level key. */
export function sectionBlocks(text: string): Map<string, string> {
  const blocks = new Map<string, string>();
  let name: string | undefined;
  let lines: string[] = [];
  const flush = () => {
    if (name) blocks.set(name, `${lines.join('\n').replace(/\n+$/, '')}\n`);
  };
  for (const line of text.split('\n')) {
    const key = /^([A-Za-z_][\w-]*):/.exec(line)?.[1];
    if (key) {
      flush();
      name = key;
      lines = [line];
    } else if (name) {
      lines.push(line);
    }
  }
  flush();
  return blocks;
}

/** Appends the default text of every section `file` lacks; returns their names (none: file untouched). */
export async function fillMissingSections(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new TagsegError('cannot read params file', { file, cause: err });
  }
  const have = YAML.parse(text) as Record<string, unknown> | null;
  const missing = [...sectionBlocks(DEFAULT_PARAMS_YAML)].filter(([k]) => !have || !(k in have));
  const withSections = missing.length === 0 ? text : `${text.replace(/\n*$/, '\n')}${missing.map(([, block]) => block).join('')}`;
  const keys = fillMissingKeys(withSections);
  if (missing.length === 0 && keys.added.length === 0) return [];
  validateParams(YAML.parse(keys.text), file); // a file broken in other ways still fails, naming the key
  await writeFileAtomic(file, keys.text);
  return [...missing.map(([k]) => k), ...keys.added];
}

/** Adds every default key that a present section lacks (dotted names returned); the text is untouched when none. */
export function fillMissingKeys(text: string): { text: string; added: string[] } {
  const doc = YAML.parseDocument(text);
  const added: string[] = [];
  const walk = (defaults: Record<string, unknown>, at: string[]) => {
    for (const [k, v] of Object.entries(defaults)) {
      const p = [...at, k];
      if (!doc.hasIn(p)) {
        doc.setIn(p, v);
        added.push(p.join('.'));
      } else if (isObject(v) && YAML.isMap(doc.getIn(p))) walk(v, p);
    }
  };
  walk(YAML.parse(DEFAULT_PARAMS_YAML) as Record<string, unknown>, []);
  return { text: added.length === 0 ? text : doc.toString(), added };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
