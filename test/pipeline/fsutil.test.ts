import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeLeftovers, replaceDirAtomic, tempPathFor } from '../../pipeline/fsutil.js';

let tmp: string;
beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-fsutil-'));
});
afterAll(async () => fs.rm(tmp, { recursive: true, force: true }));

describe('removeLeftovers', () => {
  it('removes temp files and old folders of the target only, never looking inside it', async () => {
    const dir = path.join(tmp, 'a');
    await fs.mkdir(path.join(dir, 'cam', 'weights'), { recursive: true });
    await fs.writeFile(path.join(dir, 'cam', '.config.json.0123abcd.tmp'), 'inside the output: not ours to touch');
    await fs.writeFile(tempPathFor(path.join(dir, 'cam')), 'x');
    await fs.mkdir(path.join(dir, 'cam.old-89abcdef'));
    await fs.writeFile(path.join(dir, '.cams.arrow.0123abcd.tmp'), 'another output');
    await fs.writeFile(path.join(dir, 'cam.bak'), 'a user file');
    const gone = await removeLeftovers(path.join(dir, 'cam'));
    expect(gone).toHaveLength(2);
    expect((await fs.readdir(dir)).sort()).toEqual(['.cams.arrow.0123abcd.tmp', 'cam', 'cam.bak']);
    expect((await fs.readdir(path.join(dir, 'cam'))).sort()).toEqual(['.config.json.0123abcd.tmp', 'weights']);
    expect(await removeLeftovers(path.join(tmp, 'missing', 'x'))).toEqual([]);
  });

  it('a kill between the two renames of replaceDirAtomic loses nothing: the old folder comes back', async () => {
    const dir = path.join(tmp, 'b');
    const target = path.join(dir, 'model');
    await fs.mkdir(target, { recursive: true });
    await fs.writeFile(path.join(target, 'v'), 'old');
    // the state right after the first rename: no target, the old one aside, the staged one complete
    await fs.rename(target, `${target}.old-0badc0de`);
    const staged = tempPathFor(target);
    await fs.mkdir(staged);
    await fs.writeFile(path.join(staged, 'v'), 'new');
    expect(await removeLeftovers(target)).toEqual(['model.old-0badc0de -> model', path.basename(staged)]);
    expect(await fs.readFile(path.join(target, 'v'), 'utf8')).toBe('old');
    expect(await fs.readdir(dir)).toEqual(['model']);
    // and a swap that completes replaces it, leaving nothing else
    const next = tempPathFor(target);
    await fs.mkdir(next);
    await fs.writeFile(path.join(next, 'v'), 'new');
    await replaceDirAtomic(next, target);
    expect(await fs.readFile(path.join(target, 'v'), 'utf8')).toBe('new');
    expect(await fs.readdir(dir)).toEqual(['model']);
  });
});
