/**
 * The streaming file helpers of the audit report: BufferedTextFile (text through one reused
 * buffer), RowSpill (rows on disk, read back in any order) and removeTree (recursive delete that
 * reads folders as a stream). Each against what it replaces: a whole-string write, in-memory rows,
 * fs.rm.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferedTextFile } from '../../pipeline/fsutil.js';
import { removeTree } from '../../pipeline/remove_tree.js';
import { RowSpill } from '../../pipeline/spill.js';

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-spill-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('BufferedTextFile', () => {
  it('writes exactly the concatenated pieces: multi-byte text across flushes, pieces larger than the buffer', async () => {
    const pieces = Array.from({ length: 500 }, (_, i) => `${i},é→𝄞,${'x'.repeat(i % 37)}\n`);
    pieces.splice(250, 0, 'y'.repeat(300)); // larger than the 64-byte buffer below: written straight through
    const file = path.join(dir, 'text.csv');
    const out = await BufferedTextFile.open(file, 64);
    for (const p of pieces) await out.write(p);
    await out.close();
    expect(await fs.readFile(file, 'utf8')).toBe(pieces.join(''));
  });

  it('abort leaves what was flushed and drops the buffer', async () => {
    const file = path.join(dir, 'aborted.txt');
    const out = await BufferedTextFile.open(file, 8);
    await out.write('12345678'); // fills the buffer
    await out.write('9'); // flushes the first 8 bytes
    await out.abort();
    expect(await fs.readFile(file, 'utf8')).toBe('12345678');
  });
});

describe('RowSpill', () => {
  it('gives back each row as written, in any order', async () => {
    const rows = Array.from({ length: 300 }, (_, i) => ({ id: `im ${i} ü`, rank: i, score: i / 7, tags: ['a', 'b'].slice(0, i % 3), gt: i % 5 ? null : 0.1 + i, ok: i % 2 === 0 }));
    const spill = await RowSpill.create(path.join(dir, 'rows.jsonl'));
    for (const r of rows) await spill.append(r);
    expect(spill.length).toBe(300);
    const order = rows.map((_, k) => k).sort((a, b) => ((a * 7919) % 300) - ((b * 7919) % 300));
    for (const k of order) expect(await spill.get(k)).toEqual(rows[k]);
    await expect(spill.append({ id: 'late' })).rejects.toThrow(/after reading started/);
    await spill.remove();
    await expect(fs.access(spill.file)).rejects.toThrow();
  });

  it('control: a truncated spill file is an error, not a wrong row', async () => {
    const spill = await RowSpill.create(path.join(dir, 'short.jsonl'));
    await spill.append({ id: 'a', v: 1 });
    await spill.append({ id: 'b', v: 2 });
    expect(await spill.get(0)).toEqual({ id: 'a', v: 1 }); // closes the writer
    await fs.truncate(spill.file, 20);
    await expect(spill.get(1)).rejects.toThrow(/row 1 .* is short/);
    await spill.remove();
  });
});

describe('removeTree', () => {
  it('removes a nested tree of many files, and a missing path is fine', async () => {
    const root = path.join(dir, 'tree');
    for (const sub of ['a', 'a/b', 'c']) await fs.mkdir(path.join(root, sub), { recursive: true });
    for (let i = 0; i < 300; i++) await fs.writeFile(path.join(root, ['a', 'a/b', 'c'][i % 3], `f${i}.jpg`), 'x');
    await removeTree(root);
    await expect(fs.lstat(root)).rejects.toThrow(/ENOENT/);
    await removeTree(root);
    await removeTree(path.join(dir, 'never-was'));
  });

  it('removes a symlink to a folder without touching the folder it points to', async () => {
    const target = path.join(dir, 'kept');
    await fs.mkdir(target);
    await fs.writeFile(path.join(target, 'keep.txt'), 'k');
    const outer = path.join(dir, 'outer');
    await fs.mkdir(outer);
    await fs.symlink(target, path.join(outer, 'link'));
    await removeTree(outer);
    await expect(fs.lstat(outer)).rejects.toThrow(/ENOENT/);
    expect(await fs.readFile(path.join(target, 'keep.txt'), 'utf8')).toBe('k');
  });
});
