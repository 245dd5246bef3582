/**
 * The checkpoint store: resumable training state, kept outside DVC's outputs (git-ignored).
 *
 *   <project>/.tagseg/checkpoints/<stage>/<key>/latest         "epoch-0003\n"
 *   <project>/.tagseg/checkpoints/<stage>/<key>/epoch-0003/    a checkpoint (checkpoint.ts)
 *
 * `<key>` hashes everything that shapes the trained weights (params with `epochs`, data, code:
 * see trainingKey), so only an unfinished run of the identical training is ever resumed. A stage
 * keeps one key: starting another removes the rest, and a finished training removes its folder
 * once the model is in models/<stage> (DVC's cache keeps finished models).
 *
 * Commit protocol of an epoch: write `epoch-N/` whole (temp folder + rename), replace `latest`
 * (temp file + rename), then remove the previous epoch folder. `latest` changes in one rename, so
 * a kill at any moment leaves it naming a complete checkpoint (or, before the first commit, no
 * `latest` and no checkpoint); whatever else lies in the folder is a leftover that the next run
 * removes (openStore).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import { ensureDir, writeFileAtomic } from '../pipeline/fsutil.js';

/** The store, relative to the project root (under .tagseg/, which .gitignore lists). */
export const STORE_ROOT = '.tagseg/checkpoints';
const LATEST = 'latest';
const EPOCH_RE = /^epoch-\d{4,}$/;

/** The store folder of a stage, relative to the project root. */
export const storeOf = (stage: string): string => `${STORE_ROOT}/${stage}`;

export const epochName = (epoch: number): string => `epoch-${String(epoch).padStart(4, '0')}`;

export interface OpenedStore {
  /** The key's folder (created). */
  dir: string;
  /** Keys of other, unfinished trainings that were removed. */
  otherKeys: string[];
  /** Leftovers of killed writes that were removed (names relative to the stage folder). */
  leftovers: string[];
}

/**
 * Prepare `<stageDir>/<key>`: remove other keys and every entry of the key's folder that its
 * `latest` does not name (temp files and folders, superseded or uncommitted epochs).
 */
export async function openStore(stageDir: string, key: string): Promise<OpenedStore> {
  const dir = path.join(stageDir, key);
  await ensureDir(dir);
  const otherKeys: string[] = [];
  const leftovers: string[] = [];
  for (const name of await fs.readdir(stageDir)) {
    if (name === key) continue;
    await fs.rm(path.join(stageDir, name), { recursive: true, force: true });
    (name.startsWith('.') ? leftovers : otherKeys).push(name); // temp names start with a dot
  }
  const ckpt = await latestCheckpoint(dir); // checked before anything is removed
  const current = ckpt === null ? null : path.basename(ckpt);
  for (const name of await fs.readdir(dir)) {
    if (name === LATEST || name === current) continue;
    await fs.rm(path.join(dir, name), { recursive: true, force: true });
    leftovers.push(`${key}/${name}`);
  }
  return { dir, otherKeys, leftovers };
}

/** The name `latest` holds (checked), or null when nothing was committed yet. */
async function readLatestName(dir: string): Promise<string | null> {
  const file = path.join(dir, LATEST);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new TagsegError(`cannot read the checkpoint pointer: ${messageOf(err)}`, { file, cause: err });
  }
  const name = text.trim();
  if (!EPOCH_RE.test(name)) {
    throw new TagsegError(`corrupt checkpoint pointer (${JSON.stringify(text.slice(0, 40))})`, { file, hint: `delete ${dir} to train from scratch` });
  }
  return name;
}

/** The committed checkpoint folder of `dir` (a key's folder), or null when there is none. */
export async function latestCheckpoint(dir: string): Promise<string | null> {
  const name = await readLatestName(dir);
  if (name === null) return null;
  const ckpt = path.join(dir, name);
  try {
    await fs.access(ckpt);
  } catch {
    throw new TagsegError(`the checkpoint pointer names ${name}, which is missing`, { file: path.join(dir, LATEST), hint: `delete ${dir} to train from scratch` });
  }
  return ckpt;
}

/**
 * Commit epoch `epoch` in `dir`: `write(folder)` writes the checkpoint (atomically, e.g.
 * saveCheckpoint), then `latest` moves to it, then the previous one is removed.
 */
export async function commitEpoch(dir: string, epoch: number, write: (folder: string) => Promise<void>): Promise<void> {
  const previous = await readLatestName(dir);
  const name = epochName(epoch);
  await fs.rm(path.join(dir, name), { recursive: true, force: true }); // an uncommitted one of a killed run
  await write(path.join(dir, name));
  await writeFileAtomic(path.join(dir, LATEST), `${name}\n`);
  if (previous !== null && previous !== name) await fs.rm(path.join(dir, previous), { recursive: true, force: true });
}

/** Remove a stage's whole store folder (after its finished model is saved), and the store and .tagseg/ when that leaves them empty. */
export async function removeStore(stageDir: string): Promise<void> {
  await fs.rm(stageDir, { recursive: true, force: true });
  for (const dir of [path.dirname(stageDir), path.dirname(path.dirname(stageDir))]) {
    try {
      await fs.rmdir(dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOENT') return;
      throw err;
    }
  }
}

/**
 * Fingerprint of files (source code, pretrained weights): sha256 over the sorted relative paths
 * and contents of every file under `paths` (files or folders, relative to `root`; symlinked
 * folders are followed, as a workspace links the repository's). The code's is part of the store
 * key, so that a resumed run never mixes weights trained by two versions of the code.
 */
export async function filesFingerprint(root: string, paths: readonly string[]): Promise<string> {
  const files: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    const abs = path.join(root, rel);
    const st = await fs.stat(abs).catch(() => null);
    if (!st) return;
    if (st.isFile()) {
      files.push(rel);
      return;
    }
    if (!st.isDirectory()) return;
    for (const name of (await fs.readdir(abs)).sort()) await walk(`${rel}/${name}`);
  };
  for (const p of [...paths].sort()) await walk(p);
  const h = createHash('sha256');
  for (const f of [...new Set(files)].sort()) {
    h.update(`${f}\0`);
    h.update(await fs.readFile(path.join(root, f)));
    h.update('\0');
  }
  return h.digest('hex').slice(0, 16);
}
