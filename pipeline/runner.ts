/**
 * What `tagseg repro` and `tagseg status` do: `repro` delegates to dvc or to our own DAG runner.
 * `tagseg run` (what dvc.yaml's cmds call, never checking freshness) is stages/index.ts's
 * runStages, so that running a stage loads none of this.
 */
import * as path from 'node:path';
import { repro, status } from './dag.js';
import { dvcAvailable, dvcRepro } from './dvc.js';
import { log } from './log.js';
import { writeOverrides } from './params.js';

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
