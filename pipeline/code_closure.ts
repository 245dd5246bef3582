/**
 * Each dvc.yaml stage's code deps, derived instead of hand-written: the files its run path imports
 * (esbuild's metafile, following static and literal dynamic imports), plus what a module loads at
 * run time without an import (RUNTIME_LOADS), plus the library versions (LIBRARIES). Listed as
 * files, or as a folder where every file under it belongs to the closure.
 *
 * A stage's run path starts at its module and pipeline/run_stage.ts (params, context, run log).
 * bin/tagseg.js, cli/main.ts (+ cli/version.ts) and stages/index.ts are loaded too, but only parse
 * the command line and pick the module (stages are imported on demand), so editing them leaves
 * every stage fresh; test/cli/code_deps.test.ts records what `tagseg run <stage>` loads.
 * `tagseg dvc-deps --check | --write` (code_deps.ts) compares dvc.yaml with this or rewrites its
 * deps; the training stages fingerprint the same files in their resume key (nn/loop.ts).
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { TagsegError } from './errors.js';

export const RUN_PATH = 'pipeline/run_stage.ts';

/**
 * Stages that are CLI commands rather than stage modules: where their code starts.
 * synth: `tagseg synth --from-params` = readParams of the shared sections + generateSynthetic.
 */
export const CLI_STAGE_ENTRIES: Record<string, string[]> = {
  synth: ['data/synth.ts', 'pipeline/params_core.ts'],
};

/**
 * What a module of the closure loads at run time without an import: `files` become deps as they
 * are, `entries` are followed like a stage module. Every closure file that uses import.meta.url
 * (the way to reach a file by path) must be listed, with why; a test enforces it.
 */
export const RUNTIME_LOADS: Record<string, { files?: string[]; entries?: string[]; why: string }> = {
  'stages/refine/pool.ts': { entries: ['stages/refine/worker.ts'], why: "refine's worker threads load worker.ts (ops/workerpool.ts)" },
  'ops/workerpool.ts': { entries: ['ops/worker_boot.mjs'], why: 'worker threads start from worker_boot.mjs, which loads the task module' },
  'ops/crf_pool.ts': { entries: ['ops/crf_worker.ts'], why: 'CRF worker threads load crf_worker.ts' },
  'stages/audit/report.ts': { files: ['stages/audit/report'], why: 'the page templates (HTML, CSS, JS) are read from stages/audit/report/' },
  'pipeline/arrow.ts': { files: ['package.json'], why: "every table records tagseg's version from package.json" },
  'cli/version.ts': { files: ['package.json'], why: "tagseg's version comes from package.json" },
  'pipeline/backend.ts': {
    files: ['native'],
    why: 'tfjs-node, the wasm backend and its .wasm come from node_modules (package-lock.json); native/ picks the libtensorflow build of the binding',
  },
  'nn/mobilenet.ts': { why: 'reads the pretrained weights: data named by cam.pretrained, not code' },
  'pipeline/code_closure.ts': { why: 'finds the repository root for ownCodeDeps; loads no file' },
};

/**
 * Library versions: the number-computing code runs tfjs, sharp/libvips, apache-arrow etc. from
 * node_modules, so the lock file is a dep of every stage (README "Metrics and run log").
 */
export const LIBRARIES = ['package-lock.json'];

const SKIP_DIRS = new Set(['node_modules', '.git', '.tagseg', '.dvc']);


/** Every project file `entries` need (sorted, project-relative): imports, runtime loads, libraries. */
export async function codeClosure(root: string, entries: string[]): Promise<string[]> {
  const files = new Set<string>(LIBRARIES);
  const followed = new Set<string>();
  let todo = [...entries];
  while (todo.length > 0) {
    todo.forEach((e) => followed.add(e));
    const r = await build({
      entryPoints: todo.map((e) => path.join(root, e)), absWorkingDir: root, bundle: true, write: false, metafile: true,
      platform: 'node', format: 'esm', packages: 'external', logLevel: 'silent', preserveSymlinks: true, outdir: path.join(root, '.esbuild-unused'),
    }).catch((err: unknown) => {
      throw new TagsegError(`cannot follow the imports of ${todo.join(', ')}: ${String(err)}`, { hint: 'fix the import, then rerun' });
    });
    const next: string[] = [];
    for (const f of Object.keys(r.metafile.inputs).map(normalize)) {
      files.add(f);
      const extra = RUNTIME_LOADS[f];
      extra?.files?.forEach((x) => files.add(x));
      for (const e of extra?.entries ?? []) if (!followed.has(e)) next.push(e);
    }
    todo = [...new Set(next)];
  }
  return [...files].sort();
}

/** Folder entries, symlinks followed (a workspace links its code folders). */
async function entries(root: string, dir: string): Promise<{ rel: string; name: string; dir: boolean }[]> {
  const out = [];
  for (const d of await fs.readdir(path.join(root, dir), { withFileTypes: true })) {
    const rel = path.posix.join(dir, d.name);
    const isDir = d.isSymbolicLink() ? (await fs.stat(path.join(root, rel)).catch(() => null))?.isDirectory() ?? false : d.isDirectory();
    out.push({ rel, name: d.name, dir: isDir });
  }
  return out;
}

/** Files under `dir` (project-relative), recursively, as DVC would hash them. */
async function filesUnder(root: string, dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await entries(root, dir)) {
    if (!e.dir) out.push(e.rel);
    else if (!SKIP_DIRS.has(e.name)) out.push(...(await filesUnder(root, e.rel)));
  }
  return out;
}

/** Replace files by their folder where every file under the folder is in the set (never the root). */
export async function compressDeps(root: string, deps: string[]): Promise<string[]> {
  const set = new Set<string>();
  for (const d of deps) {
    const st = await fs.stat(path.join(root, d)).catch(() => null);
    if (!st) throw new TagsegError(`code dep '${d}' does not exist`, { hint: 'fix RUNTIME_LOADS in pipeline/code_closure.ts' });
    if (st.isDirectory()) (await filesUnder(root, d)).forEach((f) => set.add(f));
    else set.add(d);
  }
  const cover = async (dir: string): Promise<string[]> => {
    const all = await filesUnder(root, dir);
    if (dir !== '.' && all.length > 0 && all.every((f) => set.has(f))) return [dir];
    const out: string[] = [];
    for (const e of await entries(root, dir)) {
      if (!e.dir) {
        if (set.has(e.rel)) out.push(e.rel);
      } else if (!SKIP_DIRS.has(e.name) && all.some((f) => set.has(f) && f.startsWith(`${e.rel}/`))) out.push(...(await cover(e.rel)));
    }
    return out;
  };
  return (await cover('.')).sort();
}

/** The code deps dvc.yaml lists for a stage whose code starts at `entries`: its closure, folders where whole. */
export async function entryCodeDeps(root: string, entries: string[]): Promise<string[]> {
  return compressDeps(root, await codeClosure(root, entries));
}

/** The repository this code runs from (a workspace links its code here). */
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * Code deps of the stage whose module is `moduleUrl` (its `import.meta.url`) in the repository
 * this code runs from: what a training stage puts in its resume key (nn/loop.ts trainingStore), so
 * a code change never resumes an old run. Equal to dvc.yaml's code deps for that stage.
 */
export async function ownCodeDeps(moduleUrl: string): Promise<string[]> {
  const entry = path.relative(REPO_ROOT, fileURLToPath(moduleUrl)).split(path.sep).join('/');
  return entryCodeDeps(REPO_ROOT, [entry, RUN_PATH]);
}

/** Is `file` one of `deps` or under one of them? */
export function covers(deps: readonly string[], file: string): boolean {
  const f = normalize(file);
  return deps.some((d) => f === normalize(d) || f.startsWith(`${normalize(d)}/`));
}

/** Project-relative posix path without `./` or a trailing slash (as dvcfile.ts's normalize). */
export function normalize(p: string): string {
  const n = path.posix.normalize(p.replace(/\\/g, '/'));
  return n.length > 1 ? n.replace(/\/+$/, '') : n;
}
