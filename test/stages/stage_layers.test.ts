/**
 * Layers read top-down (issue 24 item 4): a stage folder (stages/<name>/) never imports another
 * stage's folder; what several stages share lives below them (maps/, nn/, data/, ops/, eval/metrics)
 * and a stage reaches another stage's results only through artifacts. stages/index.ts, the
 * registry above every stage, is not in a stage folder.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');

/** Relative specifiers of static imports, re-exports, side-effect and dynamic imports. */
function importSpecifiers(text: string): string[] {
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"]+)\1/g;
  return [...text.matchAll(re)].map((m) => m[2]);
}

/** `stages/<a>/... imports stages/<b>/...` for every cross-stage import among `files` (project-relative paths). */
export function crossStageImports(files: { path: string; text: string }[]): string[] {
  const out: string[] = [];
  for (const f of files) {
    const own = /^stages\/([^/]+)\//.exec(f.path)?.[1];
    if (!own) continue;
    for (const spec of importSpecifiers(f.text)) {
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(f.path), spec));
      const other = /^stages\/([^/]+)\//.exec(target)?.[1];
      if (other && other !== own) out.push(`${f.path} imports ${target}`);
    }
  }
  return out;
}

async function stageFiles(): Promise<{ path: string; text: string }[]> {
  const entries = await fs.readdir(path.join(root, 'stages'), { recursive: true, withFileTypes: true });
  const files = entries.filter((e) => e.isFile() && /\.(ts|js|mjs)$/.test(e.name));
  return Promise.all(files.map(async (e) => {
    const abs = path.join(e.parentPath, e.name);
    return { path: path.relative(root, abs).split(path.sep).join('/'), text: await fs.readFile(abs, 'utf8') };
  }));
}

describe('layers', () => {
  it('no stage folder imports another stage folder', async () => {
    const files = await stageFiles();
    expect(files.filter((f) => f.path.startsWith('stages/cam/')).length).toBeGreaterThan(2);
    expect(crossStageImports(files)).toEqual([]);
  });

  it('the check catches an injected cross-stage import, static or dynamic, and allows the registry and lower layers', () => {
    const injected = [
      { path: 'stages/contrast/x.ts', text: "import { walkImage } from '../affinity/infer.js';\nimport { a } from '../../maps/f16.js';" },
      { path: 'stages/audit/report/y.js', text: "const m = await import('../../segment/net.js');" },
      { path: 'stages/cam/z.ts', text: "export { b } from './net.js';\nimport '../cam/train.js';" },
      { path: 'stages/index.ts', text: "const l = () => import('./cam/index.js');" },
    ];
    expect(crossStageImports(injected)).toEqual([
      'stages/contrast/x.ts imports stages/affinity/infer.js',
      'stages/audit/report/y.js imports stages/segment/net.js',
    ]);
  });
});
