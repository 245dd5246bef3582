/**
 * Bridge to the real `dvc`. `tagseg repro` and `tagseg status` hand over to it only in a DVC
 * project (a `.dvc/` folder, as `dvc init` makes) with `dvc` on PATH; anywhere else dvc would stop
 * with "you are not inside of a DVC repository", so tagseg's own runner runs instead.
 */
import { execa } from 'execa';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { TagsegError } from '../pipeline/errors.js';

/** Which runner `repro`/`status` use at `root`, and why (for the log line). */
export async function chooseRunner(root: string, allowDvc = true): Promise<{ runner: 'dvc' | 'tagseg'; why: string }> {
  if (!allowDvc) return { runner: 'tagseg', why: "--no-dvc: tagseg's own runner" };
  const isProject = await fs.stat(path.join(root, '.dvc')).then((s) => s.isDirectory(), () => false);
  if (!isProject) return { runner: 'tagseg', why: "no .dvc/ folder here (not a DVC project): tagseg's own runner" };
  if (!(await dvcAvailable())) return { runner: 'tagseg', why: "dvc is not on PATH: tagseg's own runner" };
  return { runner: 'dvc', why: 'DVC project and dvc on PATH: handing over to dvc' };
}

/** True when `dvc --version` runs and succeeds (false when dvc is not on PATH). */
export async function dvcAvailable(): Promise<boolean> {
  const r = await execa('dvc', ['--version'], { reject: false, timeout: 30_000, stdin: 'ignore' });
  return r.exitCode === 0;
}

/**
 * `dvc repro <args>` (args are what follows `repro`: flags and targets) in `cwd`, with dvc's own
 * output on our terminal; resolves to its exit code. Throws a TagsegError when dvc cannot be
 * started at all (not installed).
 */
export async function dvcRepro(args: string[], cwd?: string): Promise<number> {
  return dvcRun(['repro', ...args], cwd);
}

/** `dvc <args>` in `cwd`, its output on our terminal; resolves to its exit code. */
export async function dvcRun(args: string[], cwd?: string): Promise<number> {
  const r = await execa('dvc', args, { stdio: 'inherit', reject: false, cwd });
  if (typeof r.exitCode === 'number') return r.exitCode;
  if ((r as { code?: string }).code === 'ENOENT') {
    throw new TagsegError('dvc is not installed', { hint: 'pip install dvc, or use `tagseg repro` without dvc' });
  }
  // Killed by a signal (e.g. Ctrl-C): report failure the shell way.
  return r.signal ? 130 : 1;
}
