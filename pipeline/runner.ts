/**
 * What `tagseg run`, `tagseg repro` and `tagseg status` do: resolve stages, load params once,
 * hand each stage its context, and write its metrics. `run` never checks freshness (it is
 * what dvc.yaml's cmds call); `repro` delegates to dvc or to our own DAG runner.
 */
import * as path from 'node:path';
import { STAGES, findStage } from '../stages/index.js';
import { repro, status } from './dag.js';
import { dvcAvailable, dvcRepro } from './dvc.js';
import { TagsegError } from './errors.js';
import { log } from './log.js';
import { loadParams, writeOverrides } from './params.js';
import type { Shard } from './shard.js';
import type { StageContext } from './stage.js';

export async function runStages(root: string, names: string[], overrides: string[], json: boolean, shard?: Shard): Promise<Record<string, unknown>> {
  const stages = names.map((n) => {
    const s = findStage(n);
    if (!s) throw new TagsegError(`unknown stage '${n}'`, { hint: `stages: ${STAGES.map((x) => x.name).join(', ')}` });
    if (shard && !s.sharded) {
      throw new TagsegError(`stage '${n}' does not run in shards`, { hint: `--shard works with: ${STAGES.filter((x) => x.sharded).map((x) => x.name).join(', ')}` });
    }
    return s;
  });
  const params = await loadParams(path.join(root, 'params.yaml'), overrides);
  const ctx: StageContext = { params, root, path: (rel) => path.resolve(root, rel), json, shard };
  const results: Record<string, unknown> = {};
  for (const s of stages) {
    const t0 = performance.now();
    log.info(`== ${s.name}: ${s.summary}`);
    results[s.name] = await s.run(ctx);
    log.info(`== ${s.name} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
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
