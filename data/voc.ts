import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { orderedMap } from '../pipeline/concurrency.js';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import { log } from '../pipeline/log.js';
import {
  IdRegistry,
  ItemErrors,
  VOC_CLASSES,
  checkImageFiles,
  imageFor,
  indexImages,
  isDirectory,
  isFile,
  isHeaderRow,
  parseCsv,
  readClassesFile,
  resolveTags,
  showId,
  splitTagCell,
  type ClassInfo,
  type ImageIndex,
  type ItemSpec,
  type Manifest,
  type SkippedItem,
} from './manifest.js';

/**
 * PASCAL-VOC-layout importer (VOC 2012, MSRC-v2, our synthetic sets):
 *
 *   JPEGImages/<id>.{jpg,jpeg,png}        every image
 *   SegmentationClass/<id>.png            optional palette/grey masks (value = class, 255 = void)
 *   ImageSets/Segmentation/<split>.txt    one id per line (the whole line, trimmed: ids may hold spaces)
 *   classes.json                          optional; default: VOC's background + 20 classes
 *   tags.csv | Annotations/<id>.xml       optional image-level tags; else derived from the mask
 *
 * Tag sources, first found wins for the whole dataset: `tags.csv`, then VOC XML annotations,
 * then null (the loader derives tags from the mask). Without ImageSets/Segmentation every image
 * of JPEGImages becomes split `train`.
 */
export interface VocScanOptions {
  /** Split names (`ImageSets/Segmentation/<name>.txt`); default: every .txt there except `trainval`. */
  splits?: string[];
  /** classes.json to use instead of `<root>/classes.json` (absolute). */
  classesFile?: string;
  /** Per-item errors: `fail` (default) throws the first; `skip` leaves the item out and appends it to `errors`. */
  onError?: 'fail' | 'skip';
  errors?: SkippedItem[];
}

/** Conventional splits first, in this order; any others follow alphabetically. */
const SPLIT_ORDER = ['train', 'val', 'test'];

type Where = { file: string; line?: number };

/** classes.json (`opts.classesFile`, else `<root>/classes.json` if present), else the 21 VOC classes. */
async function vocClasses(root: string, opts: VocScanOptions): Promise<ClassInfo> {
  const classesFile = opts.classesFile ?? path.join(root, 'classes.json');
  return opts.classesFile !== undefined || (await isFile(classesFile))
    ? await readClassesFile(classesFile)
    : { classes: [...VOC_CLASSES], background: 0, void: 255 };
}

/** The images of JPEGImages/ (required: it is what makes a folder a VOC-layout dataset). */
async function vocImages(root: string): Promise<ImageIndex> {
  const imageDir = path.join(root, 'JPEGImages');
  if (!(await isDirectory(imageDir))) {
    throw new TagsegError('no JPEGImages folder: not a VOC-layout dataset', {
      file: imageDir,
      hint: 'for a folder of images with a CSV of tags, use the csv-folder importer',
    });
  }
  return indexImages(imageDir);
}

/** The ids with a SegmentationClass/<id>.png mask (optional: the pipeline needs tags only). */
async function vocMasks(maskDir: string): Promise<Set<string>> {
  const masks = new Set<string>();
  if (await isDirectory(maskDir)) {
    for (const name of await fs.readdir(maskDir)) if (name.endsWith('.png')) masks.add(name.slice(0, -4));
  }
  return masks;
}

/** Image tags from tags.csv if present, else from the Annotations/<id>.xml objects (VOC's own), and where they came from. */
async function vocTags(
  root: string, items: ItemSpec[], info: ClassInfo, images: ImageIndex, named: Set<string>, errors: ItemErrors,
): Promise<{ found: Map<string, number[] | TagsegError>; tagSource: string; tagsFile: string }> {
  const tagsFile = path.join(root, 'tags.csv');
  const annDir = path.join(root, 'Annotations');
  if (await isFile(tagsFile)) return { found: await readTagsCsv(tagsFile, info, images, named, errors), tagSource: 'tags.csv', tagsFile };
  if (await isDirectory(annDir)) return { found: await readXmlTags(items, annDir, info), tagSource: 'Annotations/<id>.xml', tagsFile };
  return { found: new Map(), tagSource: 'tags.csv or Annotations/', tagsFile };
}

export async function scanVoc(root: string, opts: VocScanOptions = {}): Promise<Manifest> {
  root = path.resolve(root);
  if (!(await isDirectory(root))) throw new TagsegError('dataset folder not found', { file: root });
  const errors = new ItemErrors(opts.onError ?? 'fail', opts.errors);
  const info = await vocClasses(root, opts);
  const images = await vocImages(root);
  const maskDir = path.join(root, 'SegmentationClass');
  const masks = await vocMasks(maskDir);

  const listed = await readSplits(root, images, opts.splits, errors);
  const whereOf = new Map(listed.items.map((l) => [l.id, l.where]));
  let items: ItemSpec[] = listed.items.map(({ id, split, imagePath }) => ({
    id,
    split,
    imagePath,
    // a template, not path.join (see compactPath): the id is a file name read from maskDir
    maskPath: masks.has(id) ? `${maskDir}/${id}.png` : null,
    tags: null,
  }));
  const { found, tagSource, tagsFile } = await vocTags(root, items, info, images, listed.named, errors);
  items = attachTags(items, found, errors, { tagSource, tagsFile, maskDir });
  items = await checkImageFiles(items, errors, root, (item) => whereOf.get(item.id) as Where);
  return { root, classes: info.classes, background: info.background, void: info.void, items, classesFile: info.file };
}

/** ImageSets/Segmentation's split names (every <split>.txt but trainval, conventional order), or null without the folder. */
async function splitNames(setDir: string): Promise<string[] | null> {
  if (!(await isDirectory(setDir))) return null;
  const names = (await fs.readdir(setDir))
    .filter((n) => n.endsWith('.txt') && n !== 'trainval.txt')
    .map((n) => n.slice(0, -4))
    .sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
  if (names.length === 0) {
    throw new TagsegError('no split files (<split>.txt) found', { file: setDir });
  }
  return names;
}

/** The lines of one split file (BOM dropped; any line ending). */
async function splitFileLines(file: string, split: string): Promise<string[]> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new TagsegError(code === 'ENOENT' ? `split file for "${split}" not found` : `cannot read split file (${messageOf(err)})`, {
      file,
      cause: err,
    });
  }
  return text.replace(/^\uFEFF/, '').split(/\r\n|\n|\r/);
}

/**
 * Give each item its tags (from `found`), leaving out those whose tag row is an error and those
 * with neither tags nor a mask to derive them from.
 */
function attachTags(
  items: ItemSpec[],
  found: Map<string, number[] | TagsegError>,
  errors: ItemErrors,
  src: { tagSource: string; tagsFile: string; maskDir: string },
): ItemSpec[] {
  return items.filter((item) => {
    const tags = found.get(item.id);
    if (tags instanceof TagsegError) {
      errors.report(item.id, tags);
      return false;
    }
    item.tags = tags ?? null;
    if (item.tags === null && item.maskPath === null) {
      errors.report(
        item.id,
        new TagsegError(`image ${showId(item.id)} has no tags (not in ${src.tagSource}) and no mask to derive them from`, {
          file: item.imagePath,
          hint: `add a line "${item.id},<class>|<class>" to ${src.tagsFile} or a mask ${path.join(src.maskDir, `${item.id}.png`)}`,
        }),
      );
      return false;
    }
    return true;
  });
}

/** The listed images of each split (ImageSets/Segmentation/<split>.txt), or every image as "train" without that folder. */
async function readSplits(
  root: string,
  images: ImageIndex,
  splits: string[] | undefined,
  errors: ItemErrors,
): Promise<{ items: { id: string; split: string; imagePath: string; where: Where }[]; named: Set<string> }> {
  const setDir = path.join(root, 'ImageSets', 'Segmentation');
  const names = splits ?? (await splitNames(setDir));
  if (names === null) {
    const imageDir = path.join(root, 'JPEGImages');
    log.info(`${setDir} not found: using every image in ${imageDir} as split "train"`);
    const where = { file: imageDir };
    const ids = [...images.byId.keys()].sort();
    return { items: ids.map((id) => ({ id, split: 'train', imagePath: imageFor(images, id, 'JPEGImages', where), where })), named: new Set(ids) };
  }

  const ids = new IdRegistry(root);
  const out: { id: string; split: string; imagePath: string; where: Where }[] = [];
  const named = new Set<string>();
  for (const split of names) {
    const file = path.join(setDir, `${split}.txt`);
    const lines = await splitFileLines(file, split);
    for (let i = 0; i < lines.length; i++) {
      // The whole line is the id (a file name may hold spaces): cutting at a space would import another image.
      const id = lines[i].trim();
      if (!id) continue;
      const where = { file, line: i + 1 };
      named.add(id);
      const imagePath = errors.guard(id, () => {
        ids.add(id, where);
        return imageFor(images, id, 'JPEGImages', where);
      });
      if (imagePath !== undefined) out.push({ id, split, imagePath, where });
    }
  }
  return { items: out, named };
}

function rank(split: string): number {
  const i = SPLIT_ORDER.indexOf(split);
  return i < 0 ? SPLIT_ORDER.length : i;
}

/**
 * `tags.csv`: `image_id,tags` (optional header), tags separated by `|` only. Returns each id's
 * tags, or the TagsegError of its row (unknown class, empty list, malformed row, a second row
 * for the id: its tags are then ambiguous), which skips that item when it is imported. A row
 * naming no image at all (a typo would silently drop its tags) is reported at once, unless a
 * split file named it (then its missing image is already reported).
 */
async function readTagsCsv(
  file: string,
  info: ClassInfo,
  images: ImageIndex,
  listed: Set<string>,
  errors: ItemErrors,
): Promise<Map<string, number[] | TagsegError>> {
  const rows = parseCsv(await fs.readFile(file, 'utf8'), file);
  if (rows.length > 0 && isHeaderRow(rows[0])) rows.shift();
  const tags = new Map<string, number[] | TagsegError>();
  const ids = new IdRegistry(path.dirname(file));
  for (const row of rows) {
    const id = row.cells[0];
    const where = { file, line: row.line };
    let result: number[] | TagsegError;
    try {
      if (row.cells.length !== 2 || id === '') {
        throw new TagsegError(`line ${row.line}: malformed line, expected "image_id,tags" (got ${row.cells.length} field(s))`, {
          file,
          hint: 'separate tags with "|", not commas (or quote the tags field)',
        });
      }
      ids.add(id, where);
      result = resolveTags(splitTagCell(row.cells[1]), info, { ...where, id });
    } catch (err) {
      if (!(err instanceof TagsegError)) throw err;
      result = err;
    }
    if (!listed.has(id)) {
      // Not imported: only a row naming no image at all is reported (a typo would silently drop its tags).
      if (id === '' && result instanceof TagsegError) errors.report(id, result);
      else if (!images.byId.has(id)) errors.guard(id, () => imageFor(images, id, 'JPEGImages', where));
      continue;
    }
    // A second row for an id makes its tags ambiguous: its error replaces the first row's tags.
    const prev = tags.get(id);
    if (prev === undefined || (result instanceof TagsegError && !(prev instanceof TagsegError))) tags.set(id, result);
  }
  return tags;
}

/**
 * VOC XML annotations: the `<name>` of each `<object>`, ignoring `<part>` names (VOC person
 * layouts nest head/hand/foot parts inside objects). A missing XML leaves the tags unset; an
 * unreadable one or an unknown class is that item's error.
 */
async function readXmlTags(items: ItemSpec[], annDir: string, info: ClassInfo): Promise<Map<string, number[] | TagsegError>> {
  const out = new Map<string, number[] | TagsegError>();
  // Reads overlap (many small files); the map is filled in item order.
  for await (const [id, tags] of orderedMap(items, (item) => readXmlTagsOf(item.id, annDir, info), { concurrency: 32 })) {
    if (tags !== undefined) out.set(id, tags);
  }
  return out;
}

/** One item's XML tags: its class indices, its error, or undefined when it has no XML. */
async function readXmlTagsOf(id: string, annDir: string, info: ClassInfo): Promise<[string, number[] | TagsegError | undefined]> {
  const file = path.join(annDir, `${id}.xml`);
  let xml: string;
  try {
    xml = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [id, undefined];
    return [id, new TagsegError(`cannot read annotation (${messageOf(err)})`, { file, cause: err })];
  }
  try {
    return [id, resolveTags(parseVocObjectNames(xml), info, { file, id })];
  } catch (err) {
    if (!(err instanceof TagsegError)) throw err;
    return [id, err];
  }
}

/** Object class names of a VOC annotation XML, in document order. */
export function parseVocObjectNames(xml: string): string[] {
  const names: string[] = [];
  for (const m of xml.matchAll(/<object\b[^>]*>([\s\S]*?)<\/object>/g)) {
    const body = m[1].replace(/<part\b[^>]*>[\s\S]*?<\/part>/g, '');
    const name = /<name>\s*([^<]*?)\s*<\/name>/.exec(body);
    if (name) names.push(name[1]);
  }
  return names;
}
