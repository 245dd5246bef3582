/**
 * What `tagseg run <stage>` executes once the CLI has picked the stage: load params.yaml (+ --set),
 * hand the stage its context, run it, and record the run's statistics (seconds, peak RSS, the
 * stage's summary) in the untracked run log. With the stage's module this file is where a stage's
 * code deps start (pipeline/code_deps.ts): the CLI and stages/index.ts only choose the stage.
 */
import * as path from 'node:path';
import { writeRunLog } from './run_log.js';
import { log } from './log.js';
import { type Params, loadParams } from './params.js';
import type { Stage, StageContext } from './stage.js';

export async function loadRunParams(root: string, overrides: string[]): Promise<Params> {
  return loadParams(path.join(root, 'params.yaml'), overrides);
}

/** Run one stage now (no freshness check); returns its summary. */
export async function runStage(root: string, stage: Stage, params: Params, json: boolean): Promise<Record<string, unknown>> {
  const ctx: StageContext = { params, root, path: (rel) => path.resolve(root, rel), json };
  const t0 = performance.now();
  log.info(`== ${stage.name}: ${stage.summary}`);
  const summary = await stage.run(ctx);
  const seconds = (performance.now() - t0) / 1000;
  await writeRunLog(root, stage.name, seconds, summary);
  log.info(`== ${stage.name} done in ${seconds.toFixed(1)} s`);
  return summary;
}
