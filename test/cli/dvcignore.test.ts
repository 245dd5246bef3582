/**
 * .dvcignore in directory hashes (pipeline/dvcignore.ts, pipeline/dvclock.ts). DVC reads the
 * patterns as gitignore patterns, so git itself is the independent reference: the same patterns
 * as a .gitignore, and `git ls-files --others --exclude-standard` must list exactly the files the
 * hasher keeps.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DvcIgnore } from '../../cli/dvcignore.js';
import { DvcHasher, dirListing } from '../../cli/dvclock.js';
import { TagsegError } from '../../pipeline/errors.js';

const FILES = [
  'data/a.txt', 'data/b.tmp', 'data/keep.tmp', 'data/top.txt', 'data/x/top.txt', 'data/logs/1.log', 'data/x/logs/2.log',
  'data/cache/deep/c.bin', 'data/x/cache/d.bin', 'data/a/z.bin', 'data/a/b/c/z.bin', 'data/a/b/y.bin', 'data/sub/s.txt',
  'data/sub/deeper/s.txt', 'data/a.bin', 'data/c.bin', 'data/#hash', 'data/foo1.md', 'data/foo12.md', 'data/neg/x', 'data/neg/y',
  'data/sp ace', 'data/]odd', 'data/!bang',
];
const PATTERNS = [
  '# a comment', '', '*.tmp', '!keep.tmp', '/data/top.txt', 'logs/', '**/cache/**', 'data/a/**/z.bin', 'data/sub/*.txt',
  '[ab].bin', '\\#hash', 'foo?.md', 'data/neg/', '!data/neg/x', 'sp\\ ace', '[]]odd', '\\!bang',
];

let root: string;
beforeEach(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-dvcignore-'));
  for (const f of FILES) {
    await fs.mkdir(path.dirname(path.join(root, f)), { recursive: true });
    await fs.writeFile(path.join(root, f), `${f}\n`);
  }
});
afterEach(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

/** What git keeps of data/ under the same patterns as a .gitignore. */
// no user or system git config (a global excludesFile would change what git keeps)
const GIT_ENV = { ...process.env, GIT_CONFIG_GLOBAL: '/dev/null', GIT_CONFIG_NOSYSTEM: '1' };

async function gitKeeps(patterns: string[]): Promise<string[]> {
  execFileSync('git', ['init', '-q', root], { env: GIT_ENV });
  await fs.writeFile(path.join(root, '.gitignore'), `${patterns.join('\n')}\n`);
  const out = execFileSync('git', ['-C', root, 'ls-files', '--others', '--exclude-standard', '-z', 'data'], { encoding: 'utf8', env: GIT_ENV });
  return out.split('\0').filter(Boolean).sort();
}

async function hasherKeeps(patterns: string[]): Promise<string[]> {
  await fs.writeFile(path.join(root, '.dvcignore'), `${patterns.join('\n')}\n`);
  const { entries } = await new DvcHasher(root).dirEntries('data');
  return entries.map((e) => `data/${e.relpath}`).sort();
}

describe('.dvcignore', () => {
  it('keeps exactly the files git keeps under the same patterns', async () => {
    const git = await gitKeeps(PATTERNS);
    const ours = await hasherKeeps(PATTERNS);
    expect(ours).toEqual(git);
    expect(git).toEqual(['data/a.txt', 'data/a/b/y.bin', 'data/c.bin', 'data/foo12.md', 'data/keep.tmp', 'data/sub/deeper/s.txt', 'data/x/top.txt']);
    // control: the patterns do ignore something, so a matcher that ignores nothing would fail
    expect(git.length).toBeGreaterThan(5);
    expect(git.length).toBeLessThan(FILES.length - 10);
  });

  it('control: one pattern read differently (unanchored instead of anchored) is caught', async () => {
    const git = await gitKeeps(['/data/top.txt']);
    const ours = await hasherKeeps(['top.txt']);
    expect(ours).not.toEqual(git);
  });

  it("a directory's hash leaves ignored files out: it equals the hash of the folder without them", async () => {
    const before = await new DvcHasher(root).info('data');
    await fs.writeFile(path.join(root, '.dvcignore'), '*.tmp\n');
    const ignored = await new DvcHasher(root).info('data');
    await fs.rm(path.join(root, 'data/b.tmp'));
    await fs.rm(path.join(root, 'data/keep.tmp'));
    await fs.rm(path.join(root, '.dvcignore'));
    const without = await new DvcHasher(root).info('data');
    expect(ignored).toEqual(without);
    expect(ignored?.md5).not.toBe(before?.md5);
    const { entries } = await new DvcHasher(root).dirEntries('data');
    expect(ignored?.md5).toBe(`${createHash('md5').update(dirListing(entries)).digest('hex')}.dir`);
  });

  it('patterns of a .dvcignore in a folder above the dep apply relative to that folder', async () => {
    await fs.mkdir(path.join(root, 'p/data'), { recursive: true });
    await fs.writeFile(path.join(root, 'p/data/a.txt'), 'a');
    await fs.writeFile(path.join(root, 'p/data/b.txt'), 'b');
    await fs.writeFile(path.join(root, 'p/.dvcignore'), '/data/b.txt\n');
    const { entries } = await new DvcHasher(root).dirEntries('p/data');
    expect(entries.map((e) => e.relpath)).toEqual(['a.txt']);
  });

  it('a .dvcignore inside a dep folder is an error naming it, as in DVC', async () => {
    await fs.writeFile(path.join(root, 'data/x/.dvcignore'), '*.txt\n');
    const err = await new DvcHasher(root).dirEntries('data').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TagsegError);
    expect((err as Error).message).toContain('data/x/.dvcignore');
  });

  it('blank lines, comments and a lone `!` or `/` are no rules', () => {
    const ig = DvcIgnore.fromText('\n# c\n!\n/\n   \n');
    expect(ig.empty).toBe(true);
  });
});
