/**
 * A stage commits all its outputs together or none. While a stage runs (runner.ts wraps it in
 * `withStageCommit`), every atomic write aimed at one of its declared outputs (a table's close, a
 * `writeFileAtomic`, a `replaceDirAtomic`) is *staged*: the finished temp file or folder stays beside
 * its target and is listed in a journal, `.tagseg/commit/<stage>.json`. When the stage returns, the
 * journal is marked `committing` (the commit point) and the staged paths are renamed into place.
 *
 * A kill at any step is repaired by `recoverCommits`, which every stage run (and `repro`/`status`)
 * calls first: a journal still `staging` is rolled back (its staged paths deleted, the old outputs
 * untouched); a `committing` one is rolled forward (the remaining renames done). Either way a reader
 * sees the outputs of one run, old or new, never both side by side.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { TagsegError, messageOf } from './errors.js';
import { log } from './log.js';
import { removeTree } from './remove_tree.js';

const JOURNAL_DIR = '.tagseg/commit';

interface Move {
  /** Staged path and its target, relative to the project root. */
  from: string;
  to: string;
  /** A folder (its old version is moved aside first, rename cannot replace a non-empty folder). */
  dir: boolean;
}
interface Journal { stage: string; id: string; pid: number; state: 'staging' | 'committing'; moves: Move[] }

const active = new AsyncLocalStorage<StageCommit | undefined>();
/** Stages of this process now between begin and commit: their journals are not leftovers. */
const inFlight = new Set<string>();

/**
 * Fault injection for the kill tests only: `TAGSEG_FAULT=commit:<step>` SIGKILLs the process at that
 * step (`staged`, `committing`, `moved:<i>`, `done`); `setCommitFault` does the same in-process by
 * throwing a SimulatedCrash that skips every cleanup, as a kill would.
 */
export class SimulatedCrash extends Error {}
let fault: string | undefined = process.env.TAGSEG_FAULT?.startsWith('commit:') ? process.env.TAGSEG_FAULT.slice(7) : undefined;
let faultThrows = false;
export function setCommitFault(step: string | undefined): void {
  fault = step;
  faultThrows = step !== undefined;
}
function checkpoint(step: string): void {
  if (fault !== step) return;
  if (faultThrows) throw new SimulatedCrash(`simulated crash at commit step '${step}'`);
  process.kill(process.pid, 'SIGKILL');
}

export class StageCommit {
  private readonly moves: (Move & { ready: boolean })[] = [];
  private journalWrite: Promise<void> = Promise.resolve();
  readonly id = randomBytes(4).toString('hex');

  constructor(
    readonly root: string,
    readonly stage: string,
    /** Absolute paths of the stage's declared outputs. */
    private readonly outputs: string[],
  ) {}

  /** Whether `target` is (inside) one of the stage's declared outputs. */
  covers(target: string): boolean {
    const t = path.resolve(target);
    return this.outputs.some((o) => t === o || t.startsWith(o + path.sep));
  }

  /** Lists `from` (to be renamed onto `to` at commit) in the journal before anything is written there. */
  async add(from: string, to: string, o: { dir: boolean; ready: boolean }): Promise<void> {
    this.moves.push({ from: this.rel(from), to: this.rel(to), dir: o.dir, ready: o.ready });
    await this.writeJournal('staging');
  }

  /** `from` is complete: it may be committed. */
  ready(from: string): void {
    const m = this.moves.find((x) => x.from === this.rel(from));
    if (m) m.ready = true;
  }

  /** `from` was abandoned (a writer aborted): deleted, and not committed. */
  async drop(from: string): Promise<void> {
    const i = this.moves.findIndex((x) => x.from === this.rel(from));
    if (i >= 0) this.moves.splice(i, 1);
    await removeTree(from);
  }

  /** The commit point, then the renames; the journal goes last. */
  async commit(): Promise<void> {
    const unfinished = this.moves.filter((m) => !m.ready);
    if (unfinished.length) {
      throw new TagsegError(`stage '${this.stage}' returned with unfinished outputs: ${unfinished.map((m) => m.to).join(', ')}`);
    }
    checkpoint('staged');
    try {
      await this.writeJournal('committing');
    } catch (err) {
      await this.rollback();
      throw err;
    }
    checkpoint('committing');
    try {
      await applyMoves(this.root, this.journal('committing'));
    } catch (err) {
      if (err instanceof SimulatedCrash) throw err;
      // Past the commit point the new outputs win: the journal stays for the next run to finish.
      throw new TagsegError(`could not put the outputs of stage '${this.stage}' in place: ${messageOf(err)}`, {
        file: (err as NodeJS.ErrnoException).path, cause: err,
        hint: 'fix the cause; the next tagseg command in this project finishes the commit',
      });
    }
    checkpoint('done');
    await fs.rm(this.journalFile(), { force: true });
  }

  /** Deletes everything staged; the previous outputs stay as they were. */
  async rollback(): Promise<void> {
    await this.journalWrite.catch(() => undefined);
    for (const m of this.moves) await removeTree(path.join(this.root, m.from));
    await fs.rm(this.journalFile(), { force: true });
  }

  private journal(state: Journal['state']): Journal {
    return { stage: this.stage, id: this.id, pid: process.pid, state, moves: this.moves.map(({ from, to, dir }) => ({ from, to, dir })) };
  }

  private journalFile(): string {
    return path.join(this.root, JOURNAL_DIR, `${this.stage}.json`);
  }

  private rel(p: string): string {
    return path.relative(this.root, path.resolve(p));
  }

  /** Serialized: concurrent stage() calls must not reorder journal versions. */
  private writeJournal(state: Journal['state']): Promise<void> {
    const text = `${JSON.stringify(this.journal(state), null, 1)}\n`;
    this.journalWrite = this.journalWrite.then(() => writeSyncedReplace(this.journalFile(), text));
    return this.journalWrite;
  }
}

/** Temp file, fsync, rename, fsync the folder: the journal must be on disk before the renames it orders. */
async function writeSyncedReplace(file: string, text: string): Promise<void> {
  const dir = path.dirname(file);
  await fs.mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await fs.open(tmp, 'w');
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, file);
  const dh = await fs.open(dir, 'r');
  await dh.sync().finally(() => dh.close());
}

async function present(p: string): Promise<boolean> {
  return fs.lstat(p).then(() => true, () => false);
}

/** Idempotent: each step checks what a killed earlier attempt already did. */
async function applyMoves(root: string, j: Journal): Promise<void> {
  for (const [i, m] of j.moves.entries()) {
    const from = path.join(root, m.from);
    const to = path.join(root, m.to);
    const old = `${to}.old-${j.id}`;
    if (await present(from)) {
      await fs.mkdir(path.dirname(to), { recursive: true });
      if (m.dir && (await present(to))) {
        await removeTree(old);
        await fs.rename(to, old);
      }
      await fs.rename(from, to);
    }
    checkpoint(`moved:${i}`);
  }
  for (const m of j.moves) if (m.dir) await removeTree(path.join(root, `${m.to}.old-${j.id}`));
}

function alive(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Repairs the journals that killed runs left in `root`: rolls `committing` ones forward and
 * `staging` ones back. Journals of a live process (a run in progress) are left alone.
 * Returns what it did, one line per journal.
 */
export async function recoverCommits(root: string): Promise<string[]> {
  const dir = path.join(root, JOURNAL_DIR);
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  const done: string[] = [];
  for (const name of names) {
    const file = path.join(dir, name);
    if (name.endsWith('.tmp')) {
      // A journal half written by a killed run; one of a live process (a shard running beside us) stays.
      const pid = /\.(\d+)\.[0-9a-f]+\.tmp$/.exec(name)?.[1];
      if (!pid || !alive(Number(pid))) await fs.rm(file, { force: true });
      continue;
    }
    if (!name.endsWith('.json')) continue;
    let j: Journal;
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (err) {
      // Gone since the listing: its run (a shard beside us) committed and removed it.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw new TagsegError(`unreadable commit journal (${messageOf(err)})`, { file, hint: 'check the permissions of .tagseg/commit' });
    }
    try {
      j = JSON.parse(text) as Journal;
      if (!Array.isArray(j.moves) || !['staging', 'committing'].includes(j.state)) throw new Error('not a commit journal');
    } catch (err) {
      throw new TagsegError(`unreadable commit journal (${messageOf(err)})`, {
        file, hint: 'an interrupted stage left it; check that stage\'s outputs, then delete this file and rerun the stage',
      });
    }
    if (alive(j.pid) || (j.pid === process.pid && inFlight.has(j.stage))) continue;
    if (j.state === 'committing') {
      await applyMoves(root, j);
      done.push(`stage '${j.stage}': finished committing the outputs of an interrupted run`);
    } else {
      for (const m of j.moves) await removeTree(path.join(root, m.from));
      done.push(`stage '${j.stage}': removed the unfinished outputs of an interrupted run (the previous outputs are kept)`);
    }
    await fs.rm(file, { force: true });
  }
  for (const line of done) log.warn(line);
  return done;
}

/**
 * Runs `fn` with the stage's outputs staged, then commits them together; on an error the staged
 * outputs are deleted and the previous ones stay.
 */
export async function withStageCommit<T>(root: string, stage: string, outputs: string[], fn: () => Promise<T>): Promise<T> {
  if (inFlight.has(stage)) throw new TagsegError(`stage '${stage}' is already running in this process`);
  const txn = new StageCommit(root, stage, outputs.map((o) => path.resolve(root, o)));
  inFlight.add(stage);
  try {
    let result: T;
    try {
      result = await active.run(txn, fn);
    } catch (err) {
      // The stage's own error is the one to report; a failed cleanup is left to the next run's recovery.
      if (!(err instanceof SimulatedCrash)) await txn.rollback().catch((e: unknown) => log.warn(`could not remove the staged outputs of stage '${stage}': ${messageOf(e)}`));
      throw err;
    }
    await txn.commit();
    return result;
  } finally {
    inFlight.delete(stage);
  }
}

/** The running stage's commit when `target` is one of its outputs, else undefined (write in place). */
export function commitFor(target: string): StageCommit | undefined {
  const txn = active.getStore();
  return txn?.covers(target) ? txn : undefined;
}

/**
 * Runs `fn` with its writes landing at once, outside the stage's commit: for state that must
 * survive a kill mid-stage, such as the resumable training checkpoint.
 */
export function outsideCommit<T>(fn: () => Promise<T>): Promise<T> {
  return active.run(undefined, fn);
}
