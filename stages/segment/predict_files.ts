/**
 * Which files `tagseg predict` reads from its images folder. Every raster format this build of
 * sharp decodes is accepted (jpeg, png, webp, tiff, gif, avif, ...: read from sharp.format, so
 * the list follows the installed libvips); the extension decides, in any case. Only the folder's
 * top level is read: subfolders are listed as skipped, as is every other entry (other formats,
 * hidden files, broken links), each with its reason, so nothing is dropped silently.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import sharp from 'sharp';
import { TagsegError, messageOf } from '../../pipeline/errors.js';

/** A folder entry predict does not segment, and why. */
export interface SkippedFile {
  file: string;
  reason: string;
}

/** sharp's vips-native (.v) and vector (svg) loaders: not photos, so not read. */
const NOT_PHOTOS = new Set(['vips', 'svg']);

/** Extensions (lower case, with the dot) of the raster formats sharp can read from a file. */
export const PREDICT_EXTS: readonly string[] = Object.entries(sharp.format)
  .filter(([name, f]) => f.input.file && !NOT_PHOTOS.has(name))
  .flatMap(([, f]) => (f.input as { fileSuffix?: string[] }).fileSuffix ?? [])
  .sort();

export interface ImageListing {
  /** id (file name without extension) -> file, for ids with exactly one image file. */
  byId: Map<string, string>;
  /** Ids with several image files (a.jpg and a.png would write the same a.png). */
  ambiguous: Map<string, string[]>;
  skipped: SkippedFile[];
}

/** The entries of `dir`, sorted by name, split into images and skipped entries. */
export async function listImages(dir: string): Promise<ImageListing> {
  let entries: string[];
  try {
    entries = (await fs.readdir(dir)).sort();
  } catch (err) {
    throw new TagsegError(`cannot read the images folder (${messageOf(err)})`, { file: dir, cause: err });
  }
  const byId = new Map<string, string>();
  const ambiguous = new Map<string, string[]>();
  const skipped: SkippedFile[] = [];
  for (const name of entries) {
    const file = path.join(dir, name);
    const reason = await skipReason(file, name);
    if (reason) {
      skipped.push({ file, reason });
      continue;
    }
    const id = name.slice(0, name.lastIndexOf('.'));
    const prev = byId.get(id) ?? ambiguous.get(id)?.[0];
    if (prev === undefined) byId.set(id, file);
    else {
      ambiguous.set(id, [...(ambiguous.get(id) ?? [prev]), file]);
      byId.delete(id);
    }
  }
  return { byId, ambiguous, skipped };
}

/** Why `file` is not read as an image, or null when it is one. Links are followed. */
async function skipReason(file: string, name: string): Promise<string | null> {
  let st;
  try {
    st = await fs.stat(file);
  } catch (err) {
    return `cannot read (${(err as NodeJS.ErrnoException).code ?? messageOf(err)}: a broken link?)`;
  }
  if (st.isDirectory()) return 'subfolder (predict reads only the top level of --images)';
  if (!st.isFile()) return 'not a regular file';
  if (name.startsWith('.')) return 'hidden file';
  const dot = name.lastIndexOf('.');
  const ext = dot > 0 ? name.slice(dot).toLowerCase() : '';
  if (!PREDICT_EXTS.includes(ext)) return `not an image format predict reads (${ext || 'no extension'}; accepted: ${PREDICT_EXTS.join(' ')})`;
  return null;
}

/** The image of `id`, or the reason there is none (missing or ambiguous). */
export function imageOf(listing: ImageListing, id: string, dir: string): { file: string } | { reason: string } {
  const amb = listing.ambiguous.get(id);
  if (amb) return { reason: `image id "${id}" matches several files: ${amb.map((f) => path.basename(f)).join(', ')} (keep one file per id)` };
  const file = listing.byId.get(id);
  return file === undefined ? { reason: `missing image: no ${id}.<image extension> in ${dir}` } : { file };
}
