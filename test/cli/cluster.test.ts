/**
 * `tagseg cluster`: the sharded refine (and the map stages cam, affinity, contrast, and audit's per-image pass) as DVC foreach/matrix stages (DVC's JSON Schema, expanded to
 * refine@0..2 with disjoint outs that audit's dep covers), a Kubernetes Indexed Job (typed with
 * kubernetes-types, YAML round trip, its shell command run with JOB_COMPLETION_INDEX) and a Slurm
 * job array (bash -n, #SBATCH --array, run with SLURM_ARRAY_TASK_ID).
 */
import { Ajv } from 'ajv';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { Job } from 'kubernetes-types/batch/v1.js';
import YAML from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { dvcShardStanza, dvcShardedStages, k8sJob, k8sYaml, slurmScript } from '../../cli/cluster.js';
import { buildDag } from '../../cli/dag.js';
import { parseDvcYaml } from '../../cli/dvcfile.js';
import { defaultParams, loadParams } from '../../stages/params.js';
import { parseShard } from '../../pipeline/shard.js';
import { stage as refine } from '../../stages/refine/index.js';
import { stage as cam } from '../../stages/cam/index.js';
import { stage as affinity } from '../../stages/affinity/index.js';
import { stage as contrast } from '../../stages/contrast/index.js';
import { stage as audit } from '../../stages/audit/index.js';
import { REPO } from '../helpers/python.js';

const run = promisify(execFile);
const SCHEMA = path.resolve(REPO, '..', 'shared', 'dvc-schema', 'dvc.yaml.schema.json');
type Stanza = Record<string, unknown>;
let dvc: { stages: Record<string, Stanza> };
let validate: (d: unknown) => string[];

beforeAll(async () => {
  dvc = YAML.parse(await fs.readFile(path.join(REPO, 'dvc.yaml'), 'utf8')) as typeof dvc;
  const v = new Ajv({ strict: false, allErrors: true }).compile(JSON.parse(await fs.readFile(SCHEMA, 'utf8')) as object);
  validate = (d) => (v(d) ? [] : (v.errors ?? []).map((e) => `${e.instancePath} ${e.message}`));
});

/** DVC's expansion of a foreach (list) or matrix (one key) stanza: `<name>@<k>` -> the stage with ${item} / ${item.shard} = k. */
function expand(name: string, s: Stanza): Record<string, Stanza> {
  const [items, body, v] = 'foreach' in s ? [s.foreach as number[], s.do as Stanza, '${item}'] : [(s.matrix as { shard: number[] }).shard, { ...s, matrix: undefined }, '${item.shard}'];
  return Object.fromEntries(items.map((k) => [`${name}@${k}`, JSON.parse(JSON.stringify(body).replaceAll(v, String(k))) as Stanza]));
}
const outPaths = (s: Stanza, key: 'outs' | 'metrics') => ((s[key] as unknown[] | undefined) ?? []).map((o) => (typeof o === 'string' ? o : Object.keys(o as object)[0]));

describe('dvc.yaml shards (tagseg cluster dvc)', () => {
  for (const form of ['foreach', 'matrix'] as const) {
    it(`${form}: valid for DVC, refine@0..2 each run one shard and write only its own part`, () => {
      const stanza = dvcShardStanza(refine, dvc.stages.refine, 3, form);
      const doc = { ...dvc, stages: { ...dvc.stages, refine: stanza } };
      expect(validate(doc)).toEqual([]);
      const shards = expand('refine', stanza);
      expect(Object.keys(shards)).toEqual(['refine@0', 'refine@1', 'refine@2']);
      const allOuts: string[] = [];
      for (const [name, s] of Object.entries(shards)) {
        const k = Number(name.split('@')[1]);
        expect(parseShard(String(s.cmd).split('--shard ')[1])).toEqual({ k, n: 3 });
        expect(s.deps).toEqual(dvc.stages.refine.deps);
        expect(s.params).toEqual(dvc.stages.refine.params);
        const own = refine.sharded!.outputs({ k, n: 3 });
        expect(outPaths(s, 'outs')).toEqual(own.writes);
        expect(outPaths(s, 'metrics')).toEqual(own.metrics);
        allOuts.push(...outPaths(s, 'outs'), ...outPaths(s, 'metrics'));
      }
      // no out shared or nested between shards or with another stage; audit's dep on the table folder covers every part
      const others = Object.entries(dvc.stages).filter(([n]) => n !== 'refine').flatMap(([, s]) => [...outPaths(s, 'outs'), ...outPaths(s, 'metrics')]);
      for (const a of allOuts) {
        for (const b of [...allOuts, ...others]) if (a !== b) expect(a.startsWith(`${b}/`) || b.startsWith(`${a}/`), `${a} vs ${b}`).toBe(false);
      }
      expect(new Set(allOuts).size).toBe(allOuts.length);
      const tableParts = allOuts.filter((o) => o.startsWith('cache/pseudo_masks.arrow/'));
      expect(tableParts).toHaveLength(3);
      expect(dvc.stages.audit.deps).toContain('cache/pseudo_masks.arrow');
    });
  }

  it('every dep that an output covered before is covered by an output after (segment: metrics/refine.json -> metrics/refine)', () => {
    const changed = dvcShardedStages(refine, defaultParams(), dvc.stages, 3);
    expect(Object.keys(changed).sort()).toEqual(['refine', 'segment']);
    expect(changed.segment.deps).toContain('metrics/refine');
    expect(changed.segment.deps).not.toContain('metrics/refine.json');
    const after = { ...dvc.stages, ...changed };
    expect(validate({ ...dvc, stages: after })).toEqual([]);
    const outsOf = (stages: Record<string, Stanza>) => Object.entries(stages).flatMap(([name, s]) =>
      Object.values('foreach' in s || 'matrix' in s ? expand(name, s) : { [name]: s }).flatMap((x) => [...outPaths(x, 'outs'), ...outPaths(x, 'metrics')]));
    // DVC orders a stage after every stage with an out equal to, inside or above one of its deps
    const covered = (dep: string, outs: string[]) => outs.some((o) => o === dep || o.startsWith(`${dep}/`) || dep.startsWith(`${o}/`));
    const [before, now] = [outsOf(dvc.stages), outsOf(after)];
    for (const [name, s] of Object.entries(dvc.stages)) {
      const newDeps = ((after[name].do as Stanza | undefined)?.deps ?? after[name].deps) as string[] | undefined;
      (s.deps as string[] | undefined)?.forEach((d, i) => { if (covered(d, before)) expect(covered(newDeps![i], now), `${name}: ${d} -> ${newDeps![i]}`).toBe(true); });
    }
    // negative control: without the move, segment's dep on metrics/refine.json would have no producer
    expect(covered('metrics/refine.json', now)).toBe(false);
  });

  for (const form of ['foreach', 'matrix'] as const) {
    it(`${form}: tagseg's own dvc.yaml reader expands refine@0..2 and orders audit and segment after every shard`, async () => {
      const params = await loadParams(path.join(REPO, 'params.yaml'), ['refine.shards=3']);
      const text = YAML.stringify({ ...dvc, stages: { ...dvc.stages, ...dvcShardedStages(refine, params, dvc.stages, 3, form) } });
      const dag = buildDag(parseDvcYaml(text, params).stages);
      const shards = dag.stages.filter((s) => s.name.startsWith('refine@')).map((s) => s.name).sort();
      expect(shards).toEqual(['refine@0', 'refine@1', 'refine@2']);
      for (const k of [0, 1, 2]) expect(dag.byName.get(`refine@${k}`)!.cmd).toMatch(new RegExp(`run refine --shard ${k}/3$`));
      for (const down of ['audit', 'segment']) expect(dag.upstream.get(down)).toEqual(expect.arrayContaining(shards));
      expect(dag.upstream.get('refine@1')).toEqual(expect.arrayContaining(['contrast']));
    });
  }

  it('the schema check can fail: a foreach without `do`, an out that is not a list', () => {
    const stanza = dvcShardStanza(refine, dvc.stages.refine, 3);
    const noDo = { ...stanza, do: undefined, cmd: 'x' };
    expect(validate({ stages: { refine: JSON.parse(JSON.stringify(noDo)) as Stanza } }).length).toBeGreaterThan(0);
    const badOuts = { ...stanza, do: { ...(stanza.do as Stanza), outs: 'cache/x' } };
    expect(validate({ stages: { refine: badOuts } }).length).toBeGreaterThan(0);
    expect(() => dvcShardStanza(refine, stanza, 3)).toThrow(/already a foreach/);
  });
});

describe('the map stages in shards (tagseg cluster dvc)', () => {
  const MAP_STAGES = [cam, affinity, contrast];
  // who reads each map table: every one of its shards must come first
  const READERS: Record<string, string[]> = { cam: ['affinity_train', 'affinity', 'contrast_train', 'contrast', 'refine'], affinity: ['contrast_train', 'contrast', 'refine'], contrast: ['refine'] };

  it('every map stage is sharded, each shard writing only its own table part and metrics part', () => {
    for (const s of MAP_STAGES) {
      expect(s.sharded?.param).toBe(`${s.name}.shards`);
      const own = s.sharded!.outputs({ k: 1, n: 3 });
      expect(own.writes).toEqual([`${s.io(defaultParams()).writes[0]}/part-1-of-3.arrow`]);
      expect(own.metrics).toEqual([`metrics/${s.name}/part-1-of-3.json`]);
      expect(s.sharded!.outputs({ k: 0, n: 1 })).toEqual({ writes: s.io(defaultParams()).writes, metrics: s.io(defaultParams()).metrics });
    }
  });

  for (const form of ['foreach', 'matrix'] as const) {
    it(`${form}: with cam, affinity, contrast and refine in 3 shards, DVC's schema holds and every reader of a map table runs after all its shards`, async () => {
      const params = await loadParams(path.join(REPO, 'params.yaml'), ['cam.shards=3', 'affinity.shards=3', 'contrast.shards=3', 'refine.shards=3']);
      let stages = dvc.stages;
      for (const s of [...MAP_STAGES, refine]) stages = { ...stages, ...dvcShardedStages(s, params, stages, 3, form) };
      expect(validate({ ...dvc, stages })).toEqual([]);
      const dag = buildDag(parseDvcYaml(YAML.stringify({ ...dvc, stages }), params).stages);
      for (const s of MAP_STAGES) {
        const shards = [0, 1, 2].map((k) => `${s.name}@${k}`);
        for (const k of [0, 1, 2]) expect(dag.byName.get(shards[k])!.cmd).toMatch(new RegExp(`run ${s.name} --shard ${k}/3$`));
        for (const down of READERS[s.name]) {
          const downs = dag.byName.has(down) ? [down] : [0, 1, 2].map((k) => `${down}@${k}`);
          for (const d of downs) expect(dag.upstream.get(d), `${d} after ${s.name}`).toEqual(expect.arrayContaining(shards));
        }
      }
    });
  }

  it('the CLI renders a Slurm array for every sharded stage', async () => {
    const { stdout } = await run(process.execPath, [path.join(REPO, 'bin/tagseg.js'), '--root', REPO, 'cluster', 'slurm', '--shards', '2', '--tagseg', 'echo'], { cwd: REPO });
    for (const name of ['cam', 'affinity', 'contrast', 'refine', 'audit']) expect(stdout).toContain(`run ${name} --shard "$SLURM_ARRAY_TASK_ID/2"`);
  });
});

describe("the audit's per-image pass in shards (tagseg cluster dvc)", () => {
  it('each shard writes only its own parts of the two tables and the overlay folder, and no metrics', () => {
    expect(audit.sharded?.param).toBe('audit.shards');
    expect(audit.sharded!.outputs({ k: 1, n: 3 })).toEqual({
      writes: ['cache/audit.arrow/part-1-of-3.arrow', 'cache/audit_measures.arrow/part-1-of-3.arrow', 'cache/audit_overlays/part-1-of-3'], metrics: [],
    });
    expect(audit.sharded!.outputs({ k: 0, n: 1 })).toEqual({ writes: audit.io(defaultParams()).writes, metrics: [] });
  });

  for (const form of ['foreach', 'matrix'] as const) {
    it(`${form}: with refine and audit in 3 shards, DVC's schema holds, audit@k runs after every refine shard and audit_report after every audit shard`, async () => {
      const params = await loadParams(path.join(REPO, 'params.yaml'), ['refine.shards=3', 'audit.shards=3']);
      let stages = dvc.stages;
      for (const s of [refine, audit]) stages = { ...stages, ...dvcShardedStages(s, params, stages, 3, form) };
      expect(validate({ ...dvc, stages })).toEqual([]);
      const shards = expand('audit', stages.audit);
      for (const [name, sh] of Object.entries(shards)) {
        expect(outPaths(sh, 'outs')).toEqual(audit.sharded!.outputs({ k: Number(name.split('@')[1]), n: 3 }).writes);
        expect(sh.metrics).toBeUndefined();
      }
      // audit_report's deps are the shards' folders: unchanged
      expect(stages.audit_report).toEqual(dvc.stages.audit_report);
      const dag = buildDag(parseDvcYaml(YAML.stringify({ ...dvc, stages }), params).stages);
      const names = (x: string) => [0, 1, 2].map((k) => `${x}@${k}`);
      for (const k of [0, 1, 2]) {
        expect(dag.byName.get(`audit@${k}`)!.cmd).toMatch(new RegExp(`run audit --shard ${k}/3$`));
        expect(dag.upstream.get(`audit@${k}`)).toEqual(expect.arrayContaining(names('refine')));
      }
      expect(dag.upstream.get('audit_report')).toEqual(expect.arrayContaining(names('audit')));
      // negative control: the unsharded audit_report runs after the one audit stage, not after shards
      expect(buildDag(parseDvcYaml(YAML.stringify(dvc), params).stages).upstream.get('audit_report')).toEqual(expect.arrayContaining(['audit']));
    });
  }
});

describe('Kubernetes Indexed Job (tagseg cluster k8s)', () => {
  const job: Job = k8sJob({
    stage: refine, shards: 3, parallelism: 2, image: 'registry.example/tagseg:1', pvc: 'tagseg-project',
    mountPath: '/workspace', project: '/workspace/runs/msrc', tagseg: 'node /opt/tagseg/bin/tagseg.js', cpus: 2, memory: '4Gi',
  });

  it('survives a YAML serialise/parse round trip and holds what an Indexed Job needs', () => {
    const text = k8sYaml([job, job]);
    const docs = YAML.parseAllDocuments(text).map((d) => d.toJS() as Job);
    expect(docs).toEqual([job, job]);
    const spec = docs[0].spec!;
    expect([spec.completionMode, spec.completions, spec.parallelism]).toEqual(['Indexed', 3, 2]);
    const pod = spec.template.spec!;
    expect(pod.restartPolicy).toBe('Never');
    expect(pod.volumes).toEqual([{ name: 'workspace', persistentVolumeClaim: { claimName: 'tagseg-project' } }]);
    expect(pod.containers[0].volumeMounts).toEqual([{ name: 'workspace', mountPath: '/workspace' }]);
    expect(pod.containers[0].resources).toEqual({ requests: { cpu: '2', memory: '4Gi' } });
    expect(pod.containers[0].image).toBe('registry.example/tagseg:1');
  });

  it("the container's command runs shard JOB_COMPLETION_INDEX of 3", async () => {
    const [sh, c, script] = job.spec!.template.spec!.containers[0].command!;
    expect([sh, c]).toEqual(['sh', '-c']);
    for (const k of [0, 2]) {
      const echoed = script.replace('exec node /opt/tagseg/bin/tagseg.js', 'exec echo');
      const { stdout } = await run('sh', ['-c', echoed], { env: { ...process.env, JOB_COMPLETION_INDEX: String(k) } });
      expect(stdout.trim()).toBe(`--root /workspace/runs/msrc run refine --shard ${k}/3`);
    }
  });

  it('rejects bad names, counts and memory', () => {
    const base = { stage: refine, shards: 3, image: 'i', pvc: 'p', mountPath: '/w', project: '/w', tagseg: 't' };
    expect(() => k8sJob({ ...base, name: 'Tagseg_Refine' })).toThrow(/not a valid Kubernetes name/);
    expect(() => k8sJob({ ...base, shards: 0 })).toThrow(/--shards/);
    expect(() => k8sJob({ ...base, memory: '4 GB' })).toThrow(/--memory/);
  });
});

describe('Slurm job array (tagseg cluster slurm)', () => {
  let dir: string;
  beforeAll(async () => { dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-slurm-')); });

  it('passes bash -n, has one #SBATCH --array line 0-(N-1), and runs shard SLURM_ARRAY_TASK_ID', async () => {
    const text = slurmScript({ stage: refine, shards: 3, project: '/shared/runs/my project', tagseg: 'echo', memory: '8Gi', cpus: 4, logs: '/shared/logs' });
    const file = path.join(dir, 'refine.sbatch');
    await fs.writeFile(file, text);
    await run('bash', ['-n', file]);
    expect(text.split('\n').filter((l) => l.startsWith('#SBATCH --array'))).toEqual(['#SBATCH --array=0-2']);
    expect(text).toContain('#SBATCH --mem=8G\n');
    expect(text).toContain('#SBATCH --cpus-per-task=4\n');
    // #SBATCH lines must come before the first command, or sbatch ignores them
    const lines = text.split('\n');
    expect(lines.findLastIndex((l) => l.startsWith('#SBATCH'))).toBeLessThan(lines.findIndex((l) => l && !l.startsWith('#')));
    const { stdout } = await run('bash', [file], { env: { ...process.env, SLURM_ARRAY_TASK_ID: '1' } });
    expect(stdout.trim()).toBe('--root /shared/runs/my project run refine --shard 1/3');
    expect(slurmScript({ stage: refine, shards: 10, parallelism: 4, project: '/p', tagseg: 'echo' })).toContain('#SBATCH --array=0-9%4\n');
    // negative control: bash -n rejects a broken script
    await fs.writeFile(file, `${text}\nif then\n`);
    await expect(run('bash', ['-n', file])).rejects.toThrow();
  });

  it('the CLI prints the script from params.yaml', async () => {
    const { stdout } = await run(process.execPath, [path.join(REPO, 'bin/tagseg.js'), '--root', REPO, 'cluster', 'slurm', '--shards', '4', '--tagseg', 'echo'], { cwd: REPO });
    expect(stdout).toContain('#SBATCH --array=0-3\n');
    expect(stdout).toContain('run refine --shard "$SLURM_ARRAY_TASK_ID/4"');
  });
});
