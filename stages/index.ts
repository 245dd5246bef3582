/**
 * Every stage tagseg can run, in pipeline order, loaded on demand: `tagseg run cam` imports only
 * cam's module, so a stage's code deps (cli/code_deps.ts) start at its own module, never at
 * this list. Adding a stage = a module under stages/<algorithm>/ exporting `stage` and the params
 * `sections` it validates (its folder's params.ts: a new section also gets its line in
 * stages/params.ts SECTIONS), its one line in pipeline/stage_entries.ts STAGE_ENTRIES (name ->
 * module file: this dispatcher imports that file, the code-deps tool starts its closure there)
 * and its entry in dvc.yaml (tests check they agree). An algorithm that trains has
 * two stages in its folder: `<x>_train` (the model) and `<x>` (the per-image maps from it).
 */
import { STAGE_ENTRIES } from '../pipeline/stage_entries.js';
import { recoverCommits } from '../pipeline/commit.js';
import { TagsegError } from '../pipeline/errors.js';
import { loadRunParams, runStage } from '../pipeline/run_stage.js';
import type { Shard } from '../pipeline/shard.js';
import type { Sections } from '../pipeline/params_spec.js';
import type { Stage } from '../pipeline/stage.js';

/** What a stage module exports. */
export interface StageModule {
  stage: Stage;
  /** The params.yaml sections its run validates (besides seed, dataset, synth): its folder's params.ts. */
  sections: Sections;
}

/** Stages added at run time (tests), after the built-in ones of STAGE_ENTRIES. */
const ADDED: Record<string, () => Promise<StageModule>> = {};

const names = Object.keys(STAGE_ENTRIES);
export const STAGE_NAMES: readonly string[] = names;

/** Add a stage at run time, after the built-in ones (tests; a built-in stage is a line of STAGE_ENTRIES). */
export function registerStage(name: string, load: () => Promise<StageModule>): void {
  if (Object.hasOwn(STAGE_ENTRIES, name) || Object.hasOwn(ADDED, name)) throw new TagsegError(`stage '${name}' is already registered`);
  ADDED[name] = load;
  names.push(name);
}

/** A built-in stage's module, imported from its STAGE_ENTRIES file (only that one: see above). */
function builtIn(name: string): (() => Promise<StageModule>) | undefined {
  const file = Object.hasOwn(STAGE_ENTRIES, name) ? STAGE_ENTRIES[name] : undefined;
  return file ? () => import(`../${file.replace(/\.ts$/, '.js')}`) as Promise<StageModule> : undefined;
}

async function loadModule(name: string): Promise<StageModule | undefined> {
  const load = Object.hasOwn(ADDED, name) ? ADDED[name] : builtIn(name);
  return load ? load() : undefined;
}

/** The stage called `name`, or undefined when there is none. */
export async function loadStage(name: string): Promise<Stage | undefined> {
  return (await loadModule(name))?.stage;
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
  const sections: Sections[] = [];
  for (const n of names) {
    const m = await loadModule(n);
    const s = m?.stage;
    if (!s) throw new TagsegError(`unknown stage '${n}'`, { hint: `stages: ${STAGE_NAMES.join(', ')}` });
    if (shard && !s.sharded) throw new TagsegError(`stage '${n}' does not run in shards`, { hint: `--shard works with: ${(await shardedStageNames()).join(', ')}` });
    stages.push(s);
    sections.push(m.sections);
  }
  const params = await loadRunParams(root, overrides, sections);
  await recoverCommits(root); // finish or undo what a killed run left half committed
  const results: Record<string, unknown> = {};
  for (const s of stages) results[s.name] = await runStage(root, s, params, json, shard);
  return results;
}
