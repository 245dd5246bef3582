/**
 * pipeline/commit.ts recoverCommits beside parallel shards: another shard's journal may be listed
 * and then removed (its run committed) before it is read. Reproduced deterministically: readFile of
 * a `*vanishing*.json` journal first removes it, as the other shard's commit does between the two
 * calls. A journal that cannot be read for another reason is still an error (control).
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const readFile = (async (p: Parameters<typeof real.readFile>[0], o?: Parameters<typeof real.readFile>[1]) => {
    const name = String(p);
    if (name.includes('vanishing')) await real.rm(name);
    if (name.includes('denied')) throw Object.assign(new Error(`EACCES: permission denied, open '${name}'`), { code: 'EACCES' });
    return real.readFile(p, o);
  }) as typeof real.readFile;
  return { ...real, default: { ...real, readFile }, readFile };
});

const { recoverCommits } = await import('../../pipeline/commit.js');

let tmp: string;
beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-commit-race-'));
  await fs.mkdir(path.join(tmp, '.tagseg', 'commit'), { recursive: true });
});
afterEach(() => fs.rm(tmp, { recursive: true, force: true }));

const journal = (name: string) => fs.writeFile(path.join(tmp, '.tagseg', 'commit', name), JSON.stringify({ stage: 'refine@0', id: 'ab12', pid: 1, state: 'staging', moves: [] }));

describe('recoverCommits beside parallel shards', () => {
  it('skips a journal that its run removed after the listing', async () => {
    await journal('refine@0-vanishing.json');
    expect(await recoverCommits(tmp)).toEqual([]);
  });

  it('still stops on a journal it cannot read (control)', async () => {
    await journal('refine@1-denied.json');
    await expect(recoverCommits(tmp)).rejects.toThrow(/unreadable commit journal \(EACCES/);
  });
});
