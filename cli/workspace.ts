/**
 * A workspace is a project directory whose code is the repo's (symlinks) but whose params.yaml,
 * dvc.yaml, cache/, models/ and metrics/ are its own: one per experiment or dataset (e.g.
 * runs/msrc next to the synthetic default), like a DVC experiment's working tree.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { TagsegError } from '../pipeline/errors.js';
import { ensureDir, exists, writeFileAtomic } from '../pipeline/fsutil.js';
import { loadParams, validateParams, writeOverrides } from '../stages/params.js';
import { presetOverrides } from './preset.js';

/** The repository this code runs from. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** What a workspace links to: everything dvc.yaml's cmds and code deps need. */
const LINKED = ['package.json', 'package-lock.json', 'native', 'node_modules', 'bin', 'pipeline', 'data', 'nn', 'ops', 'maps', 'eval', 'stages', 'cli'];

/**
 * Make workspace `dir`: links to the code, the repo's dvc.yaml, and its params.yaml with `preset`
 * (a name in presets/ or a YAML file) applied, then `overrides` (`key=value`, winning over it).
 * The preset and overrides are validated before anything is created.
 */
export async function createWorkspace(dir: string, overrides: string[] = [], preset?: string): Promise<string> {
  const target = path.resolve(dir);
  if (await exists(path.join(target, 'params.yaml'))) {
    throw new TagsegError('already a tagseg project (params.yaml exists)', { file: target, hint: 'use it as it is (--root), or give `tagseg workspace` a new folder name' });
  }
  const st = await fs.stat(target).catch(() => null);
  if (st && !st.isDirectory()) {
    throw new TagsegError('exists and is not a folder', { file: target, hint: 'give `tagseg workspace` a new folder name (or an existing empty folder)' });
  }
  const entries = st ? new Set(await fs.readdir(target)) : new Set<string>();
  const inTheWay = [...LINKED, 'dvc.yaml'].filter((n) => entries.has(n));
  if (inTheWay.length) {
    throw new TagsegError(`is not empty: ${inTheWay.join(', ')} would be overwritten`, { file: target, hint: 'give `tagseg workspace` a new folder name (or an empty folder)' });
  }
  const params = await fs.readFile(path.join(REPO_ROOT, 'params.yaml'), 'utf8');
  const sets = [...(preset ? await presetOverrides(preset, YAML.parse(params)) : []), ...overrides];
  validateParams(YAML.parse(params), 'params.yaml', sets);
  await ensureDir(target);
  for (const name of LINKED) {
    const src = path.join(REPO_ROOT, name);
    if (await exists(src)) await fs.symlink(path.relative(target, src), path.join(target, name));
  }
  await writeFileAtomic(path.join(target, 'dvc.yaml'), await fs.readFile(path.join(REPO_ROOT, 'dvc.yaml')));
  const header = preset ? `# tagseg workspace --preset ${preset}: its values under the --set overrides\n` : '';
  await writeFileAtomic(path.join(target, 'params.yaml'), header + params);
  if (sets.length) await writeOverrides(path.join(target, 'params.yaml'), sets);
  // review/decisions.csv and the corrections folder: segment deps, so they must exist.
  const { ensureReviewFiles } = await import('../data/review.js');
  await ensureReviewFiles(target, (await loadParams(path.join(target, 'params.yaml'))).dataset.corrections);
  return target;
}
