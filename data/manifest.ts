import * as fs from 'node:fs/promises';
import { z } from 'zod';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import { closest } from '../pipeline/params.js';

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
      throw new TagsegError(`${at}unknown class "${name}" for image ${where.id}`, {
        file: where.file,
        hint: knownClassesHint(info),
      });
    }
    if (i !== info.background) out.add(i);
  }
  if (out.size === 0) {
    throw new TagsegError(`${at}empty tag list for image ${where.id}`, {
      file: where.file,
      hint: 'every image needs at least one (non-background) class tag',
    });
  }
  return [...out].sort((a, b) => a - b);
}

/**
 * Split a tags cell into class names: by `|`, `;` (or `,` inside a quoted cell) when any is
 * present, so class names may contain spaces (e.g. "potted plant"); else by whitespace.
 */
export function splitTagCell(cell: string): string[] {
  const parts = /[|;,]/.test(cell) ? cell.split(/[|;,]/) : cell.split(/\s+/);
  return parts.map((s) => s.trim()).filter((s) => s !== '');
}

/** One parsed CSV record with its 1-based line number (for error messages). */
export interface CsvRow {
  line: number;
  cells: string[];
}

/**
 * Minimal CSV reader: one record per line, `,` separated, double-quoted cells with `""` escapes,
 * CRLF and a UTF-8 BOM tolerated, blank lines skipped. Quoted cells may not span lines, so every
 * error can name its line. Malformed quoting is a TagsegError naming `file` and the line.
 */
export function parseCsv(text: string, file: string): CsvRow[] {
  const rows: CsvRow[] = [];
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  for (let li = 0; li < lines.length; li++) {
    const line = lines[li];
    if (line.trim() === '') continue;
    const cells: string[] = [];
    let i = 0;
    for (;;) {
      let cell = '';
      if (line[i] === '"') {
        i++;
        for (;;) {
          if (i >= line.length) throw new TagsegError(`line ${li + 1}: unterminated quoted field`, { file });
          if (line[i] === '"') {
            if (line[i + 1] === '"') {
              cell += '"';
              i += 2;
              continue;
            }
            i++;
            break;
          }
          cell += line[i++];
        }
        if (i < line.length && line[i] !== ',') {
          throw new TagsegError(`line ${li + 1}: unexpected text after a quoted field`, { file });
        }
      } else {
        const end = line.indexOf(',', i);
        cell = end < 0 ? line.slice(i) : line.slice(i, end);
        if (cell.includes('"')) throw new TagsegError(`line ${li + 1}: stray quote in an unquoted field`, { file });
        i = end < 0 ? line.length : end;
      }
      cells.push(cell.trim());
      if (i >= line.length) break;
      i++; // skip ','
      if (i === line.length) {
        cells.push('');
        break;
      }
    }
    rows.push({ line: li + 1, cells });
  }
  return rows;
}

/** Header detection: a first row whose first cell names the id column rather than an image. */
export function isHeaderRow(row: CsvRow): boolean {
  return ['image_id', 'id', 'image', 'file', 'filename', 'path'].includes(row.cells[0].toLowerCase());
}

/** Tracks ids across the whole manifest; a second use is a TagsegError naming both places. */
export class IdRegistry {
  private readonly seen = new Map<string, string>();

  add(id: string, where: { file: string; line: number }): void {
    const prev = this.seen.get(id);
    if (prev !== undefined) {
      throw new TagsegError(`line ${where.line}: duplicate image id "${id}" (first seen at ${prev})`, {
        file: where.file,
        hint: 'image ids must be unique across all splits',
      });
    }
    this.seen.set(id, `${where.file}:${where.line}`);
  }
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

/** Images of one folder keyed by id (file name without extension); ids with two files are ambiguous. */
export interface ImageIndex {
  byId: Map<string, string>;
  ambiguous: Map<string, string[]>;
}

/** List `.jpg/.jpeg/.png` files (any case) directly in `dir`, keyed by id. */
export async function indexImages(dir: string): Promise<ImageIndex> {
  const byId = new Map<string, string>();
  const ambiguous = new Map<string, string[]>();
  const names = (await fs.readdir(dir, { withFileTypes: true }))
    .filter((d) => d.isFile() || d.isSymbolicLink())
    .map((d) => d.name)
    .sort();
  for (const name of names) {
    const dot = name.lastIndexOf('.');
    if (dot <= 0) continue;
    const ext = name.slice(dot).toLowerCase();
    if (!(IMAGE_EXTS as readonly string[]).includes(ext)) continue;
    const id = name.slice(0, dot);
    const file = `${dir}/${name}`;
    const prev = byId.get(id);
    if (prev !== undefined) ambiguous.set(id, [...(ambiguous.get(id) ?? [prev]), file]);
    else byId.set(id, file);
  }
  return { byId, ambiguous };
}

/** The image of `id`, or a TagsegError naming `where` (the file that asked for it). */
export function imageFor(index: ImageIndex, id: string, dir: string, where: { file: string; line?: number }): string {
  const at = where.line !== undefined ? `line ${where.line}: ` : '';
  const amb = index.ambiguous.get(id);
  if (amb) {
    throw new TagsegError(`${at}image id "${id}" matches several files: ${amb.join(', ')}`, {
      file: where.file,
      hint: 'keep one image file per id',
    });
  }
  const file = index.byId.get(id);
  if (file === undefined) {
    throw new TagsegError(`${at}missing image: no ${id}.jpg/.jpeg/.png in ${dir}`, { file: where.file });
  }
  return file;
}
