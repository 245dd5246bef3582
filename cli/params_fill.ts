/**
 * Bringing an existing params.yaml up to date when tagseg gains a stage: every key is required
 * (so `dvc params diff` sees everything), so a params.yaml written by an older tagseg lacks the
 * new stage's section. `fillMissingSections` appends each missing top-level section with its
 * default text, comments included, and leaves everything the user wrote untouched.
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
  if (missing.length === 0) return [];
  const out = `${text.replace(/\n*$/, '\n')}${missing.map(([, block]) => block).join('')}`;
  validateParams(YAML.parse(out), file); // a file broken in other ways still fails, naming the key
  await writeFileAtomic(file, out);
  return missing.map(([k]) => k);
}
