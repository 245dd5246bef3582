/**
 * pipeline/preflight.ts sizeOf: parallel shards of a stage share output folders (audit's overlay
 * folder holds each shard's staging folder), so a folder may vanish while another shard's
 * preflight sizes it. Reproduced deterministically: opendir of a `*.vanishing` folder first
 * removes it (lstat saw it, then it is gone), as a shard's commit does between the two calls.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const opendir = async (p: string, o?: Parameters<typeof real.opendir>[1]) => {
    if (p.endsWith('.vanishing')) await real.rm(p, { recursive: true });
    if (p.endsWith('.denied')) throw Object.assign(new Error(`EACCES: permission denied, opendir '${p}'`), { code: 'EACCES' });
    return real.opendir(p, o);
  };
  return { ...real, default: { ...real, opendir }, opendir };
});

const { sizeOf } = await import('../../pipeline/preflight.js');

let tmp: string;
beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-preflight-'));
});
afterEach(() => fs.rm(tmp, { recursive: true, force: true }));

describe('preflight sizeOf', () => {
  it('counts the bytes under a folder; a sub-folder that vanishes while it is walked counts 0, not an error', async () => {
    const out = path.join(tmp, 'overlays');
    await fs.mkdir(path.join(out, '.part-1-of-3.tmp.vanishing', 'final'), { recursive: true });
    await fs.writeFile(path.join(out, 'a.jpg'), Buffer.alloc(100));
    await fs.writeFile(path.join(out, '.part-1-of-3.tmp.vanishing', 'final', 'b.jpg'), Buffer.alloc(50));
    await fs.mkdir(path.join(out, 'cam'));
    await fs.writeFile(path.join(out, 'cam', 'c.jpg'), Buffer.alloc(7));
    expect(await sizeOf(out)).toBe(107);
    expect(await sizeOf(path.join(tmp, 'missing'))).toBe(0);
  });

  it('control: another error of the walk is not swallowed', async () => {
    await fs.mkdir(path.join(tmp, 'out', 'x.denied'), { recursive: true });
    await expect(sizeOf(path.join(tmp, 'out'))).rejects.toThrow(/EACCES/);
  });
});
