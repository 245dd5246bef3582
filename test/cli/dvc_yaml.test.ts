/**
 * The repo's dvc.yaml is what DVC 3 accepts (its JSON Schema) and means what the code does:
 * params keys exist, every ${} resolves, no two stages write the same path, and each stage's
 * deps/outs/metrics/plots/params equal what its module declares in `io(params)`.
 * Each check is a function that is also run on a broken input, so none can pass vacuously.
 */
import { Ajv } from 'ajv';
import { existsSync, readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import YAML from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { STAGE_ENTRIES } from '../../pipeline/stage_entries.js';
import { stageCodeDeps, stageEntries } from '../../cli/code_deps.js';
import { buildDag } from '../../cli/dag.js';
import { type DvcStage, lookup, normalize, parseDvcYaml } from '../../cli/dvcfile.js';
import { loadStage } from '../../stages/index.js';
import { type Params, getParam, loadParams } from '../../stages/params.js';
import type { Stage, StageIO } from '../../pipeline/stage.js';

const SCHEMA = path.resolve('..', 'shared', 'dvc-schema', 'dvc.yaml.schema.json');
/** dvc.yaml stages that are CLI commands, not stage modules. */
const CLI_STAGES = new Set(['synth']);

let text: string;
let raw: { stages: Record<string, Record<string, unknown>> };
let params: Params;
let stages: DvcStage[];

beforeAll(async () => {
  text = await fs.readFile('dvc.yaml', 'utf8');
  raw = YAML.parse(text) as typeof raw;
  params = await loadParams('params.yaml');
  stages = parseDvcYaml(text, params).stages;
});

async function schemaValidator() {
  const schema = JSON.parse(await fs.readFile(SCHEMA, 'utf8')) as object;
  // Draft-07 (ajv 8's default); strict: false because DVC's schema uses non-standard `desc`.
  const validate = new Ajv({ strict: false, allErrors: true }).compile(schema);
  return (data: unknown) => (validate(data) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`));
}

/** params entries (strings or {params.yaml: [keys]}) that are not keys of params.yaml. */
function missingParams(dvc: typeof raw, p: Params): string[] {
  const missing: string[] = [];
  for (const [name, s] of Object.entries(dvc.stages)) {
    const keys = ((s.params as unknown[] | undefined) ?? []).flatMap((e) =>
      typeof e === 'string' ? [e] : Object.values(e as Record<string, string[]>).flat(),
    );
    for (const k of keys) {
      try {
        getParam(p, k);
      } catch {
        missing.push(`${name}: ${k}`);
      }
    }
  }
  return missing;
}

/** Every string (keys too) in a parsed YAML value: comments are not part of it. */
function strings(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v)) return v.flatMap(strings);
  if (v && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => [k, ...strings(x)]);
  return [];
}

/** `${...}` expressions in dvc.yaml that do not resolve to a value in params.yaml. */
function unresolved(dvc: unknown, p: Params): string[] {
  const exprs = strings(dvc).flatMap((t) => [...t.matchAll(/\$\{([^}]*)\}/g)].map((m) => m[1]!.trim()));
  return exprs.filter((k) => lookup(p, k) === undefined);
}

/** Differences between a dvc.yaml stage and its module's declared io + its code deps (empty = they agree). */
function ioMismatches(s: DvcStage, io: StageIO, codeDeps: string[]): string[] {
  const norm = (xs: string[]) => [...new Set(xs.map(normalize))].sort();
  const problems: string[] = [];
  const same = (what: string, dvc: string[], declared: string[]) => {
    if (JSON.stringify(dvc) !== JSON.stringify(declared)) {
      problems.push(`${what}: dvc.yaml has ${JSON.stringify(dvc)}, io() declares ${JSON.stringify(declared)}`);
    }
  };
  const code = norm(codeDeps);
  const deps = norm(s.deps);
  same('deps minus code', deps.filter((d) => !code.includes(d)), norm(io.reads));
  same('outs', norm(s.outs.map((o) => o.path)), norm(io.writes));
  same('metrics', norm(s.metrics.map((o) => o.path)), norm(io.metrics));
  same('plots', norm(s.plots.map((o) => o.path)), norm(io.plots));
  same('params', [...new Set(s.params)].sort(), [...new Set(io.params)].sort());
  return problems;
}

describe('dvc.yaml against DVC 3', () => {
  it('validates against DVC’s JSON Schema', async () => {
    const errors = (await schemaValidator())(raw);
    expect(errors).toEqual([]);
  });

  it('the schema validator rejects broken copies (so the check above can fail)', async () => {
    const check = await schemaValidator();
    const breakages: Array<(d: typeof raw) => void> = [
      (d) => delete d.stages.ingest!.cmd, // cmd is required
      (d) => (d.stages.synth!.dep = ['data']), // misspelt field
      (d) => (d.stages.ingest!.metrics = [{ 'metrics/ingest.json': { cahce: false } }]), // unknown out flag
      (d) => (d.stages.ingest!.outs = 'cache/images.arrow'), // outs must be a list
    ];
    for (const breakIt of breakages) {
      const copy = structuredClone(raw);
      breakIt(copy);
      expect(check(copy).length).toBeGreaterThan(0);
    }
  });

  it('every params key exists in params.yaml', () => {
    expect(missingParams(raw, params)).toEqual([]);
    const broken = structuredClone(raw);
    broken.stages.ingest!.params = ['seed', 'ingest.sise'];
    expect(missingParams(broken, params)).toEqual(['ingest: ingest.sise']);
  });

  it('every ${} resolves from params.yaml', () => {
    expect(unresolved(raw, params)).toEqual([]);
    expect(strings(raw).join('\n')).toContain('${'); // the file does use templating: the check is not vacuous
    for (const s of stages) expect(JSON.stringify(s)).not.toContain('${');
    const broken = structuredClone(raw);
    broken.stages.synth!.outs = ['${synth.outt}'];
    expect(unresolved(broken, params)).toEqual(['synth.outt']);
  });

  it('no two stages write the same or nested paths, and there are no cycles', () => {
    const dag = buildDag(stages);
    expect(dag.stages.map((s) => s.name)).toEqual(expect.arrayContaining(['synth', 'ingest']));
    // With the default params, ingest reads what synth writes.
    expect(dag.upstream.get('ingest')).toContain('synth');
  });

  it('every plot says which fields to draw (x and y), so `dvc plots show` needs no guessing', () => {
    const undrawn = (d: typeof raw) => Object.entries(d.stages).flatMap(([name, st]) =>
      ((st.plots as unknown[] | undefined) ?? []).flatMap((e) => {
        const [file, flags] = typeof e === 'string' ? [e, {}] : Object.entries(e as Record<string, Record<string, unknown>>)[0]!;
        return typeof flags?.x === 'string' && typeof flags?.y === 'string' ? [] : [`${name}: ${file}`];
      }));
    expect(undrawn(raw)).toEqual([]);
    expect(Object.values(raw.stages).flatMap((st) => (st.plots as unknown[] | undefined) ?? []).length).toBeGreaterThanOrEqual(9);
    const broken = structuredClone(raw);
    broken.stages.cam!.plots = ['plots/cam_threshold.json'];
    expect(undrawn(broken)).toEqual(['cam: plots/cam_threshold.json']);
  });

  it('metrics and plots are not cached (small JSON that git tracks)', () => {
    const cached = stages.flatMap((s) => [...s.metrics, ...s.plots].filter((o) => o.cache).map((o) => `${s.name}: ${o.path}`));
    expect(cached).toEqual([]);
  });
});

describe('dvc.yaml agrees with the stage modules', () => {
  it('every stage module (a file under stages/ exporting `stage`) is in STAGE_ENTRIES, loads under that name, and has a dvc.yaml stage', async () => {
    const files = (await fs.readdir('stages', { recursive: true, withFileTypes: true }))
      .filter((e) => e.isFile() && e.name.endsWith('.ts')).map((e) => path.relative('.', path.join(e.parentPath, e.name)).split(path.sep).join('/'));
    const modules: string[] = [];
    for (const f of files) if (/^export const stage\b/m.test(await fs.readFile(f, 'utf8'))) modules.push(f);
    expect(modules.sort()).toEqual(Object.values(STAGE_ENTRIES).sort());
    expect(modules).toContain('stages/cam/train_stage.ts');
    for (const [name, file] of Object.entries(STAGE_ENTRIES)) expect((await loadStage(name))?.name, file).toBe(name);
    const names = new Set(stages.map((s) => s.name));
    expect(Object.keys(STAGE_ENTRIES).filter((m) => !names.has(m))).toEqual([]);
  });

  it('the io comparison reports a mismatch (so the per-stage checks can fail)', () => {
    const s = stages.find((x) => x.name === 'ingest')!;
    const io: StageIO = { reads: [], writes: ['cache/other.arrow'], metrics: [], plots: [], params: ['seed'] };
    expect(ioMismatches(s, io, ['stages/ingest']).map((m) => m.split(':')[0])).toEqual(['deps minus code', 'outs', 'metrics', 'params']);
  });

  it('synth is a CLI command without a stage module (skipped on purpose)', async () => {
    expect(stages.find((s) => s.name === 'synth')?.cmd).toBe('node bin/tagseg.js synth --from-params');
    expect(await exists(path.join('stages', 'synth', 'index.ts'))).toBe(false);
  });

  // One test per dvc.yaml stage; names are needed while the file is collected, before hooks run.
  const declared = Object.keys((YAML.parse(readFileSync('dvc.yaml', 'utf8')) as typeof raw).stages);
  for (const name of declared) {
    if (CLI_STAGES.has(name)) continue;
    const file = path.resolve(stageEntries(name)[0]);
    it(`stage '${name}': deps/outs/metrics/plots/params equal stage.io(params)`, async () => {
      expect(existsSync(file), `dvc.yaml stage '${name}' has no module ${file}`).toBe(true);
      const mod = (await import(pathToFileURL(file).href)) as { stage?: Stage };
      expect(mod.stage, `${file} must export \`stage\``).toBeDefined();
      const stage = mod.stage!;
      expect(stage.name).toBe(name);
      const s = stages.find((x) => x.name === name)!;
      // dvc.yaml runs the same code as `tagseg run <name>`.
      expect(s.cmd).toMatch(new RegExp(`^node bin/tagseg.js run ${name}(\\s|$)`));
      expect(ioMismatches(s, stage.io(params), await stageCodeDeps(process.cwd(), name))).toEqual([]);
    });
  }
});

async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(
    () => true,
    () => false,
  );
}
