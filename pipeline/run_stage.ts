/**
 * What `tagseg run <stage>` executes once the CLI has picked the stage: load params.yaml (+ --set),
 * hand the stage its context, run it, and record the run's statistics (seconds, peak RSS, the
 * stage's summary) in the untracked run log. With the stage's module this file is where a stage's
 * code deps start (cli/code_deps.ts): the CLI and stages/index.ts only choose the stage.
 */
import * as path from 'node:path';
import { withStageCommit } from './commit.js';
import { removeLeftovers } from './fsutil.js';
import { log } from './log.js';
import type { Params } from '../stages/params.js';
import { readParams, stageSpec } from './params_core.js';
import type { Sections } from './params_spec.js';
import { checkOutputsWritable } from './preflight.js';
import { writeRunLog } from './run_log.js';
import type { Shard } from './shard.js';
import type { Stage, StageContext } from './stage.js';

/**
 * params.yaml (+ --set) for a run of stages owning `sections`: those and the shared ones are
 * validated, the other sections pass through unchecked (their schemas are other stages' code).
 */
export async function loadRunParams(root: string, overrides: string[], sections: Sections[]): Promise<Params> {
  return (await readParams(stageSpec(...sections), path.join(root, 'params.yaml'), overrides)) as Params;
}

/** Run one stage now (no freshness check); returns its summary. */
export async function runStage(root: string, stage: Stage, params: Params, json: boolean, shard?: Shard): Promise<Record<string, unknown>> {
  const ctx: StageContext = { params, root, path: (rel) => path.resolve(root, rel), json, shard };
  const t0 = performance.now();
  log.info(`== ${stage.name}: ${stage.summary}`);
  const io = stage.io(params);
  const outputs = [...io.writes, ...io.metrics, ...io.plots];
  // First the check that names a file in the way (TagsegError), then the cleanup that walks those folders.
  await checkOutputsWritable(root, stage.name, outputs);
  await removeStageLeftovers(stage, ctx);
  // All of the stage's outputs are committed together when it returns, or none (commit.ts). Shards
  // running at once each commit their own part under their own journal (`refine@k`).
  const own = shard && stage.sharded ? stage.sharded.outputs(shard) : null;
  const journal = own ? `${stage.name}@${shard!.k}` : stage.name;
  const committed = own ? [...own.writes, ...own.metrics] : outputs;
  const summary = await withStageCommit(root, journal, committed, () => stage.run(ctx));
  const seconds = (performance.now() - t0) / 1000;
  await writeRunLog(root, stage.name, seconds, summary);
  log.info(`== ${stage.name} done in ${seconds.toFixed(1)} s`);
  return summary;
}

/** What killed runs of the stage left next to its outputs (temp files, old folders); never inside an output. */
async function removeStageLeftovers(s: Stage, ctx: StageContext): Promise<void> {
  const io = s.io(ctx.params);
  // One shard of several: only its own outputs' leftovers (the other shards may be writing theirs now).
  const own = ctx.shard && s.sharded ? s.sharded.outputs(ctx.shard) : null;
  for (const rel of own ? [...own.writes, ...own.metrics] : [...io.writes, ...io.metrics, ...io.plots]) {
    const gone = await removeLeftovers(ctx.path(rel));
    if (gone.length) log.info(`${s.name}: removed leftovers of a killed run next to ${rel}: ${gone.join(', ')}`);
  }
}
