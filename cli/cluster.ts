/**
 * `tagseg cluster dvc|k8s|slurm`: a sharded stage's shards handed to an existing engine. Each
 * renderer emits one task per shard k that runs `tagseg run <stage> --shard k/N` in the project:
 * - dvc: the stage as DVC `foreach` (or `matrix`) over 0..N-1, so `dvc repro <stage>@<k>` runs one
 *   shard, each with its own outs (its table part, PNG folder, metrics file);
 * - k8s: a Kubernetes Indexed Job (JOB_COMPLETION_INDEX = k), the project on a PersistentVolumeClaim;
 * - slurm: a job-array script (SLURM_ARRAY_TASK_ID = k), the project on a shared filesystem.
 * The stages downstream (audit, segment) read the finished part folder as one table.
 */
import type { Job } from 'kubernetes-types/batch/v1.js';
import * as path from 'node:path';
import YAML from 'yaml';
import { shellQuote } from './dvcfile.js';
import { TagsegError } from '../pipeline/errors.js';
import type { Params } from '../stages/params.js';
import type { Stage } from '../pipeline/stage.js';

/** `${item}` (foreach over a list) or `${item.shard}` (matrix), DVC's per-shard variable. */
function itemVar(form: 'foreach' | 'matrix'): string {
  return form === 'foreach' ? '${item}' : '${item.shard}';
}

/**
 * The dvc.yaml stanza of `stage` in `n` shards, from its unsharded stanza in dvc.yaml (`raw`,
 * the parsed YAML before templating): the same deps and params, cmd with `--shard <k>/<n>`, outs
 * and metrics of shard k alone (stage.sharded.outputs). DVC names the shards `<stage>@0` ...
 */
export function dvcShardStanza(stage: Stage, raw: Record<string, unknown>, n: number, form: 'foreach' | 'matrix' = 'foreach'): Record<string, unknown> {
  if (!stage.sharded) throw new TagsegError(`stage '${stage.name}' does not run in shards`);
  if ('foreach' in raw || 'matrix' in raw) throw new TagsegError(`dvc.yaml's '${stage.name}' is already a foreach/matrix stage`, { file: 'dvc.yaml', hint: 'generate from the unsharded stanza' });
  const item = itemVar(form);
  // Outputs of a placeholder shard, with its index swapped for DVC's variable: part-${item}-of-N.
  const probe = stage.sharded.outputs({ k: 999_999, n });
  const sub = (p: string) => p.replace('part-999999-of-', `part-${item}-of-`);
  const cmd = String(raw.cmd);
  if (!/\brun \S+$/.test(cmd.trim())) throw new TagsegError(`cannot add --shard to the cmd '${cmd}'`, { file: 'dvc.yaml', hint: `expected a cmd ending in \`run ${stage.name}\`` });
  // A shard writes no plots: they need every image (refine's per-class plot comes from a whole run).
  const { plots: _plots, ...unsharded } = raw;
  const body: Record<string, unknown> = {
    ...unsharded,
    cmd: `${cmd.trim()} --shard ${item}/${n}`,
    outs: probe.writes.map(sub),
    ...(probe.metrics.length ? { metrics: probe.metrics.map((m) => ({ [sub(m)]: { cache: false } })) } : {}),
  };
  const shards = Array.from({ length: n }, (_, k) => k);
  return form === 'foreach' ? { foreach: shards, do: body } : { matrix: { shard: shards }, ...body };
}

/**
 * dvc.yaml's `stages` with `stage` in `n` shards: its stanza replaced by the foreach/matrix form,
 * and each other stage's dep on an unsharded output that the shards do not write inside (e.g.
 * metrics/refine.json, now metrics/refine/part-<k>-of-<N>.json) moved to the shards' folder, so
 * DVC still orders it after every shard. Returns the stanzas that changed.
 */
export function dvcShardedStages(
  stage: Stage, params: Params, stages: Record<string, Record<string, unknown>>, n: number, form: 'foreach' | 'matrix' = 'foreach',
): Record<string, Record<string, unknown>> {
  const own = stages[stage.name];
  if (!own) throw new TagsegError(`dvc.yaml has no stage '${stage.name}'`, { file: 'dvc.yaml' });
  const out: Record<string, Record<string, unknown>> = { [stage.name]: dvcShardStanza(stage, own, n, form) };
  const io = stage.io(params);
  const shard = stage.sharded!.outputs({ k: 0, n });
  const moved = new Map<string, string>();
  const pairs: [string, string][] = [...io.writes.map((w, i) => [w, shard.writes[i]] as [string, string]), ...io.metrics.map((m, i) => [m, shard.metrics[i]] as [string, string])];
  for (const [whole, part] of pairs) if (!part.startsWith(`${whole}/`)) moved.set(whole, path.posix.dirname(part));
  for (const [name, s] of Object.entries(stages)) {
    if (name === stage.name || !Array.isArray(s.deps)) continue;
    const deps = (s.deps as unknown[]).map((d) => (typeof d === 'string' && moved.has(d) ? moved.get(d)! : d));
    if (JSON.stringify(deps) !== JSON.stringify(s.deps)) out[name] = { ...s, deps };
  }
  return out;
}

export interface RenderOptions {
  stage: Stage;
  shards: number;
  /** Shards running at once (default all). */
  parallelism?: number;
  /** Command that runs tagseg in the container / on the node. */
  tagseg: string;
  /** The project folder (params.yaml, cache/) as the task sees it. */
  project: string;
  cpus?: number;
  /** Memory per task, Kubernetes quantity (e.g. 4Gi). */
  memory?: string;
}

/** The shell command of one shard; `index` is a shell expression for k. */
function shardCommand(o: RenderOptions, index: string): string {
  return `exec ${o.tagseg} --root ${shellQuote(o.project)} run ${o.stage.name} --shard "${index}/${o.shards}"`;
}

function checkCounts(o: RenderOptions): number {
  if (!o.stage.sharded) throw new TagsegError(`stage '${o.stage.name}' does not run in shards`);
  if (!(Number.isInteger(o.shards) && o.shards >= 1)) throw new TagsegError(`--shards must be a positive integer, got ${o.shards}`);
  const p = o.parallelism ?? o.shards;
  if (!(Number.isInteger(p) && p >= 1)) throw new TagsegError(`--parallelism must be a positive integer, got ${p}`);
  return Math.min(p, o.shards);
}

/** A Kubernetes memory quantity (4Gi) as Slurm's --mem takes it (4G); throws for other forms. */
function slurmMemory(q: string): string {
  const m = /^(\d+)(Ki|Mi|Gi|Ti)?$/.exec(q);
  if (!m) throw new TagsegError(`--memory must be a number with Ki, Mi, Gi or Ti, got '${q}'`);
  return `${m[1]}${m[2] ? m[2][0] : ''}`;
}

/** A Kubernetes Indexed Job running every shard of the stage: JOB_COMPLETION_INDEX picks the shard. */
export function k8sJob(o: RenderOptions & { image: string; pvc: string; mountPath: string; name?: string }): Job {
  const parallelism = checkCounts(o);
  if (o.memory !== undefined) slurmMemory(o.memory);
  const name = o.name ?? `tagseg-${o.stage.name}`;
  if (!/^[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?$/.test(name)) throw new TagsegError(`job name '${name}' is not a valid Kubernetes name (lower case, digits, '-')`);
  const resources = o.cpus || o.memory
    ? { requests: { ...(o.cpus ? { cpu: String(o.cpus) } : {}), ...(o.memory ? { memory: o.memory } : {}) } }
    : undefined;
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name, labels: { 'app.kubernetes.io/name': 'tagseg', 'tagseg/stage': o.stage.name } },
    spec: {
      completionMode: 'Indexed',
      completions: o.shards,
      parallelism,
      // A failed shard is retried; its part is committed whole or not at all, so a retry is safe.
      backoffLimit: 3 * o.shards,
      template: {
        metadata: { labels: { 'app.kubernetes.io/name': 'tagseg', 'tagseg/stage': o.stage.name } },
        spec: {
          restartPolicy: 'Never',
          containers: [{
            name: 'tagseg',
            image: o.image,
            command: ['sh', '-c', shardCommand(o, '$JOB_COMPLETION_INDEX')],
            workingDir: o.mountPath,
            volumeMounts: [{ name: 'workspace', mountPath: o.mountPath }],
            ...(resources ? { resources } : {}),
          }],
          volumes: [{ name: 'workspace', persistentVolumeClaim: { claimName: o.pvc } }],
        },
      },
    },
  };
}

/** YAML documents of the jobs, `---` between them. */
export function k8sYaml(jobs: Job[]): string {
  return jobs.map((j) => YAML.stringify(j, { lineWidth: 0 })).join('---\n');
}

/** A Slurm job-array script running every shard of the stage: SLURM_ARRAY_TASK_ID picks the shard. */
export function slurmScript(o: RenderOptions & { logs?: string }): string {
  const parallelism = checkCounts(o);
  const limit = parallelism < o.shards ? `%${parallelism}` : '';
  return [
    '#!/bin/bash',
    `# tagseg ${o.stage.name}: ${o.shards} shards, one array task each (sbatch this file from any directory)`,
    `#SBATCH --job-name=tagseg-${o.stage.name}`,
    `#SBATCH --array=0-${o.shards - 1}${limit}`,
    ...(o.cpus ? [`#SBATCH --cpus-per-task=${o.cpus}`] : []),
    ...(o.memory ? [`#SBATCH --mem=${slurmMemory(o.memory)}`] : []),
    ...(o.logs ? [`#SBATCH --output=${o.logs}/${o.stage.name}-%A_%a.out`] : []),
    'set -euo pipefail',
    shardCommand(o, '$SLURM_ARRAY_TASK_ID'),
    '',
  ].join('\n');
}
