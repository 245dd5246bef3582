import * as path from 'node:path';
import * as fs from 'node:fs/promises';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import {
  IMAGE_EXTS,
  IdRegistry,
  ItemErrors,
  checkImageFiles,
  imageFor,
  indexImages,
  isDirectory,
  isFile,
  isHeaderRow,
  parseCsv,
  readClassesFile,
  resolveTags,
  splitTagCell,
  type ClassInfo,
  type ImageIndex,
  compactPath,
  type ItemSpec,
  type Manifest,
  type SkippedItem,
} from './manifest.js';

/**
 * "Folder of images + CSV of tags" importer, the simplest way to bring your own weakly labelled
 * data (there are no masks, so every row needs tags):
 *
 *   <root>/<id>.{jpg,jpeg,png}      images (or paths in the CSV, relative to root or absolute)
 *   <csv>                           image_id,tags[,split]   (RFC 4180; header optional)
 *   classes.json                    optional; else the sorted unique tag names (no background)
 *
 * The first cell is an id (`cat 001`, the whole cell, looked up among the root folder's files)
 * or an image path (`photos/cat_001.jpg`, id = file name without extension). Tags are separated
 * by `|` only (`potted plant|cat`). The split column defaults to `train`. Items keep the CSV's order.
 * Without a classes file the list is derived and `classesDerived` is set: the caller must pin it,
 * since the next import's tags would otherwise shift every index.
 */
export interface CsvFolderOptions {
  /** The CSV file, relative to `root` or absolute. */
  csv: string;
  /** classes.json to use, relative to `root` or absolute; default `<root>/classes.json` if present. */
  classesFile?: string;
  /** Per-item errors: `fail` (default) throws the first; `skip` leaves the item out and appends it to `errors`. */
  onError?: 'fail' | 'skip';
  errors?: SkippedItem[];
}

interface Row {
  line: number;
  id: string;
  /** Explicit path from the CSV, or null when the first cell is a bare id. */
  explicitPath: string | null;
  tagCell: string;
  split: string;
}

/** The CSV's rows, header dropped (read errors and an empty file are TagsegErrors naming it). */
async function readTagsCsv(csvFile: string): Promise<ReturnType<typeof parseCsv>> {
  let text: string;
  try {
    text = await fs.readFile(csvFile, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new TagsegError(code === 'ENOENT' ? 'tags CSV not found' : `cannot read tags CSV (${messageOf(err)})`, { file: csvFile, cause: err });
  }
  const csvRows = parseCsv(text, csvFile);
  if (csvRows.length > 0 && isHeaderRow(csvRows[0])) csvRows.shift();
  if (csvRows.length === 0) throw new TagsegError('tags CSV has no rows', { file: csvFile });
  return csvRows;
}

/** `image_id,tags[,split]` lines as rows: the first cell is an id, or a path when it has an image extension. */
function tagRows(csvRows: ReturnType<typeof parseCsv>, root: string, csvFile: string, errors: ItemErrors): Row[] {
  const ids = new IdRegistry(root);
  const rows: Row[] = [];
  for (const { line, cells } of csvRows) {
    const ref = cells[0];
    const ext = path.extname(ref).toLowerCase();
    const isPath = (IMAGE_EXTS as readonly string[]).includes(ext);
    const id = isPath ? path.basename(ref, path.extname(ref)) : ref;
    const row = errors.guard(id, (): Row => {
      if (cells.length < 2 || cells.length > 3 || ref === '') {
        throw new TagsegError(`line ${line}: malformed line, expected "image_id,tags[,split]" (got ${cells.length} field(s))`, {
          file: csvFile,
          hint: 'separate tags with "|", not commas (or quote the tags field)',
        });
      }
      ids.add(id, { file: csvFile, line });
      return { line, id, explicitPath: isPath ? compactPath(path.resolve(root, ref)) : null, tagCell: cells[1], split: cells[2] || 'train' };
    });
    if (row) rows.push(row);
  }
  return rows;
}

/** Each row's image (its path, or found by id in the folder), as an item keyed to its row. */
async function rowImages(rows: Row[], root: string, csvFile: string, errors: ItemErrors): Promise<Map<ItemSpec, Row>> {
  const index: ImageIndex | null = rows.some((r) => r.explicitPath === null) ? await indexImages(root) : null;
  const rowOf = new Map<ItemSpec, Row>();
  for (const row of rows) {
    const imagePath = row.explicitPath ?? errors.guard(row.id, () => imageFor(index as ImageIndex, row.id, '.', { file: csvFile, line: row.line }));
    if (imagePath !== undefined) rowOf.set({ id: row.id, split: row.split, imagePath, maskPath: null, tags: null }, row);
  }
  return rowOf;
}

export async function scanCsvFolder(root: string, opts: CsvFolderOptions): Promise<Manifest> {
  root = path.resolve(root);
  if (!(await isDirectory(root))) throw new TagsegError('dataset folder not found', { file: root });
  const errors = new ItemErrors(opts.onError ?? 'fail', opts.errors);
  const csvFile = path.resolve(root, opts.csv);
  const rows = tagRows(await readTagsCsv(csvFile), root, csvFile, errors);
  const rowOf = await rowImages(rows, root, csvFile, errors);
  const checked = await checkImageFiles([...rowOf.keys()], errors, root, (item) => ({ file: csvFile, line: rowOf.get(item)?.line }));

  // Derived classes come from the rows that survived, so a skipped row adds no class.
  const info = await classInfo(root, opts.classesFile, checked.map((item) => rowOf.get(item) as Row), csvFile);
  const items: ItemSpec[] = [];
  for (const item of checked) {
    const row = rowOf.get(item) as Row;
    const tags = errors.guard(item.id, () => resolveTags(splitTagCell(row.tagCell), info, { file: csvFile, line: row.line, id: item.id }));
    if (tags !== undefined) items.push({ ...item, tags });
  }
  return { root, classes: info.classes, background: info.background, void: info.void, items, classesFile: info.file, classesDerived: info.file === undefined };
}

async function classInfo(root: string, classesFile: string | undefined, rows: Row[], csvFile: string): Promise<ClassInfo> {
  if (classesFile !== undefined) return readClassesFile(path.resolve(root, classesFile));
  const dflt = path.join(root, 'classes.json');
  if (await isFile(dflt)) return readClassesFile(dflt);
  const names = [...new Set(rows.flatMap((r) => splitTagCell(r.tagCell)))].sort();
  if (names.length > 255) {
    throw new TagsegError(`${names.length} distinct tag names; at most 255 classes fit in an 8-bit mask`, { file: csvFile });
  }
  if (names.length === 0) throw new TagsegError('no tags in the CSV: no class list can be derived', { file: csvFile });
  return { classes: names, background: null, void: 255 };
}
