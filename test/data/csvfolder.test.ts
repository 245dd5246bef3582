import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scanCsvFolder } from '../../data/csvfolder.js';
import { parseCsv, splitTagCell } from '../../data/manifest.js';
import { expectTagsegError, makeTemp, rmTemp, writeRgb } from './helpers.js';

let dir: string;
let n = 0;
beforeAll(async () => {
  dir = await makeTemp();
});
afterAll(async () => {
  await rmTemp(dir);
});

/** Images a.jpg, b.png, sub/c.jpeg; `files` adds/overrides text files (tags.csv, classes.json). */
async function buildFolder(files: Record<string, string>): Promise<string> {
  const root = path.join(dir, `csv${n++}`);
  await Promise.all([
    writeRgb(path.join(root, 'a.jpg'), 6, 4),
    writeRgb(path.join(root, 'b.png'), 6, 4),
    writeRgb(path.join(root, 'sub', 'c.jpeg'), 6, 4),
  ]);
  for (const [rel, text] of Object.entries(files)) await fs.writeFile(path.join(root, rel), text);
  return root;
}

describe('scanCsvFolder', () => {
  it('ids or paths, | separators, split column, classes from sorted tag names', async () => {
    const root = await buildFolder({
      'tags.csv': 'image_id,tags,split\r\na,dog|cat\r\nb, cat | bird ,val\r\nsub/c.jpeg,"bird|dog",test\r\n',
    });
    const m = await scanCsvFolder(root, { csv: 'tags.csv' });
    expect(m.classes).toEqual(['bird', 'cat', 'dog']);
    expect(m.background).toBeNull();
    expect(m.void).toBe(255);
    expect(m.items).toEqual([
      { id: 'a', split: 'train', imagePath: path.join(root, 'a.jpg'), maskPath: null, tags: [1, 2] },
      { id: 'b', split: 'val', imagePath: path.join(root, 'b.png'), maskPath: null, tags: [0, 1] },
      { id: 'c', split: 'test', imagePath: path.join(root, 'sub', 'c.jpeg'), maskPath: null, tags: [0, 2] },
    ]);
  });

  it('uses classes.json (default or given) for indices', async () => {
    const root = await buildFolder({
      'tags.csv': 'a,dog\nb,"cat|dog"\n',
      'classes.json': JSON.stringify({ classes: ['dog', 'cat', 'cow'] }),
      'other.json': JSON.stringify(['background', 'cat', 'dog']),
    });
    const m = await scanCsvFolder(root, { csv: 'tags.csv' });
    expect(m.classes).toEqual(['dog', 'cat', 'cow']);
    expect(m.items.map((i) => i.tags)).toEqual([[0], [0, 1]]);
    const o = await scanCsvFolder(root, { csv: path.join(root, 'tags.csv'), classesFile: 'other.json' });
    expect(o.background).toBe(0);
    expect(o.items.map((i) => i.tags)).toEqual([[2], [1, 2]]);
  });

  it('missing image (bare id and path), with the line', async () => {
    const root = await buildFolder({ 'tags.csv': 'a,dog\nzz,cat\n', 'p.csv': 'a,dog\nb,dog\nsub/none.jpg,cat\n' });
    await expectTagsegError(scanCsvFolder(root, { csv: 'tags.csv' }), path.join(root, 'tags.csv'), /line 2: missing image: no zz/);
    await expectTagsegError(scanCsvFolder(root, { csv: 'p.csv' }), path.join(root, 'p.csv'), /line 3: missing image .*none\.jpg/);
  });

  it('unknown class with classes.json lists the known ones', async () => {
    const root = await buildFolder({ 'tags.csv': 'a,dog\nb,horse\n', 'classes.json': '{"classes": ["dog", "cat"]}' });
    const err = await expectTagsegError(scanCsvFolder(root, { csv: 'tags.csv' }), path.join(root, 'tags.csv'), /line 2: unknown class "horse"/);
    expect(err.hint).toBe('known classes: dog, cat');
  });

  it('empty tag list, duplicate id, malformed lines', async () => {
    const root = await buildFolder({
      'empty.csv': 'a,dog\nb, \n',
      'dup.csv': 'a,dog\nb,cat\nsub/c.jpeg,cat\na.jpg,dog\n',
      'short.csv': 'image_id,tags\na\n',
      'long.csv': 'a,dog,train,extra\n',
      'quote.csv': 'a,"dog"cat\n',
    });
    const f = (s: string) => path.join(root, s);
    await expectTagsegError(scanCsvFolder(root, { csv: 'empty.csv' }), f('empty.csv'), /line 2: empty tag list for image b/);
    await expectTagsegError(scanCsvFolder(root, { csv: 'dup.csv' }), f('dup.csv'), /line 4: duplicate image id "a"/);
    await expectTagsegError(scanCsvFolder(root, { csv: 'short.csv' }), f('short.csv'), /line 2: malformed line/);
    await expectTagsegError(scanCsvFolder(root, { csv: 'long.csv' }), f('long.csv'), /line 1: malformed line/);
    await expectTagsegError(scanCsvFolder(root, { csv: 'quote.csv' }), f('quote.csv'), /line 1: unexpected text after a quoted field/);
    await expectTagsegError(scanCsvFolder(root, { csv: 'none.csv' }), f('none.csv'), /tags CSV not found/);
  });
});

describe('CSV helpers', () => {
  it('parseCsv: quotes, escaped quotes, blank lines, BOM, trailing empty cell', () => {
    const rows = parseCsv('\uFEFFa,"x ""y"", z",\n\n b , c \n', 'f.csv');
    expect(rows).toEqual([
      { line: 1, cells: ['a', 'x "y", z', ''] },
      { line: 3, cells: ['b', 'c'] },
    ]);
  });

  it('splitTagCell: | only; names keep spaces, commas and semicolons', () => {
    expect(splitTagCell('a|b')).toEqual(['a', 'b']);
    expect(splitTagCell('a; b ;')).toEqual(['a; b ;'.trim()]);
    expect(splitTagCell('potted plant|cat')).toEqual(['potted plant', 'cat']);
    expect(splitTagCell('potted plant')).toEqual(['potted plant']);
    expect(splitTagCell('  a   b ')).toEqual(['a   b']);
    expect(splitTagCell(' a || b |')).toEqual(['a', 'b']);
    expect(splitTagCell('')).toEqual([]);
  });
});
