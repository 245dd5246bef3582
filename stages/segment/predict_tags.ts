/**
 * `tagseg predict --tags FILE`: the importer's `image_id,tags[,split]` CSV (data/csvfolder.ts:
 * header optional, the first cell an id or an image path, tags split by data/manifest.ts
 * splitTagCell, names resolved by resolveTags against the MODEL's classes; the split column is
 * ignored) restricts each image's prediction to its tagged classes plus the background class when
 * the dataset has one: the other classes' probabilities are set to 0 and each pixel's
 * renormalised (infer.ts restrictedCrf), before the CRF and again on its marginals, so no pixel can take an untagged class.
 * An image absent from the file is a per-image error (stop, or listed with --on-error skip), never
 * predicted untagged: a missing row is more often a mistake than a wish.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { IdRegistry, type ClassInfo, isHeaderRow, parseCsv, resolveTags, splitTagCell } from '../../data/manifest.js';
import { TagsegError, messageOf } from '../../pipeline/errors.js';
import { allowedClasses } from './infer.js';
import { PREDICT_EXTS } from './predict_files.js';

/** id -> allowed classes: a 0/1 mask over the model's K classes (tags + background). */
export type TagMasks = Map<string, Uint8Array>;

/** Read `file` and resolve every row against `info` (the model's classes). Errors name the file and line. */
export async function readTagsFile(file: string, info: ClassInfo): Promise<TagMasks> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new TagsegError(`cannot read the tags file (${messageOf(err)})`, { file, cause: err });
  }
  const rows = parseCsv(text, file);
  if (rows.length > 0 && isHeaderRow(rows[0])) rows.shift();
  if (rows.length === 0) throw new TagsegError('the tags file has no rows', { file, hint: 'expected image_id,tags[,split] lines' });
  const ids = new IdRegistry();
  const out: TagMasks = new Map();
  for (const { line, cells } of rows) {
    if (cells.length < 2 || cells.length > 3 || cells[0] === '') {
      throw new TagsegError(`line ${line}: malformed line, expected "image_id,tags[,split]" (got ${cells.length} field(s))`, { file });
    }
    const ext = path.extname(cells[0]).toLowerCase();
    const id = PREDICT_EXTS.includes(ext) ? path.basename(cells[0], path.extname(cells[0])) : cells[0];
    ids.add(id, { file, line });
    out.set(id, allowedClasses(resolveTags(splitTagCell(cells[1]), info, { file, line, id }), info.classes.length, info.background));
  }
  return out;
}
