/**
 * Checks made before a stage starts, so that a stage that trains for an hour does not fail at its
 * last write: every output's folder can be created and written (a probe file), and the disk holding
 * them has room for outputs the size of the previous run's (new outputs are staged beside the old
 * ones until the stage commits, commit.ts).
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { TagsegError, fsError } from './errors.js';

async function probe(dir: string, what: string): Promise<void> {
  const file = path.join(dir, `.tagseg-probe-${randomBytes(4).toString('hex')}.tmp`);
  try {
    await fs.writeFile(file, '');
    await fs.rm(file, { force: true });
  } catch (err) {
    // Named by its folder: the probe file is ours, the folder is what the user must fix.
    throw fsError(Object.assign(err as Error, { path: dir }), `cannot write ${what}`, dir);
  }
}

/** Bytes under `p` (0 when it does not exist, or for what vanishes while it is walked). */
export async function sizeOf(p: string): Promise<number> {
  const st = await fs.lstat(p).catch(() => null);
  if (!st) return 0;
  if (!st.isDirectory()) return st.size;
  let n = 0;
  try {
    // streamed, not readdir'd: an output folder may hold the report's 60k overlays
    for await (const e of await fs.opendir(p)) n += await sizeOf(path.join(p, e.name));
  } catch (err) {
    // A parallel shard may commit (rename) or remove its staging folder under this one while it
    // is sized: what is gone takes no room.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return n;
}

/**
 * Throws a TagsegError naming the first output of `stage` that cannot be written, or the disk
 * without room for them. `outputs` are relative to `root`.
 */
export async function checkOutputsWritable(root: string, stage: string, outputs: string[]): Promise<void> {
  const need = new Map<number, { dir: string; bytes: number }>();
  const dirs = [path.join(root, '.tagseg', 'commit')];
  for (const out of outputs) {
    const abs = path.resolve(root, out);
    const st = await fs.stat(abs).catch(() => null);
    dirs.push(path.dirname(abs));
    // Model folders are written inside (staged checkpoints sit next to the ones they replace).
    if (st?.isDirectory()) dirs.push(abs);
  }
  for (const [i, dir] of dirs.entries()) {
    const what = i === 0 ? 'the commit journal folder' : `the outputs of stage '${stage}'`;
    try {
      await fs.mkdir(dir, { recursive: true });
    } catch (err) {
      throw fsError(err, `cannot create the folder for ${what}`, dir);
    }
    await probe(dir, what);
  }
  for (const out of outputs) {
    const abs = path.resolve(root, out);
    const dev = (await fs.stat(path.dirname(abs))).dev;
    const cur = need.get(dev) ?? { dir: path.dirname(abs), bytes: 0 };
    cur.bytes += await sizeOf(abs);
    need.set(dev, cur);
  }
  for (const { dir, bytes } of need.values()) {
    const s = await fs.statfs(dir);
    const free = s.bavail * s.bsize;
    if (free < bytes) {
      const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
      throw new TagsegError(`not enough free space for the outputs of stage '${stage}': ${mib(free)} free, its previous outputs take ${mib(bytes)}`, {
        file: dir, hint: 'free disk space there (df -h) and rerun; new outputs are written beside the old ones until the stage finishes',
      });
    }
  }
}
