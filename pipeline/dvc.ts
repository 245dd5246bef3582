/**
 * Bridge to the real `dvc`, preferred over tagseg's own runner when it is installed: `tagseg repro`
 * then hands over to `dvc repro` so that dvc.lock, the DVC cache and remotes stay in step.
 */
import { execa } from 'execa';
import { TagsegError } from './errors.js';

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
  const r = await execa('dvc', ['repro', ...args], { stdio: 'inherit', reject: false, cwd });
  if (typeof r.exitCode === 'number') return r.exitCode;
  if ((r as { code?: string }).code === 'ENOENT') {
    throw new TagsegError('dvc is not installed', { hint: 'pip install dvc, or use `tagseg repro` without dvc' });
  }
  // Killed by a signal (e.g. Ctrl-C): report failure the shell way.
  return r.signal ? 130 : 1;
}
