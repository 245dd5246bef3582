/**
 * dvc.yaml's code deps against each stage's import closure (code_closure.ts): the check and the
 * rewrite behind `tagseg dvc-deps [--write]` and test/cli/code_deps.test.ts.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import YAML, { isScalar, isSeq, Scalar } from 'yaml';
import { CLI_STAGE_ENTRIES, RUN_PATH, entryCodeDeps } from '../pipeline/code_closure.js';
import { STAGE_ENTRIES } from '../pipeline/stage_entries.js';
import { type DvcFile, interpolate, loadDvcYaml, normalize } from './dvcfile.js';
import { TagsegError } from '../pipeline/errors.js';
import { writeFileAtomic } from '../pipeline/fsutil.js';

export { CLI_STAGE_ENTRIES, LIBRARIES, RUN_PATH, RUNTIME_LOADS, codeClosure, compressDeps, covers } from '../pipeline/code_closure.js';

/**
 * Entry files of a dvc.yaml stage: its module (STAGE_ENTRIES; a stage not listed there, e.g. a
 * test's, is stages/<name>/index.ts) + the run path, or the CLI stage's entries.
 */
export function stageEntries(name: string): string[] {
  return CLI_STAGE_ENTRIES[name] ?? [STAGE_ENTRIES[name] ?? `stages/${name}/index.ts`, RUN_PATH];
}

/** The code deps dvc.yaml should list for stage `name`. */
export async function stageCodeDeps(root: string, name: string): Promise<string[]> {
  return entryCodeDeps(root, stageEntries(name));
}

/**
 * dvc.yaml text with each stage's deps = its code deps (first) + its data deps: the entries whose
 * interpolated path is in `reads[stage]` keep their node (and comment). Other entries are dropped.
 */
export function rewriteDeps(text: string, vars: Record<string, unknown>, code: Record<string, string[]>, reads: Record<string, string[]>): string {
  const doc = YAML.parseDocument(text);
  for (const [name, deps] of Object.entries(code)) {
    const seq = doc.getIn(['stages', name, 'deps'], true);
    const keep = isSeq(seq)
      ? seq.items.filter((n) => isScalar(n) && (reads[name] ?? []).includes(normalize(interpolate(String(n.value), vars, { stage: name, field: 'deps' }))))
      : [];
    doc.setIn(['stages', name, 'deps'], doc.createNode([...deps.map((d) => new Scalar(d)), ...keep]));
  }
  return doc.toString({ lineWidth: 0 });
}

export interface DepsDiff {
  stage: string;
  /** In the closure (or io().reads) but not in dvc.yaml's deps. */
  missing: string[];
  /** In dvc.yaml's deps but neither in the closure nor in io().reads. */
  extra: string[];
}

/** dvc.yaml deps against code deps + data reads, in both directions (empty arrays = they agree). */
export function depsDiff(stage: string, dvcDeps: readonly string[], code: readonly string[], reads: readonly string[]): DepsDiff {
  const want = new Set([...code, ...reads].map(normalize));
  const have = new Set(dvcDeps.map(normalize));
  return { stage, missing: [...want].filter((d) => !have.has(d)).sort(), extra: [...have].filter((d) => !want.has(d)).sort() };
}

/** Per dvc.yaml stage: its code deps and its data reads (io(params).reads; none for CLI stages). */
export async function expectedDeps(root: string): Promise<{ code: Record<string, string[]>; reads: Record<string, string[]>; dvc: DvcFile; vars: Record<string, unknown> }> {
  const { loadParams } = await import('../stages/params.js');
  const { loadStage } = await import('../stages/index.js');
  const params = await loadParams(path.join(root, 'params.yaml'));
  const vars = params as unknown as Record<string, unknown>;
  const dvc = await loadDvcYaml(root, vars);
  const code: Record<string, string[]> = {};
  const reads: Record<string, string[]> = {};
  for (const s of dvc.stages) {
    code[s.name] = await stageCodeDeps(root, s.name);
    const mod = CLI_STAGE_ENTRIES[s.name] ? undefined : await loadStage(s.name);
    if (!mod && !CLI_STAGE_ENTRIES[s.name]) throw new TagsegError(`stage '${s.name}' has no module stages/${s.name}/index.ts`, { file: 'dvc.yaml' });
    reads[s.name] = (mod?.io(params).reads ?? []).map(normalize);
  }
  return { code, reads, dvc, vars };
}

/** `tagseg dvc-deps [--write]`: the stages whose deps differ (after rewriting them, with --write: none). */
export async function dvcDepsCommand(root: string, write: boolean): Promise<{ diffs: DepsDiff[]; text: string }> {
  const e = await expectedDeps(root);
  let diffs = e.dvc.stages.map((s) => depsDiff(s.name, s.deps, e.code[s.name]!, e.reads[s.name]!)).filter((d) => d.missing.length + d.extra.length > 0);
  if (write && diffs.length > 0) {
    const file = path.join(root, 'dvc.yaml');
    await writeFileAtomic(file, rewriteDeps(await fs.readFile(file, 'utf8'), e.vars, e.code, e.reads));
    const text = diffs.map((d) => `${d.stage}: +${d.missing.length} -${d.extra.length}`).join(', ');
    diffs = [];
    return { diffs, text: `dvc.yaml deps rewritten (${text})` };
  }
  const text = diffs.length === 0
    ? "dvc.yaml's deps are each stage's import closure + its data"
    : diffs.map((d) => `${d.stage}:${d.missing.map((m) => `\n  missing ${m}`).join('')}${d.extra.map((x) => `\n  extra   ${x}`).join('')}`).join('\n') + '\nrun `tagseg dvc-deps --write` to rewrite them';
  return { diffs, text };
}
