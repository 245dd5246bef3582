/**
 * `tagseg import` as a user runs it: `--on-error skip --json` lists every skipped item with its
 * reason, a CSV without classes.json gets its derived list written beside the tables (never into
 * the dataset folder), `--classes` pins it, and the default stops with the file and the reason
 * (exit 1, no stack trace).
 */
import { execa } from 'execa';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../cli/workspace.js';
import { makeTemp, rmTemp, writeRgb } from './helpers.js';

let dir: string;
const cli = (...args: string[]) => execa('node', [path.join(REPO_ROOT, 'bin/tagseg.js'), '--root', dir, '-q', 'import', 'ds', '--format', 'csv', '--size', '8', '--out', 'out', ...args], { cwd: dir, reject: false });

beforeAll(async () => {
  dir = await makeTemp('tagseg-import-cli-');
  for (const id of ['a', 'b', 'x y']) await writeRgb(path.join(dir, 'ds', `${id}.png`), 8, 6);
  await fs.writeFile(path.join(dir, 'ds', 'tags.csv'), 'a,cat\nb,"potted plant|dog"\nx y,cat\nzz,dog\n');
});
afterAll(async () => {
  await rmTemp(dir);
});

describe('tagseg import', () => {
  it('--on-error skip --json: skipped items with reasons; derived classes written to <out>/classes.json', async () => {
    const r = await cli('--on-error', 'skip', '--json');
    expect(r.exitCode).toBe(0);
    const s = JSON.parse(r.stdout);
    expect([s.images, s.classes, s.classesDerived]).toEqual([3, ['cat', 'dog', 'potted plant'], true]);
    expect(s.skipped).toEqual([{ id: 'zz', file: path.join(dir, 'ds', 'tags.csv'), reason: 'line 4: missing image: no zz.jpg/.jpeg/.png in .' }]);
    expect(r.stderr).toMatch(/warning: no classes\.json: the 3 classes are the sorted tag names/);
    expect(JSON.parse(await fs.readFile(path.join(dir, 'out', 'classes.json'), 'utf8')).classes).toEqual(['cat', 'dog', 'potted plant']);
    expect((await fs.readdir(path.join(dir, 'ds'))).sort()).toEqual(['a.png', 'b.png', 'tags.csv', 'x y.png']);
  });

  it('--classes pins the indices (a new tag is skipped as unknown); the default fails naming the file', async () => {
    await writeRgb(path.join(dir, 'ds', 'd.png'), 8, 6);
    await fs.appendFile(path.join(dir, 'ds', 'tags.csv'), 'd,bird\n');
    const r = await cli('--on-error', 'skip', '--json', '--classes', 'out/classes.json');
    expect(r.exitCode).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.classes).toEqual(['cat', 'dog', 'potted plant']);
    expect(s.skipped.map((k: { id: string; reason: string }) => [k.id, k.reason])).toEqual([
      ['zz', 'line 4: missing image: no zz.jpg/.jpeg/.png in .'],
      ['d', 'line 5: unknown class "bird" for image d'],
    ]);

    const f = await cli('--classes', 'out/classes.json');
    expect(f.exitCode).toBe(1);
    expect(f.stderr).toContain(`${path.join(dir, 'ds', 'tags.csv')}: line 4: missing image: no zz.jpg/.jpeg/.png in .`);
    expect(f.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });
});
