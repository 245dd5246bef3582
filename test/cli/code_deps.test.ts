/**
 * dvc.yaml's code deps are each stage's real import closure (cli/code_deps.ts), in both
 * directions, with no skip: a file a stage imports but dvc.yaml leaves out, or a dep it never
 * loads, fails here. Also: what the closure must and must not hold (editing the CLI, docs, benches
 * or another stage's private files leaves a stage fresh; editing what it imports makes it stale).
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { codeClosure, compressDeps, covers, depsDiff, expectedDeps, RUNTIME_LOADS, rewriteDeps, stageEntries } from '../../cli/code_deps.js';
import { parseDvcYaml } from '../../cli/dvcfile.js';

const root = process.cwd();
let e: Awaited<ReturnType<typeof expectedDeps>>;
beforeAll(async () => {
  e = await expectedDeps(root);
});
const depsOf = (name: string) => e.dvc.stages.find((s) => s.name === name)!.deps;

describe('dvc.yaml code deps = the import closure', () => {
  it('every stage: dvc.yaml deps equal code closure + data reads, both ways', () => {
    expect(e.dvc.stages.length).toBeGreaterThanOrEqual(8);
    for (const s of e.dvc.stages) expect(depsDiff(s.name, s.deps, e.code[s.name]!, e.reads[s.name]!)).toEqual({ stage: s.name, missing: [], extra: [] });
  });

  it('the comparison sees a dep left out and a dep too many (control)', () => {
    const seg = depsOf('segment');
    const dropped = seg.filter((d) => d !== 'ops/crf.ts');
    expect(dropped.length).toBe(seg.length - 1);
    expect(depsDiff('segment', [...dropped, 'README.md'], e.code.segment!, e.reads.segment!)).toEqual({ stage: 'segment', missing: ['ops/crf.ts'], extra: ['README.md'] });
  });

  it('editing what a stage imports makes it stale; the CLI, docs, benches, tests, other stages\' private files do not', () => {
    expect(covers(depsOf('segment'), 'ops/crf.ts')).toBe(true);
    expect(covers(depsOf('refine'), 'ops/crf.ts')).toBe(true);
    expect(covers(depsOf('cam'), 'ops/crf.ts')).toBe(false);
    expect(covers(depsOf('affinity'), 'nn/cam_net.ts')).toBe(true);
    expect(covers(depsOf('refine'), 'stages/refine/worker.ts')).toBe(true); // loaded by worker_boot.mjs, no import
    expect(covers(depsOf('audit_report'), 'stages/audit/report/app.js')).toBe(true); // read as a template
    // the audit's per-image (sharded) pass does not rerun for a change of the report
    expect(covers(depsOf('audit'), 'stages/audit/report/app.js')).toBe(false);
    expect(covers(depsOf('audit'), 'stages/audit/report_stage.ts')).toBe(false);
    for (const s of e.dvc.stages) {
      for (const f of ['cli/main.ts', 'bin/tagseg.js', 'stages/index.ts', 'cli/runner.ts', 'cli/dag.ts', 'README.md', 'bench/run.sh', 'test/e2e/cam.test.ts', 'stages/segment/predict.ts', 'eval/segeval.ts']) {
        expect(covers(s.deps, f), `${s.name} depends on ${f}`).toBe(false);
      }
    }
    expect(covers(depsOf('affinity'), 'stages/cam/train.ts')).toBe(false);
    // the two stages of an algorithm: the maps do not depend on the training code, nor the training on the maps'
    expect(covers(depsOf('cam'), 'stages/cam/train.ts')).toBe(false);
    expect(covers(depsOf('cam_train'), 'stages/cam/infer.ts')).toBe(false);
    expect(covers(depsOf('cam_train'), 'stages/cam/train.ts')).toBe(true);
    expect(covers(depsOf('cam'), 'stages/cam/infer.ts')).toBe(true);
    expect(covers(depsOf('refine'), 'stages/segment/train.ts')).toBe(false);
  });

  it("a stage depends on its own folder's params file and the shared sections, never another folder's or the registry", () => {
    const folders = ['ingest', 'cam', 'affinity', 'contrast', 'refine', 'segment', 'audit'];
    for (const s of e.dvc.stages) {
      const own = /^stages\/([^/]+)\//.exec(stageEntries(s.name)[0]!)?.[1]; // the folder its module lives in (synth: none)
      expect(covers(s.deps, 'pipeline/shared_params.ts'), s.name).toBe(true);
      expect(covers(s.deps, 'stages/params.ts'), `${s.name} depends on the params registry`).toBe(false);
      for (const f of folders) expect(covers(s.deps, `stages/${f}/params.ts`), `${s.name} and stages/${f}/params.ts`).toBe(own === f);
    }
  });

  it('every closure file that reaches a file by path (import.meta.url) says what it loads in RUNTIME_LOADS', async () => {
    const all = new Set<string>();
    for (const s of e.dvc.stages) for (const f of await codeClosure(root, stageEntries(s.name))) all.add(f);
    const reaching: string[] = [];
    for (const f of all) {
      if (!/\.(ts|mjs|js)$/.test(f)) continue;
      // a module naming itself for its resume key (`module: import.meta.url`, `ownCodeDeps(import.meta.url)`) loads nothing
      const text = (await fs.readFile(path.join(root, f), 'utf8')).replace(/module: import\.meta\.url|ownCodeDeps\(import\.meta\.url\)/g, '');
      if (text.includes('import.meta.url')) reaching.push(f);
    }
    expect(reaching.length).toBeGreaterThan(0);
    expect(reaching.filter((f) => !RUNTIME_LOADS[f])).toEqual([]);
  });
});

/** What `tagseg run <stage>` loads besides the stage's closure: they parse argv and pick the module. */
const DISPATCH = ['bin/tagseg.js', 'cli/main.ts', 'cli/version.ts', 'stages/index.ts', 'pipeline/stage_entries.ts'];

/** Project files `node bin/tagseg.js run <stage>` loads (in an empty folder: it loads the stage, then stops at the missing params.yaml). */
async function loadedBy(stage: string): Promise<string[]> {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-loads-'));
  try {
    const log = path.join(tmp, 'loads.log');
    const r = await execa('node', ['--import', './test/helpers/record_loads.mjs', 'bin/tagseg.js', '--root', tmp, 'run', stage], {
      cwd: root, reject: false, env: { TAGSEG_LOAD_LOG: log },
    });
    expect(r.stderr).toContain('params.yaml: file not found');
    const files = (await fs.readFile(log, 'utf8')).split('\n').filter((u) => u.startsWith('file:')).map((u) => path.relative(root, fileURLToPath(u)));
    return [...new Set(files.filter((f) => !f.startsWith('node_modules/') && !f.startsWith('..')))].sort();
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

describe('the run path of `tagseg run <stage>`', () => {
  it('loads the stage\'s closure and the dispatch files only, never another stage or the DAG runner', async () => {
    for (const s of e.dvc.stages.filter((x) => x.name !== 'synth')) {
      const loaded = await loadedBy(s.name);
      expect(loaded, s.name).toContain(stageEntries(s.name)[0]); // control: the recorder sees the stage load
      const closure = new Set(await codeClosure(root, stageEntries(s.name)));
      expect(loaded.filter((f) => !closure.has(f) && !DISPATCH.includes(f)), s.name).toEqual([]);
      for (const f of DISPATCH) expect(covers(s.deps, f), `${s.name} depends on ${f}`).toBe(false);
    }
  }, 120_000);
});

describe('closure helpers', () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-codedeps-'));
    const w = async (f: string, t: string) => {
      await fs.mkdir(path.dirname(path.join(tmp, f)), { recursive: true });
      await fs.writeFile(path.join(tmp, f), t);
    };
    await w('package-lock.json', '{}');
    await w('a/main.ts', "import { b } from '../lib/b.js';\nexport const x = b + (await import('./c.js')).c;\n");
    await w('a/c.ts', 'export const c = 1;\n');
    await w('lib/b.ts', 'export const b = 2;\n');
    await w('lib/unused.ts', 'export const u = 3;\n');
    return () => fs.rm(tmp, { recursive: true, force: true });
  });

  it('follows static and dynamic imports and lists a folder only when all of it is in the closure', async () => {
    const files = await codeClosure(tmp, ['a/main.ts']);
    expect(files).toEqual(['a/c.ts', 'a/main.ts', 'lib/b.ts', 'package-lock.json']);
    expect(await compressDeps(tmp, files)).toEqual(['a', 'lib/b.ts', 'package-lock.json']);
  });

  it('rewriteDeps puts code deps first and keeps the data deps with their comments', () => {
    const text = 'stages:\n  s:\n    cmd: x\n    deps:\n      - old.ts\n      # data\n      - ${d}\n';
    const out = rewriteDeps(text, { d: 'data/x' }, { s: ['new.ts'] }, { s: ['data/x'] });
    expect(parseDvcYaml(out, { d: 'data/x' }).stages[0]!.deps).toEqual(['new.ts', 'data/x']);
    expect(out).toContain('# data');
  });
});
