/**
 * Every stage tagseg can run, in pipeline order, loaded on demand: `tagseg run cam` imports only
 * cam's module, so a stage's code deps (pipeline/code_deps.ts) start at its own module, never at
 * this list. Adding a stage = a module under stages/<algorithm>/ exporting `stage`, an entry here,
 * its module in pipeline/code_closure.ts STAGE_ENTRIES and its entry in dvc.yaml (tests check
 * they agree). An algorithm that trains has two stages in its folder: `<x>_train` (the model) and
 * `<x>` (the per-image maps from it).
 */
import { recoverCommits } from '../pipeline/commit.js';
import { TagsegError } from '../pipeline/errors.js';
import { loadRunParams, runStage } from '../pipeline/run_stage.js';
import type { Shard } from '../pipeline/shard.js';
import type { Stage } from '../pipeline/stage.js';

const LOADERS: Record<string, () => Promise<{ stage: Stage }>> = {
  ingest: () => import('./ingest/index.js'),
  cam_train: () => import('./cam/train_stage.js'),
  cam: () => import('./cam/index.js'),
  affinity_train: () => import('./affinity/train_stage.js'),
  affinity: () => import('./affinity/index.js'),
  contrast_train: () => import('./contrast/train_stage.js'),
  contrast: () => import('./contrast/index.js'),
  refine: () => import('./refine/index.js'),
  segment: () => import('./segment/index.js'),
  audit: () => import('./audit/index.js'),
};

export const STAGE_NAMES: readonly string[] = Object.keys(LOADERS);

/** The stage called `name`, or undefined when there is none. */
export async function loadStage(name: string): Promise<Stage | undefined> {
  const load = Object.hasOwn(LOADERS, name) ? LOADERS[name] : undefined;
  return load ? (await load()).stage : undefined;
}

/** Every stage, in pipeline order. */
export async function loadStages(): Promise<Stage[]> {
  return Promise.all(STAGE_NAMES.map(async (n) => (await loadStage(n))!));
}

/** The stages that run as `--shard k/N`. */
async function shardedStageNames(): Promise<string[]> {
  return (await loadStages()).filter((s) => s.sharded).map((s) => s.name);
}

/** `tagseg run a b ...`: load the named stages' modules (only those), then run each now. */
export async function runStages(root: string, names: string[], overrides: string[], json: boolean, shard?: Shard): Promise<Record<string, unknown>> {
  const stages: Stage[] = [];
  for (const n of names) {
    const s = await loadStage(n);
    if (!s) throw new TagsegError(`unknown stage '${n}'`, { hint: `stages: ${STAGE_NAMES.join(', ')}` });
    if (shard && !s.sharded) throw new TagsegError(`stage '${n}' does not run in shards`, { hint: `--shard works with: ${(await shardedStageNames()).join(', ')}` });
    stages.push(s);
  }
  const params = await loadRunParams(root, overrides);
  await recoverCommits(root); // finish or undo what a killed run left half committed
  const results: Record<string, unknown> = {};
  for (const s of stages) results[s.name] = await runStage(root, s, params, json, shard);
  return results;
}
