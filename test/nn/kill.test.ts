/**
 * SIGKILL and resume, in child processes (kill_child.ts: a tiny training through nn/loop.ts, the
 * checkpoint store and a model folder, as a stage does). Killed mid-epoch, mid-write of a
 * checkpoint, just before a checkpoint is committed, and between the two renames of the model
 * swap; each rerun resumes from the last committed epoch, and the end is byte-identical to an
 * uninterrupted run with no stray file (no temp, no old folder, an empty store).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const CHILD = path.join(import.meta.dirname, 'kill_child.ts');
let tmp: string;
beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-kill-'));
});
afterAll(async () => fs.rm(tmp, { recursive: true, force: true }));

interface ChildRun { signal: NodeJS.Signals | null; status: number | null; out?: { resumedFrom: number; epochs: number; losses: number[] }; stderr: string }

function child(project: string, kill = ''): ChildRun {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CHILD, project, ...(kill ? [kill] : [])], { encoding: 'utf8', timeout: 60_000 });
  const line = r.stdout.trim().split('\n').at(-1);
  return { signal: r.signal, status: r.status, stderr: r.stderr, out: r.status === 0 && line ? JSON.parse(line) : undefined };
}

/** Every file under `dir`, relative path -> bytes (empty folders listed with null). */
async function tree(dir: string): Promise<Record<string, Buffer | null>> {
  const out: Record<string, Buffer | null> = {};
  for (const e of await fs.readdir(dir, { recursive: true, withFileTypes: true })) {
    const f = path.join(e.parentPath, e.name);
    if (e.isFile()) out[path.relative(dir, f)] = await fs.readFile(f);
    else if (e.isDirectory() && (await fs.readdir(f)).length === 0) out[`${path.relative(dir, f)}/`] = null;
  }
  return out;
}

function killed(r: ChildRun): void {
  expect(r.signal, r.stderr).toBe('SIGKILL');
}

describe('kill -9 and resume (child processes)', () => {
  it('killed mid-epoch, mid-write, before the commit and mid-swap: resumes and ends byte-identical, with no stray file', async () => {
    const a = path.join(tmp, 'a');
    const full = child(a);
    expect(full.out, full.stderr).toMatchObject({ resumedFrom: 0, epochs: 4 });
    const reference = await tree(a);
    expect(Object.keys(reference).sort()).toEqual(['models/toy/config.json', 'models/toy/weights/manifest.json', 'models/toy/weights/weights.bin']);

    const b = path.join(tmp, 'b');
    const store = path.join(b, '.tagseg/checkpoints/toy/toy0000000000001');
    killed(child(b, 'step:2:3')); // epoch 1 committed
    expect((await fs.readFile(path.join(store, 'latest'), 'utf8')).trim()).toBe('epoch-0001');
    killed(child(b, 'manifest:3')); // resumed at 1, epoch 2 committed, epoch 3's weights.bin written, no manifest
    expect((await fs.readdir(store)).filter((n) => n.endsWith('.tmp'))).toHaveLength(1);
    killed(child(b, 'latest:3')); // epoch 3 complete but not committed
    expect((await fs.readFile(path.join(store, 'latest'), 'utf8')).trim()).toBe('epoch-0002');
    expect((await fs.readdir(store)).sort()).toEqual(expect.arrayContaining(['epoch-0002', 'epoch-0003', 'latest']));
    const rest = child(b);
    expect(rest.out, rest.stderr).toMatchObject({ resumedFrom: 2, epochs: 4 });
    expect(rest.out!.losses).toEqual(full.out!.losses);
    expect(await tree(b)).toEqual(reference); // same bytes; nothing else: no temp, no old folder, store removed

    // A finished run leaves no state: the next run trains again, and is killed between the two
    // renames of the model folder swap (no models/toy, a models/toy.old-*). The rerun resumes the
    // committed last epoch (nothing to train), restores and replaces the model, cleans up.
    killed(child(b, 'swap'));
    expect((await fs.readdir(path.join(b, 'models'))).some((n) => n.startsWith('toy.old-'))).toBe(true);
    const after = child(b);
    expect(after.out, after.stderr).toMatchObject({ resumedFrom: 4, epochs: 4 });
    expect(await tree(b)).toEqual(reference);
  }, 240_000);
});
