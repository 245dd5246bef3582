/**
 * What `tagseg repro` and `tagseg status` do: hand over to dvc in a DVC project with dvc on PATH,
 * and use tagseg's own DAG runner otherwise (dvc.ts's chooseRunner), saying which. `tagseg run`
 * (what dvc.yaml's cmds call, never checking freshness) is stages/index.ts's runStages, so that
 * running a stage loads none of this.
 */
import * as path from 'node:path';
import { type ReproResult, repro, status } from './dag.js';
import { chooseRunner, dvcRepro, dvcRun } from './dvc.js';
import { log } from '../pipeline/log.js';
import { writeOverrides } from '../stages/params.js';

export async function reproCommand(
  root: string,
  target: string | undefined,
  o: { force?: boolean; single?: boolean; dryRun?: boolean; dvc: boolean; set: string[] },
): Promise<number> {
  if (o.dryRun) return dryRun(root, target, o);
  if (o.set.length) {
    await writeOverrides(path.join(root, 'params.yaml'), o.set);
    log.info(`params.yaml updated: ${o.set.join(', ')}`);
  }
  const choice = await chooseRunner(root, o.dvc);
  log.info(choice.why);
  if (choice.runner === 'dvc') {
    const args: string[] = [];
    if (o.force) args.push('--force');
    if (o.single) args.push('--single-item');
    if (target) args.push(target);
    log.info(`running: dvc repro ${args.join(' ')}`);
    return dvcRepro(args, root);
  }
  const r = await repro(root, { target, force: o.force, single: o.single });
  return r.exitCode;
}

/**
 * `repro --dry-run`: print the plan (each stage that would run, and why) and write nothing; `--set`
 * applies in memory. Without `--set`, a DVC project with dvc on PATH gets `dvc repro --dry`.
 */
async function dryRun(root: string, target: string | undefined, o: { force?: boolean; single?: boolean; dvc: boolean; set: string[] }): Promise<number> {
  const choice = o.set.length ? { runner: 'tagseg' as const, why: "--dry-run with --set: tagseg's planner (params.yaml is not edited)" } : await chooseRunner(root, o.dvc);
  log.info(choice.why);
  if (choice.runner === 'dvc') {
    const args = ['--dry', ...(o.force ? ['--force'] : []), ...(o.single ? ['--single-item'] : []), ...(target ? [target] : [])];
    log.info(`running: dvc repro ${args.join(' ')}`);
    return dvcRepro(args, root);
  }
  const r = await repro(root, { target, force: o.force, single: o.single, dryRun: true, overrides: o.set });
  process.stdout.write(`${formatPlan(r, o.set)}\n`);
  return r.exitCode;
}

/** The dry run's plan as text: one line per stage, its reasons indented below. */
export function formatPlan(r: ReproResult, overrides: string[] = []): string {
  const lines = overrides.length ? [`with ${overrides.join(', ')} (not written to params.yaml):`] : [];
  for (const s of r.stages) {
    const label = s.action === 'would run' ? 'would run' : s.action === 'frozen' ? 'frozen   ' : 'up to date';
    lines.push(`${label.padEnd(10)} ${s.name}`);
    if (s.action === 'would run') for (const why of s.reasons) lines.push(`             ${why}`);
  }
  lines.push(r.ran.length ? `${r.ran.length} stage(s) would run; nothing was run or written` : 'nothing to run; nothing was written');
  return lines.join('\n');
}

/** `tagseg status`: `dvc status` in a DVC project with dvc on PATH, else tagseg's own check of dvc.lock. */
export async function statusCommand(
  root: string,
  o: { json?: boolean; dvc?: boolean } = {},
): Promise<{ stages: unknown; text: string } | { exitCode: number }> {
  const choice = await chooseRunner(root, o.dvc ?? true);
  log.info(choice.why);
  if (choice.runner === 'dvc') return { exitCode: await dvcRun(['status', ...(o.json ? ['--json'] : [])], root) };
  const stages = await status(root);
  const text = stages
    .map((s) => `${s.stale ? 'stale ' : 'ok    '} ${s.name}${s.reasons.length ? `\n         ${s.reasons.join('\n         ')}` : ''}`)
    .join('\n');
  return { stages, text };
}
