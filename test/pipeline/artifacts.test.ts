/**
 * Artifacts are named once (pipeline/artifacts.ts): each stage's io() outputs are exactly the
 * artifacts the table says it produces, its reads are artifacts of other stages (or the dataset),
 * dvc.yaml agrees with the table, and no product code retypes an artifact's path as a literal.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ARTIFACTS, type Artifact, artifactsOf } from '../../pipeline/artifacts.js';
import { type DvcStage, loadDvcYaml, normalize } from '../../cli/dvcfile.js';
import { type Params, loadParams } from '../../stages/params.js';
import type { Stage } from '../../pipeline/stage.js';
import { loadStages } from '../../stages/index.js';
import { declaredColumns } from '../helpers/schema.js';

const TABLE = Object.values(ARTIFACTS as Record<string, Artifact>);
const PRODUCER = new Map(TABLE.map((a) => [a.path, a.stage]));
const PRODUCT_DIRS = ['bin', 'cli', 'data', 'eval', 'maps', 'nn', 'ops', 'pipeline', 'stages'];

let params: Params;
let stages: Stage[];
let dvc: DvcStage[];
const WRITTEN = new Set<string>();
beforeAll(async () => {
  params = await loadParams('params.yaml');
  stages = await loadStages();
  dvc = (await loadDvcYaml('.', params as unknown as Record<string, unknown>)).stages;
  for (const st of dvc) for (const o of [...st.outs, ...st.metrics, ...st.plots]) WRITTEN.add(o.path);
});

/** What a stage's io() says it writes, against the table (empty = they agree); `written`: every path a dvc.yaml stage writes. */
function outputMismatches(s: Stage, p: Params, written: Set<string> = WRITTEN): string[] {
  const io = s.io(p);
  const sorted = (xs: string[]) => [...xs].map(normalize).sort();
  const problems: string[] = [];
  const check = (what: string, declared: string[], table: string[]) => {
    if (JSON.stringify(sorted(declared)) !== JSON.stringify(sorted(table))) problems.push(`${what}: io() ${JSON.stringify(sorted(declared))}, table ${JSON.stringify(sorted(table))}`);
  };
  check('writes', io.writes, [...artifactsOf(s.name, 'table'), ...artifactsOf(s.name, 'model'), ...artifactsOf(s.name, 'dir')]);
  check('metrics', io.metrics, artifactsOf(s.name, 'metrics'));
  check('plots', io.plots, artifactsOf(s.name, 'plots'));
  for (const r of io.reads.map(normalize)) {
    if (r === normalize(p.dataset.root)) continue; // the dataset (synth writes the synthetic one)
    const producer = PRODUCER.get(r);
    // A user's input (the dataset, review files) is no stage's output; anything a stage writes must be in the table.
    if (!producer && [...written].some((w) => r === w || r.startsWith(`${w}/`))) problems.push(`reads '${r}', a stage's output that is not in the artifacts table`);
    else if (producer === s.name) problems.push(`reads its own output '${r}'`);
  }
  return problems;
}

/** Quoted string literals in `text`'s code (comments removed) that are an artifact's path, or start with it and '/'. */
function artifactLiterals(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const found: string[] = [];
  for (const a of TABLE) {
    const esc = a.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    if (new RegExp(`['"\`]${esc}(['"\`]|/)`).test(code)) found.push(a.path);
  }
  return found;
}

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const d of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, d.name);
    if (d.isDirectory()) out.push(...(await sources(p)));
    else if (/\.(ts|mjs|js)$/.test(d.name)) out.push(p);
  }
  return out;
}

describe('the artifacts table', () => {
  it('paths are unique and every producer is a dvc.yaml stage', () => {
    expect(new Set(TABLE.map((a) => a.path)).size).toBe(TABLE.length);
    const names = new Set(dvc.map((s) => s.name));
    expect(TABLE.filter((a) => !names.has(a.stage))).toEqual([]);
  });

  it("each stage's io() writes exactly its artifacts and reads only other stages' artifacts", () => {
    expect(stages.length).toBe(11);
    for (const s of stages) expect(outputMismatches(s, params), s.name).toEqual([]);
  });

  it('the io() comparison catches a stray output and an unknown read (control)', () => {
    const cam = stages.find((s) => s.name === 'cam')!;
    const broken: Stage = { ...cam, io: (p) => ({ ...cam.io(p), writes: [...cam.io(p).writes, 'cache/extra.arrow'], reads: [...cam.io(p).reads, 'cache/cams.arrow', 'x.arrow', 'cache/other.arrow'] }) };
    // own output 'cache/cams.arrow'; 'x.arrow' is a user input (fine); 'cache/other.arrow' a stage output missing from the table
    expect(outputMismatches(broken, params, new Set([...WRITTEN, 'cache/other.arrow'])).map((m) => m.split(/[: ]/)[0])).toEqual(['writes', 'reads', 'reads']);
  });

  it("dvc.yaml's outs, metrics and plots are the table's, and artifact deps come from their producer", () => {
    for (const s of dvc) {
      if (s.name === 'synth') continue; // writes the synthetic dataset (dataset.root), not an artifact
      const outs = [...s.outs, ...s.metrics, ...s.plots].map((o) => o.path).sort();
      expect(outs, s.name).toEqual(artifactsOf(s.name).sort());
      for (const d of s.deps.filter((x) => PRODUCER.has(x))) expect(PRODUCER.get(d), `${s.name} dep ${d}`).not.toBe(s.name);
    }
  });

  it('no product code retypes an artifact path', async () => {
    expect(artifactLiterals("const x = 'cache/images.arrow';")).toEqual(['cache/images.arrow']); // control
    expect(artifactLiterals('const f = `reports/audit/index.html`;')).toEqual(['reports/audit']); // control
    expect(artifactLiterals('/** in `models/cam/train/` */\n// see `models/cam`\nconst x = 1;')).toEqual([]); // comments are not code
    const hits: string[] = [];
    for (const dir of PRODUCT_DIRS) {
      for (const f of await sources(dir)) {
        if (f === path.join('pipeline', 'artifacts.ts')) continue;
        for (const a of artifactLiterals(await fs.readFile(f, 'utf8'))) hits.push(`${f}: ${a}`);
      }
    }
    expect(hits).toEqual([]);
  });

  it('every table names its columns once (schema: a ColumnSpec[] or a function of the dtype); the e2e run checks written tables against it', async () => {
    const tables = TABLE.filter((a) => a.kind === 'table');
    expect(tables.length).toBeGreaterThanOrEqual(8);
    for (const a of tables) expect((await declaredColumns(a)).length, a.path).toBeGreaterThan(2);
    // control: a schema naming a missing export fails
    await expect(declaredColumns({ ...tables[0]!, schema: 'maps/cams_table.ts#noSuchColumns' })).rejects.toThrow(/exports no ColumnSpec/);
    expect(TABLE.filter((a) => a.kind !== 'table' && a.schema !== undefined)).toEqual([]);
  });
});
