/**
 * The layers read top down (README "Layers"): cli/ (commands) stands on stages/, which stand on the
 * core (pipeline/, data/, nn/, ops/, eval/). Nothing below cli/ imports it, and the core imports no
 * stage: a static, dynamic or re-exporting import that climbs a layer fails here.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const CORE = ['pipeline', 'data', 'nn', 'ops', 'maps', 'eval'];
/** Folder -> the top-level folders its files must not import. */
const FORBIDDEN: Record<string, string[]> = Object.fromEntries([
  ...CORE.map((d) => [d, ['cli', 'stages']]),
  ['stages', ['cli']],
]);

/**
 * Relative import specifiers of a source text: `from '..'`, `import '..'`, `import('..')`.
 * `import type` is left out: it is erased at run time (the core names the `Params` type that
 * stages/params.ts assembles), so it is no dependency of what runs.
 */
function importSpecifiers(text: string): string[] {
  text = text.replace(/^\s*import\s+type\s[^;]*;/gm, '');
  const re = /(?:\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"]+)\1/g;
  return [...text.matchAll(re)].map((m) => m[2]!);
}

/** The imports of `file` (project-relative) that climb into a folder its layer must not import. */
function climbing(file: string, text: string): string[] {
  const banned = FORBIDDEN[file.split('/')[0]!] ?? [];
  return importSpecifiers(text).filter((s) => banned.includes(path.posix.join(path.posix.dirname(file), s).split('/')[0]!)).map((s) => `${file}: ${s}`);
}

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const rel = path.posix.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sources(rel)));
    else if (/\.(ts|mts|mjs|js)$/.test(e.name)) out.push(rel);
  }
  return out;
}

describe('layers', () => {
  it('no core or stage file imports cli/, and no core file imports stages/', async () => {
    const files = (await Promise.all(Object.keys(FORBIDDEN).map(sources))).flat();
    expect(files.length).toBeGreaterThan(100);
    const hits: string[] = [];
    for (const f of files) hits.push(...climbing(f, await fs.readFile(f, 'utf8')));
    expect(hits).toEqual([]);
  });

  it('sees a climbing import in each form, and lets the allowed directions through (control)', () => {
    expect(climbing('pipeline/x.ts', "import { repro } from '../cli/dag.js';")).toEqual(['pipeline/x.ts: ../cli/dag.js']);
    expect(climbing('stages/refine/x.ts', "const m = await import('../../cli/main.js');")).toEqual(['stages/refine/x.ts: ../../cli/main.js']);
    expect(climbing('ops/x.ts', "export { a } from '../stages/cam/f16.js';")).toEqual(['ops/x.ts: ../stages/cam/f16.js']);
    expect(climbing('data/x.ts', "import '../cli/workspace.js';")).toEqual(['data/x.ts: ../cli/workspace.js']);
    expect(climbing('stages/refine/x.ts', "import { a } from '../cam/f16.js';\nimport { b } from '../../pipeline/arrow.js';")).toEqual([]);
    expect(climbing('cli/x.ts', "import { a } from '../stages/index.js';")).toEqual([]);
    expect(climbing('pipeline/x.ts', "import type { Params } from '../stages/params.js';")).toEqual([]);
    expect(climbing('pipeline/x.ts', "import { type Params, defaultParams } from '../stages/params.js';")).toEqual(['pipeline/x.ts: ../stages/params.js']);
  });
});
