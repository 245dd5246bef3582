/**
 * What `tagseg run`, `tagseg repro` and `tagseg status` do: resolve stages, load params once,
 * hand each stage its context, and write its metrics. `run` never checks freshness (it is
 * what dvc.yaml's cmds call); `repro` delegates to dvc or to our own DAG runner.
 */
import * as path from 'node:path';
import { STAGE_NAMES, loadStage } from '../stages/index.js';
import { repro, status } from './dag.js';
import { dvcAvailable, dvcRepro } from './dvc.js';
import { TagsegError } from './errors.js';
import { log } from './log.js';
import { writeOverrides } from './params.js';
import { loadRunParams, runStage } from './run_stage.js';
import type { Stage } from './stage.js';

/** `tagseg run a b ...`: each stage's module is loaded only when named (stages/index.ts). */
export async function runStages(root: string, names: string[], overrides: string[], json: boolean): Promise<Record<string, unknown>> {
  const stages: Stage[] = [];
  for (const n of names) {
    const s = await loadStage(n);
    if (!s) throw new TagsegError(`unknown stage '${n}'`, { hint: `stages: ${STAGE_NAMES.join(', ')}` });
    stages.push(s);
  }
  const params = await loadRunParams(root, overrides);
  const results: Record<string, unknown> = {};
  for (const s of stages) results[s.name] = await runStage(root, s, params, json);
  return results;
}

export async function reproCommand(
  root: string,
  target: string | undefined,
  o: { force?: boolean; single?: boolean; dryRun?: boolean; dvc: boolean; set: string[] },
): Promise<number> {
  if (o.set.length) {
    await writeOverrides(path.join(root, 'params.yaml'), o.set);
    log.info(`params.yaml updated: ${o.set.join(', ')}`);
  }
  if (o.dvc && (await dvcAvailable())) {
    const args: string[] = [];
    if (o.force) args.push('--force');
    if (o.single) args.push('--single-item');
    if (o.dryRun) args.push('--dry');
    if (target) args.push(target);
    log.info(`running: dvc repro ${args.join(' ')}`);
    return dvcRepro(args, root);
  }
  const r = await repro(root, { target, force: o.force, dryRun: o.dryRun, single: o.single });
  return r.exitCode;
}

export async function statusCommand(root: string): Promise<{ stages: unknown; text: string }> {
  const stages = await status(root);
  const text = stages
    .map((s) => `${s.stale ? 'stale ' : 'ok    '} ${s.name}${s.reasons.length ? `\n         ${s.reasons.join('\n         ')}` : ''}`)
    .join('\n');
  return { stages, text };
}
