/**
 * review/decisions.csv (data/review.ts): RFC 4180 reading and writing, one row per (id, class),
 * the file DuckDB reads back as written (when a Python with duckdb is available).
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type DecisionRow, formatDecisions, mergeDecisions, parseDecisions, readDecisions, removeDecision, reviewByImage, writeDecisions,
} from '../../data/review.js';
import { TagsegError } from '../../pipeline/errors.js';
import { skipWithout } from '../helpers/ci.js';
import { findPython } from '../helpers/python.js';

const { python, why } = findPython(['duckdb']);
const noPython = skipWithout('DuckDB read of decisions.csv', python ? undefined : why);

const ROWS: DecisionRow[] = [
  { id: 'b', decision: 'relabel', class: 'dog', note: 'tail missing, "see" ear' },
  { id: 'a', decision: 'reject', class: '', note: 'two lines\nof note, with a comma' },
  { id: 'a', decision: 'accept', class: 'cat', note: '' },
];

let dir: string;
beforeAll(async () => { dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-decisions-')); });
afterAll(async () => { await fs.rm(dir, { recursive: true, force: true }); });

describe('RFC 4180 in decisions.csv (the shared parser of data/manifest.ts)', () => {
  it('reads quoted fields with commas, doubled quotes, line breaks, CRLF and a BOM', () => {
    const text = '\ufeffid,decision,class,note\r\n"x, y",accept,,"say ""hi""\nthere"\r\nlast,reject,,\n';
    expect(parseDecisions(text, 'f.csv')).toEqual([
      { id: 'x, y', decision: 'accept', class: '', note: 'say "hi"\nthere' }, { id: 'last', decision: 'reject', class: '', note: '' },
    ]);
  });

  it('rejects broken quoting, naming the file and line', () => {
    for (const [text, reason] of [['id,decision\n"open', /line 2: unterminated quoted field/], ['id,decision\nx"y",accept', /line 2: stray quote/], ['id,decision\n"x"y,accept', /line 2: unexpected text after a quoted field/]] as const) {
      let err: unknown;
      try { parseDecisions(text, '/p/review/decisions.csv'); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(TagsegError);
      expect((err as TagsegError).file).toBe('/p/review/decisions.csv');
      expect((err as TagsegError).reason).toMatch(reason);
    }
  });
});

describe('decisions.csv', () => {
  it('writes a header and rows sorted by id and class, quoted only where needed, and reads them back', () => {
    const text = formatDecisions(ROWS);
    expect(text.split('\n').slice(0, 2)).toEqual(['id,decision,class,note', 'a,reject,,"two lines']);
    expect(text).toContain('a,accept,cat,\n');
    expect(text).toContain('b,relabel,dog,"tail missing, ""see"" ear"\n');
    expect(parseDecisions(text, 'd.csv')).toEqual([ROWS[1], ROWS[2], ROWS[0]]);
  });

  it('keeps one row per (id, class): the last wins, set replaces, unset removes', () => {
    const text = 'id,decision,class,note\nx,accept,,first\nx,REJECT,,second\nx,relabel,cat,\n';
    const rows = parseDecisions(text, 'd.csv');
    expect(rows.map((r) => [r.id, r.decision, r.class, r.note])).toEqual([['x', 'reject', '', 'second'], ['x', 'relabel', 'cat', '']]);
    const merged = mergeDecisions(rows, [{ id: 'x', decision: 'accept', class: 'cat', note: 'fixed' }, { id: 'w', decision: 'reject', class: '', note: '' }]);
    expect(merged.map((r) => `${r.id}/${r.class}/${r.decision}`)).toEqual(['w//reject', 'x//reject', 'x/cat/accept']);
    const { rows: left, removed } = removeDecision(merged, 'x', 'cat');
    expect(removed).toBe(true);
    expect(left.map((r) => `${r.id}/${r.class}`)).toEqual(['w/', 'x/']);
    expect(removeDecision(left, 'nope').removed).toBe(false);
    const byImage = reviewByImage(merged);
    expect(byImage.get('x')?.decision).toBe('reject');
    expect(byImage.get('x')?.classes.get('cat')).toBe('accept');
  });

  it('reads files with columns in another order or without class/note; rejects unknown decisions and a bad header', () => {
    expect(parseDecisions('decision,id\naccept,q\n', 'd.csv')).toEqual([{ id: 'q', decision: 'accept', class: '', note: '' }]);
    expect(parseDecisions('', 'd.csv')).toEqual([]);
    expect(() => parseDecisions('id,decision\nq,maybe\n', 'd.csv')).toThrow(/line 2: decision 'maybe' is not one of accept, reject, relabel/);
    expect(() => parseDecisions('image,verdict\nq,accept\n', 'd.csv')).toThrow(/needs at least id and decision/);
    expect(() => parseDecisions('id,decision\n,accept\n', 'd.csv')).toThrow(/line 2: empty id/);
  });

  it('a missing file is no decisions; write + read round-trips', async () => {
    const file = path.join(dir, 'review', 'decisions.csv');
    expect(await readDecisions(file)).toEqual([]);
    await writeDecisions(file, ROWS);
    expect(await readDecisions(file)).toEqual([ROWS[1], ROWS[2], ROWS[0]]);
  });

  it.skipIf(noPython)('DuckDB reads the file as written', async () => {
    const file = path.join(dir, 'duck.csv');
    await writeDecisions(file, ROWS);
    const code = `import duckdb, json, sys
rows = duckdb.sql("select id, decision, coalesce(class, '') as class, coalesce(note, '') as note from read_csv('${file}', header=true, all_varchar=true) order by id, class").fetchall()
print(json.dumps(rows))`;
    const { stdout } = await promisify(execFile)(python!, ['-c', code]);
    expect(JSON.parse(stdout)).toEqual([ROWS[1], ROWS[2], ROWS[0]].map((r) => [r.id, r.decision, r.class, r.note]));
  });
});

describe('tagseg review (stages/audit/review.ts)', () => {
  it('set / unset / import against the project dataset, rejecting unknown ids and classes', async () => {
    const { writeAuditFixture } = await import('./audit_fixtures.js');
    const { reviewImport, reviewList, reviewSet, reviewUnset, formatReviewList } = await import('../../stages/audit/review.js');
    const root = path.join(dir, 'project');
    await writeAuditFixture(root);
    await reviewSet(root, { id: 'bad', decision: 'Reject', note: 'wrong layout' });
    await reviewSet(root, { id: 'good-2', decision: 'relabel', class: 'dog' });
    await expect(reviewSet(root, { id: 'nope', decision: 'accept' })).rejects.toThrow(/image 'nope' is not in the dataset/);
    await expect(reviewSet(root, { id: 'bad', decision: 'accept', class: 'horse' })).rejects.toThrow(/class 'horse' .* not a class of the dataset \(background, cat, dog\)/);
    await expect(reviewSet(root, { id: 'bad', decision: 'ok' })).rejects.toThrow(/not one of accept, reject, relabel/);
    expect((await reviewList(root)).map((r) => [r.id, r.decision, r.class])).toEqual([['bad', 'reject', ''], ['good-2', 'relabel', 'dog']]);
    // the report's download: its rows win over the file's
    const dl = path.join(dir, 'download.csv');
    await fs.writeFile(dl, 'id,decision,class,note\nbad,accept,,looks fine\ngood-1,reject,,\n');
    expect(await reviewImport(root, dl)).toEqual({ imported: 2, total: 3 });
    expect((await reviewList(root)).map((r) => `${r.id}:${r.decision}`)).toEqual(['bad:accept', 'good-1:reject', 'good-2:relabel']);
    await fs.writeFile(dl, 'id,decision\nghost,accept\n');
    await expect(reviewImport(root, dl)).rejects.toThrow(/download\.csv: image 'ghost' is not in the dataset/);
    expect(await reviewUnset(root, 'good-2', 'dog')).toBe(true);
    expect(await reviewUnset(root, 'good-2', 'dog')).toBe(false);
    expect(formatReviewList(await reviewList(root))).toMatch(/2 decisions: 1 accept, 1 reject/);
  });
});

describe('ensureReviewFiles', () => {
  it('creates decisions.csv (header only) and the corrections folder, and never overwrites them', async () => {
    const { ensureReviewFiles } = await import('../../data/review.js');
    const root = path.join(dir, 'fresh');
    await ensureReviewFiles(root, 'review/corrections');
    expect(await fs.readFile(path.join(root, 'review/decisions.csv'), 'utf8')).toBe('id,decision,class,note\n');
    expect(await fs.readdir(path.join(root, 'review/corrections'))).toEqual(['README.md']);
    await writeDecisions(path.join(root, 'review/decisions.csv'), ROWS);
    await ensureReviewFiles(root, 'review/corrections');
    expect(await readDecisions(path.join(root, 'review/decisions.csv'))).toHaveLength(3);
  });
});
