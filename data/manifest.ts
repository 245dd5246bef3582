import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { z } from 'zod';
import { orderedMap } from '../pipeline/concurrency.js';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import { closest } from '../pipeline/params_core.js';
import { log } from '../pipeline/log.js';

/**
 * The dataset manifest: what every dataset importer (VOC, CSV folder, synthetic) produces and
 * every later stage consumes. Scanning only lists and validates files; decoding happens in
 * `load.ts`, so a manifest of 10,000 items costs a few MB and bad datasets fail in seconds.
 */

/** One image of the dataset. */
export interface ItemSpec {
  /** Unique across the whole manifest (all splits): later stages key their outputs by it. */
  id: string;
  /** e.g. `train`, `val`, `test` (from the split file name or the CSV's split column). */
  split: string;
  /** Absolute path of the image (.jpg/.jpeg/.png). */
  imagePath: string;
  /** Absolute path of the palette/grey label PNG, or null when the item has no ground truth. */
  maskPath: string | null;
  /** Sorted, unique class indices (never background or void); null -> derive from the mask at load time. */
  tags: number[] | null;
}

export interface Manifest {
  /** Absolute dataset root. */
  root: string;
  /** Class names in index order (mask value i = classes[i]). */
  classes: string[];
  /** Index of the background class, or null when the dataset has none (e.g. MSRC-v2). */
  background: number | null;
  /** Mask value meaning "ignore" (VOC: 255); never a class index. */
  void: number;
  /** In a stable order: split order, then the order of the split file / CSV. */
  items: ItemSpec[];
  /** The classes.json the class list was read from, if any (absolute). */
  classesFile?: string;
  /** True when no class file existed and the classes are the sorted tag names (CSV layout): the caller pins them. */
  classesDerived?: boolean;
}

/** An item left out with `onError: 'skip'` (at scan or at load time). */
export interface SkippedItem {
  id: string;
  /** The file at fault (split file, tags CSV, image, mask), as named by the TagsegError; absolute. */
  file: string;
  /** What is wrong; never an absolute path (paths in it are relative to the dataset root). */
  reason: string;
}

/**
 * Per-item errors of a scan or load. `fail`: the first one is thrown; `skip`: each is logged as a
 * warning and appended to `list` (the caller's array), in the order found.
 */
export class ItemErrors {
  constructor(
    readonly mode: 'fail' | 'skip',
    readonly list: SkippedItem[] = [],
  ) {}

  report(id: string, err: TagsegError): void {
    if (this.mode === 'fail') throw err;
    const item = { id, file: err.file ?? '', reason: err.reason };
    log.warn(`skipped ${quoteId(id)}: ${item.file}: ${item.reason}`);
    this.list.push(item);
  }

  /** `fn()`, or undefined after reporting its TagsegError against `id` (other errors are bugs: rethrown). */
  guard<T>(id: string, fn: () => T): T | undefined {
    try {
      return fn();
    } catch (err) {
      if (!(err instanceof TagsegError)) throw err;
      this.report(id, err);
      return undefined;
    }
  }
}

/**
 * A dataset file as cache/dataset.arrow stores it: relative to the dataset root with '/'
 * separators when it lies inside the root, so the table does not depend on where the project is
 * checked out; a file outside the root (a CSV row naming it) keeps its absolute path.
 */
export function datasetRelative(root: string, file: string): string {
  const rel = path.relative(path.resolve(root), path.resolve(file));
  if (rel === '' || rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) return path.resolve(file);
  return rel.split(path.sep).join('/');
}

/** The file a stored dataset path names: resolved against the dataset root (`dataset.root` of params, resolved). */
export function resolveDatasetPath(root: string, stored: string): string {
  return path.resolve(root, stored);
}

/** File extensions accepted as images (lower case). */
export const IMAGE_EXTS = ['.jpg', '.jpeg', '.png'] as const;

/** PASCAL VOC 2012: background + 20 object classes, background = 0, void = 255. */
export const VOC_CLASSES: readonly string[] = [
  'background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
  'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor',
];

export interface ClassInfo {
  classes: string[];
  background: number | null;
  void: number;
  /** The classes.json it was read from (named in "unknown class" hints), if any. */
  file?: string;
}

const CLASSES_FILE_KEYS = ['classes', 'void', 'background'];
const ClassesFileSchema = z.union([
  z.array(z.string()),
  z.object({
    classes: z.array(z.string()),
    void: z.number().int().min(0).max(255).optional(),
    background: z.union([z.number().int().min(0), z.null()]).optional(),
  }),
]);

/**
 * Read `classes.json`: `{classes: [...], void?: 255, background?: index | null}` or a bare array
 * of names. Missing `void` means 255; missing `background` means the index of a class named
 * "background" if there is one, else none.
 */
export async function readClassesFile(file: string): Promise<ClassInfo> {
  let raw: unknown;
  try {
    raw = JSON.parse(await fs.readFile(file, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new TagsegError(code === 'ENOENT' ? 'classes file not found' : `cannot read classes file (${messageOf(err)})`, {
      file,
      cause: err,
    });
  }
  const isObject = typeof raw === 'object' && raw !== null && !Array.isArray(raw);
  if (isObject) {
    // An unknown key is most likely a typo ("backgound"): silently ignoring it would change the indices.
    const unknown = Object.keys(raw as object).filter((k) => !CLASSES_FILE_KEYS.includes(k));
    if (unknown.length) {
      const near = closest(unknown[0], CLASSES_FILE_KEYS);
      throw new TagsegError(`unknown key '${unknown[0]}'${near ? ` (did you mean '${near}'?)` : ''}`, {
        file, hint: `a classes file has the keys ${CLASSES_FILE_KEYS.join(', ')}`,
      });
    }
  }
  // The object schema alone for an object, so that an error names its key rather than "invalid union".
  const parsed = (isObject ? ClassesFileSchema.options[1] : ClassesFileSchema).safeParse(raw);
  if (!parsed.success) {
    throw new TagsegError(`invalid classes file (${parsed.error.issues.map((i) => `${i.path.length ? `key '${i.path.join('.')}'` : '<root>'}: ${i.message}`).join('; ')})`, {
      file,
      hint: 'expected {"classes": ["name", ...], "void": 255, "background": 0 | null}',
    });
  }
  const v = parsed.data;
  const classes = Array.isArray(v) ? v : v.classes;
  const info: ClassInfo = {
    classes: classes.map((c) => c.trim()),
    void: Array.isArray(v) ? 255 : (v.void ?? 255),
    background: Array.isArray(v) || v.background === undefined ? defaultBackground(classes) : v.background,
    file,
  };
  validateClassInfo(info, file);
  return info;
}

function defaultBackground(classes: string[]): number | null {
  const i = classes.findIndex((c) => c.trim().toLowerCase() === 'background');
  return i >= 0 ? i : null;
}

/** Class names unique and non-empty; void outside the class range; background inside it. */
export function validateClassInfo(info: ClassInfo, file: string): void {
  const { classes } = info;
  if (classes.length === 0) throw new TagsegError('no classes defined', { file });
  if (classes.length > 255) throw new TagsegError(`${classes.length} classes; at most 255 fit in an 8-bit mask`, { file });
  const seen = new Set<string>();
  for (const c of classes) {
    if (c === '') throw new TagsegError('empty class name', { file });
    if (seen.has(c)) throw new TagsegError(`class "${c}" is listed twice`, { file });
    seen.add(c);
  }
  if (info.void < classes.length) {
    throw new TagsegError(`void index ${info.void} is also the index of class "${classes[info.void]}"`, { file });
  }
  if (info.background !== null && info.background >= classes.length) {
    throw new TagsegError(`background index ${info.background} is out of range (${classes.length} classes)`, { file });
  }
}

/** The known class names for an "unknown class" hint (shortened for very long lists). */
export function knownClassesHint(info: ClassInfo): string {
  const names = info.classes.filter((_, i) => i !== info.background);
  const shown = names.length > 60 ? [...names.slice(0, 60), `... (${names.length - 60} more)`] : names;
  return `known classes: ${shown.join(', ')}`;
}

/**
 * Map tag names to sorted unique class indices. The background class's name is dropped (it is
 * never a tag: every image has background, so it carries no information); an unknown name or an
 * empty result is a TagsegError naming `file` and `line`.
 */
export function resolveTags(names: string[], info: ClassInfo, where: { file: string; line?: number; id: string }): number[] {
  const at = where.line !== undefined ? `line ${where.line}: ` : '';
  const out = new Set<number>();
  for (const name of names) {
    const i = info.classes.indexOf(name);
    if (i < 0) {
      // "dog cat" or "dog;cat" whose parts are classes: say how to separate them.
      const parts = name.split(/[\s;,]+/).filter((s) => s !== '');
      const split = parts.length > 1 && parts.every((s) => info.classes.includes(s));
      throw new TagsegError(`${at}unknown class ${quoteId(name)} for image ${showId(where.id)}`, {
        file: where.file,
        hint: split ? `tags are separated by "|" only: write ${parts.join('|')}` : knownClassesHint(info),
      });
    }
    if (i !== info.background) out.add(i);
  }
  if (out.size === 0) {
    throw new TagsegError(`${at}empty tag list for image ${showId(where.id)}`, {
      file: where.file,
      hint: 'every image needs at least one (non-background) class tag',
    });
  }
  return [...out].sort((a, b) => a - b);
}

/**
 * Split a tags cell into class names on `|` only: a class name may hold spaces, commas or
 * semicolons ("potted plant"), so nothing else may separate tags. Names are trimmed; empty ones dropped.
 */
export function splitTagCell(cell: string): string[] {
  return cell
    .split('|')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** One parsed CSV record with the 1-based line it starts on (for error messages). */
export interface CsvRow {
  line: number;
  cells: string[];
}

/**
 * RFC 4180 CSV: `,` separated; double-quoted cells may hold commas, `""` (a quote) and line
 * breaks; records end at CRLF, LF or CR; a UTF-8 BOM is dropped; blank lines are skipped.
 * Unquoted cells are trimmed, quoted ones kept verbatim (spaces around the quotes are allowed).
 * Malformed quoting is a TagsegError naming `file` and the line.
 */
export function parseCsv(text: string, file: string): CsvRow[] {
  const s = text.replace(/^\uFEFF/, '');
  const rows: CsvRow[] = [];
  const isEnd = (c: string | undefined) => c === undefined || c === ',' || c === '\n' || c === '\r';
  let i = 0;
  let line = 1;
  while (i < s.length) {
    const start = line;
    const cells: string[] = [];
    for (;;) {
      while (s[i] === ' ' || s[i] === '\t') i++;
      if (s[i] === '"') {
        let cell = '';
        for (i++; ; i++) {
          if (i >= s.length) throw new TagsegError(`line ${start}: unterminated quoted field`, { file });
          if (s[i] === '"') {
            if (s[i + 1] !== '"') break;
            i++;
          } else if (s[i] === '\n') {
            line++;
          }
          cell += s[i];
        }
        i++;
        while (s[i] === ' ' || s[i] === '\t') i++;
        if (!isEnd(s[i])) throw new TagsegError(`line ${line}: unexpected text after a quoted field`, { file });
        cells.push(cell);
      } else {
        let end = i;
        while (!isEnd(s[end])) end++;
        const cell = s.slice(i, end).trim();
        if (cell.includes('"')) throw new TagsegError(`line ${line}: stray quote in an unquoted field`, { file, hint: 'quote the whole field and double the quotes inside it' });
        cells.push(cell);
        i = end;
      }
      if (s[i] !== ',') break;
      i++;
    }
    if (s[i] === '\r') i++;
    if (s[i] === '\n') i++;
    line++;
    if (cells.length > 1 || cells[0] !== '') rows.push({ line: start, cells });
  }
  return rows;
}

/** Header detection: a first row whose first cell names the id column rather than an image. */
export function isHeaderRow(row: CsvRow): boolean {
  return ['image_id', 'id', 'image', 'file', 'filename', 'path'].includes(row.cells[0].toLowerCase());
}

/**
 * An id or name for a message: as is when it is plain printable ASCII, else as a JSON string with
 * invisible and space-like characters escaped (`"x y"`, `"x\u00a0y"`), so a message shows
 * exactly which id was looked up.
 */
export function showId(id: string): string {
  return /^[\x21-\x7e]+$/.test(id) && !id.includes('"') ? id : quoteId(id);
}

/** `id` as a JSON string with invisible and space-like characters escaped. */
export function quoteId(id: string): string {
  return JSON.stringify(id).replace(/[^\x21-\x7e]/gu, (c) =>
    c === ' ' || /\p{L}|\p{N}|\p{P}|\p{S}/u.test(c) ? c : `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}`,
  );
}

/** Tracks ids across the whole manifest; a second use is a TagsegError naming both places. */
export class IdRegistry {
  private readonly seen = new Map<string, string>();

  /** `root`: places in messages are shown relative to it. */
  constructor(private readonly root = '') {}

  add(id: string, where: { file: string; line: number }): void {
    const prev = this.seen.get(id);
    if (prev !== undefined) {
      throw new TagsegError(`line ${where.line}: duplicate image id ${quoteId(id)} (first seen at ${prev})`, {
        file: where.file,
        hint: 'image ids must be unique across all splits; the later line is the one skipped',
      });
    }
    this.seen.set(id, `${relTo(this.root, where.file)}:${where.line}`);
  }
}

/** `file` relative to `root` for messages and records (`root` itself -> "."; unrelated roots -> as is). */
export function relTo(root: string, file: string): string {
  if (!root || !path.isAbsolute(file)) return file;
  return path.relative(root, file) || '.';
}

export async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isDirectory();
  } catch {
    return false;
  }
}

export async function isFile(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isFile();
  } catch {
    return false;
  }
}

/**
 * `p` as one flat string. path.join / path.resolve build their result piece by piece (a tree of
 * string fragments until something flattens it): kept per manifest item, two such paths cost
 * ~775 bytes per image (measured at 20k images), a flat copy ~100.
 */
export function compactPath(p: string): string {
  return Buffer.from(p, 'utf8').toString('utf8');
}

/** Images of one folder keyed by id (file name without extension); ids with two files are ambiguous. */
export interface ImageIndex {
  byId: Map<string, string>;
  ambiguous: Map<string, string[]>;
  /** Ids whose `<id>.jpg` etc. is a directory (or another non-file), so "missing" can say why. */
  notFiles?: Map<string, string>;
}

/** List `.jpg/.jpeg/.png` files (any case) directly in `dir`, keyed by id. */
export async function indexImages(dir: string): Promise<ImageIndex> {
  const byId = new Map<string, string>();
  const ambiguous = new Map<string, string[]>();
  const notFiles = new Map<string, string>();
  const entries = (await fs.readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const d of entries) {
    const name = d.name;
    const dot = name.lastIndexOf('.');
    if (dot <= 0) continue;
    const ext = name.slice(dot).toLowerCase();
    if (!(IMAGE_EXTS as readonly string[]).includes(ext)) continue;
    const id = name.slice(0, dot);
    const file = `${dir}/${name}`;
    if (!d.isFile() && !d.isSymbolicLink()) {
      notFiles.set(id, file);
      continue;
    }
    const prev = byId.get(id);
    if (prev !== undefined) ambiguous.set(id, [...(ambiguous.get(id) ?? [prev]), file]);
    else byId.set(id, file);
  }
  return { byId, ambiguous, notFiles };
}

/**
 * The image of `id`, or a TagsegError naming `where` (the file that asked for it). `dir` is only
 * shown in messages (pass it relative to the dataset root). Ids never build paths: an id is
 * looked up among the listed files, so `../../etc/passwd` reads nothing.
 */
export function imageFor(index: ImageIndex, id: string, dir: string, where: { file: string; line?: number }): string {
  const at = where.line !== undefined ? `line ${where.line}: ` : '';
  const amb = index.ambiguous.get(id);
  if (amb) {
    throw new TagsegError(`${at}image id ${quoteId(id)} matches several files: ${amb.map((f) => path.basename(f)).join(', ')}`, {
      file: where.file,
      hint: 'keep one image file per id',
    });
  }
  const file = index.byId.get(id);
  if (file !== undefined) return file;
  const dirEntry = index.notFiles?.get(id);
  if (dirEntry !== undefined) {
    throw new TagsegError(`${at}image ${showId(id)}: ${path.join(dir, path.basename(dirEntry))} is a directory, not an image file`, { file: where.file });
  }
  throw new TagsegError(`${at}missing image: no ${showId(id)}.jpg/.jpeg/.png in ${dir}`, {
    file: where.file,
    hint: similarIdHint(index, id),
  });
}

/** A hint when an image differs from `id` only in Unicode normalisation or whitespace. */
function similarIdHint(index: ImageIndex, id: string): string | undefined {
  const key = (s: string) => s.normalize('NFC').replace(/\s+/gu, ' ').trim();
  const k = key(id);
  for (const other of index.byId.keys()) {
    if (key(other) === k) return `an image with the id ${showId(other)} exists: the names differ in Unicode normalisation or spacing`;
  }
  return undefined;
}

/**
 * Check that every item's image is a readable regular file, distinct from every other item's
 * (the same file under two ids would put one image in two places, e.g. train and val). Items
 * that fail are reported to `errors`; the rest are returned in order. Up to 64 stats run at once.
 */
export async function checkImageFiles(
  items: ItemSpec[],
  errors: ItemErrors,
  root: string,
  where: (item: ItemSpec) => { file: string; line?: number },
): Promise<ItemSpec[]> {
  const byInode = new Map<string, string>();
  const out: ItemSpec[] = [];
  const stat = async (item: ItemSpec) => ({ item, st: await fs.stat(item.imagePath).catch((err: NodeJS.ErrnoException) => err) });
  for await (const { item, st } of orderedMap(items, stat, { concurrency: 64 })) {
    const rel = relTo(root, item.imagePath);
    let reason: string | null = null;
    if (st instanceof Error) {
      const code = (st as NodeJS.ErrnoException).code;
      reason = code === 'ENOENT' ? `missing image ${rel}` : code === 'ELOOP' ? `image ${rel} is a symlink loop` : `cannot read image ${rel} (${code ?? st.message})`;
    } else if (!st.isFile()) {
      reason = `image ${rel} is ${st.isDirectory() ? 'a directory' : 'not a regular file'}`;
    } else {
      const inode = `${st.dev}:${st.ino}`;
      const first = byInode.get(inode);
      if (first !== undefined) reason = `image ${rel} is the same file as image ${showId(first)}'s (reached by two ids)`;
      else byInode.set(inode, item.id);
    }
    if (reason === null) {
      out.push(item);
    } else {
      const w = where(item);
      errors.report(item.id, new TagsegError(`${w.line !== undefined ? `line ${w.line}: ` : ''}${reason}`, { file: w.file }));
    }
  }
  return out;
}
