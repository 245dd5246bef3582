import * as path from 'node:path';
import * as fs from 'node:fs/promises';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import {
  IMAGE_EXTS,
  IdRegistry,
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
  type ItemSpec,
  type Manifest,
} from './manifest.js';

/**
 * "Folder of images + CSV of tags" importer, the simplest way to bring your own weakly labelled
 * data (there are no masks, so every row needs tags):
 *
 *   <root>/<id>.{jpg,jpeg,png}      images (or paths in the CSV, relative to root or absolute)
 *   <csv>                           image_id,tags[,split]   (header optional)
 *   classes.json                    optional; else the sorted unique tag names (no background)
 *
 * The first column is an id (`cat_001`, looked up in the root folder) or an image path
 * (`photos/cat_001.jpg`, id = file name without extension). Tags are separated by `|`, `;` or
 * spaces. The split column defaults to `train`. Items keep the CSV's order.
 */
export interface CsvFolderOptions {
  /** The CSV file, relative to `root` or absolute. */
  csv: string;
  /** classes.json to use, relative to `root` or absolute; default `<root>/classes.json` if present. */
  classesFile?: string;
}

interface Row {
  line: number;
  id: string;
  /** Explicit path from the CSV, or null when the first column is a bare id. */
  explicitPath: string | null;
  tagNames: string[];
  split: string;
}

export async function scanCsvFolder(root: string, opts: CsvFolderOptions): Promise<Manifest> {
  root = path.resolve(root);
  if (!(await isDirectory(root))) throw new TagsegError('dataset folder not found', { file: root });
  const csvFile = path.resolve(root, opts.csv);
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

  const rows: Row[] = csvRows.map(({ line, cells }) => {
    if (cells.length < 2 || cells.length > 3 || cells[0] === '') {
      throw new TagsegError(`line ${line}: malformed line, expected "image_id,tags[,split]" (got ${cells.length} field(s))`, {
        file: csvFile,
        hint: 'separate tags with "|", ";" or spaces, not commas (or quote the tags field)',
      });
    }
    const ref = cells[0];
    const ext = path.extname(ref).toLowerCase();
    const isPath = (IMAGE_EXTS as readonly string[]).includes(ext);
    return {
      line,
      id: isPath ? path.basename(ref, path.extname(ref)) : ref,
      explicitPath: isPath ? path.resolve(root, ref) : null,
      tagNames: splitTagCell(cells[1]),
      split: cells[2] || 'train',
    };
  });

  const info = await classInfo(root, opts.classesFile, rows);
  const ids = new IdRegistry();
  const needIndex = rows.some((r) => r.explicitPath === null);
  const index: ImageIndex | null = needIndex ? await indexImages(root) : null;

  const items: ItemSpec[] = [];
  for (const row of rows) {
    const where = { file: csvFile, line: row.line };
    ids.add(row.id, where);
    items.push({
      id: row.id,
      split: row.split,
      imagePath: row.explicitPath ?? imageFor(index as ImageIndex, row.id, root, where),
      maskPath: null,
      tags: resolveTags(row.tagNames, info, { ...where, id: row.id }),
    });
  }
  // Explicit paths are checked in batches (stat per file, not a listing of every folder).
  const explicit = rows.filter((r) => r.explicitPath !== null);
  for (let start = 0; start < explicit.length; start += 64) {
    const batch = explicit.slice(start, start + 64);
    const ok = await Promise.all(batch.map((r) => isFile(r.explicitPath as string)));
    const bad = batch.find((_, i) => !ok[i]);
    if (bad) throw new TagsegError(`line ${bad.line}: missing image ${bad.explicitPath}`, { file: csvFile });
  }
  return { root, classes: info.classes, background: info.background, void: info.void, items };
}

async function classInfo(root: string, classesFile: string | undefined, rows: Row[]): Promise<ClassInfo> {
  if (classesFile !== undefined) return readClassesFile(path.resolve(root, classesFile));
  const dflt = path.join(root, 'classes.json');
  if (await isFile(dflt)) return readClassesFile(dflt);
  const names = [...new Set(rows.flatMap((r) => r.tagNames))].sort();
  if (names.length > 255) {
    throw new TagsegError(`${names.length} distinct tag names; at most 255 classes fit in an 8-bit mask`, { file: root });
  }
  return { classes: names, background: null, void: 255 };
}
