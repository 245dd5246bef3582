/**
 * `.dvcignore`, applied as DVC applies it when it hashes a directory dep or out: gitignore
 * patterns (DVC reads them with pathspec's GitWildMatchPattern), each file's patterns relative to
 * its own folder, later lines winning, `!` re-including, a matched folder hiding everything under
 * it. DVC reads `.dvcignore` files at the root and in folders above a dep/out; one inside a dep or
 * out folder is an error there (https://dvc.org/doc/user-guide/dvcignore), and here too.
 * Checked against `git check-ignore` on the same patterns (test/pipeline/dvcignore.test.ts).
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { TagsegError } from '../pipeline/errors.js';

export const DVCIGNORE = '.dvcignore';

interface Rule {
  re: RegExp;
  negate: boolean;
  dirOnly: boolean;
  /** Project-relative folder of the .dvcignore the rule came from ('' = root). */
  base: string;
}

/** One `[...]` class from index `i` (at '['), as a regex class, and where it ends; null if unclosed. */
function bracket(p: string, i: number): { re: string; end: number } | null {
  let j = i + 1;
  let neg = false;
  if (p[j] === '!' || p[j] === '^') {
    neg = true;
    j++;
  }
  let body = '';
  // a ']' first in the class is a literal
  for (let first = true; j < p.length && (p[j] !== ']' || first); j++, first = false) body += p[j] === '\\' || p[j] === '^' || p[j] === ']' ? `\\${p[j]}` : p[j];
  return j < p.length ? { re: `[${neg ? '^' : ''}${body}]`, end: j } : null;
}

/** The regex body of a gitignore glob (no leading/trailing slash handling). */
function globToRegex(p: string): string {
  let out = '';
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === '*' && p[i + 1] === '*' && (i === 0 || p[i - 1] === '/') && (i + 2 === p.length || p[i + 2] === '/')) {
      // `**/` = zero or more folders; a final `**` = everything below
      if (i + 2 === p.length) out += '.*';
      else out += '(?:[^/]*/)*';
      i += 2;
    } else if (c === '*') out += '[^/]*';
    else if (c === '?') out += '[^/]';
    else if (c === '[') {
      const b = bracket(p, i);
      if (b) {
        out += b.re;
        i = b.end;
      } else out += '\\[';
    } else if (c === '\\' && i + 1 < p.length) out += p[++i].replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    else out += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return out;
}

/** Parses one line of a .dvcignore in folder `base`; null for blanks and comments. */
export function parseRule(line: string, base: string): Rule | null {
  let p = line.replace(/(?<!\\)\s+$/, '');
  if (p === '' || p.startsWith('#')) return null;
  const negate = p.startsWith('!');
  if (negate) p = p.slice(1);
  if (p.startsWith('\\#') || p.startsWith('\\!')) p = p.slice(1);
  const dirOnly = p.endsWith('/');
  if (dirOnly) p = p.slice(0, -1);
  // A slash before the end anchors the pattern to its .dvcignore's folder; else it matches at any depth.
  const anchored = p.includes('/');
  if (p.startsWith('/')) p = p.slice(1);
  if (p === '') return null;
  const body = globToRegex(p);
  return { re: new RegExp(`^${anchored ? '' : '(?:.*/)?'}${body}$`), negate, dirOnly, base };
}

/** The rules of every .dvcignore a project holds along `rel`'s folders (root first). */
export class DvcIgnore {
  private constructor(private readonly rules: Rule[]) {}

  static fromText(text: string, base = ''): DvcIgnore {
    return new DvcIgnore(text.split(/\r?\n/).flatMap((l) => parseRule(l, base) ?? []));
  }

  /** The root's .dvcignore and those of the folders from the root down to `rel` (a dep or out). */
  static async forPath(root: string, rel: string): Promise<DvcIgnore> {
    const parts = rel.split('/').filter((s) => s !== '' && s !== '.');
    const rules: Rule[] = [];
    for (let i = 0; i < parts.length; i++) {
      const base = parts.slice(0, i).join('/');
      const text = await fs.readFile(path.join(root, base, DVCIGNORE), 'utf8').catch(() => '');
      rules.push(...DvcIgnore.fromText(text, base).rules);
    }
    return new DvcIgnore(rules);
  }

  /** Whether a project-relative path is ignored by these rules alone (its parents not checked). */
  matches(rel: string, isDir: boolean): boolean {
    let ignored = false;
    for (const r of this.rules) {
      if (r.dirOnly && !isDir) continue;
      if (r.base !== '' && !rel.startsWith(`${r.base}/`)) continue;
      const sub = r.base === '' ? rel : rel.slice(r.base.length + 1);
      if (r.re.test(sub)) ignored = !r.negate;
    }
    return ignored;
  }

  get empty(): boolean {
    return this.rules.length === 0;
  }
}

/** DVC refuses a .dvcignore inside a dep or out folder; so do we, naming it. */
export function refuseNestedDvcignore(fileRel: string): never {
  throw new TagsegError(`'${fileRel}' lies inside a dep or out folder`, {
    file: fileRel,
    hint: 'DVC errors on a .dvcignore inside a dependency or output directory: move its patterns to the .dvcignore at the project root',
  });
}
