import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * First interpreter that can import `modules` ($TAGSEG_PYTHON, the .cache/py venv that
 * `npm test`'s pretest makes, python3), or why none could: tests skip with that reason printed.
 */
export function findPython(modules: string[]): { python?: string; why: string } {
  const venv = path.join(REPO, '.cache/py/bin/python');
  const candidates = [process.env.TAGSEG_PYTHON, existsSync(venv) ? venv : undefined, 'python3'].filter((p): p is string => !!p);
  const tried: string[] = [];
  for (const python of candidates) {
    const r = spawnSync(python, ['-c', `import ${modules.join(', ')}`], { encoding: 'utf8', timeout: 30_000 });
    if (r.status === 0) return { python, why: '' };
    tried.push(`${python}: ${r.error?.message ?? r.stderr.trim().split('\n').pop()}`);
  }
  return { why: `no Python with ${modules.join(', ')} (run \`node scripts/python-env.mjs\`); tried ${tried.join('; ')}` };
}
