import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import { log } from '../pipeline/log.js';
import {
  IdRegistry,
  VOC_CLASSES,
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
 * PASCAL-VOC-layout importer (VOC 2012, MSRC-v2, our synthetic sets):
 *
 *   JPEGImages/<id>.{jpg,jpeg,png}        every image
 *   SegmentationClass/<id>.png            optional palette/grey masks (value = class, 255 = void)
 *   ImageSets/Segmentation/<split>.txt    one id per line (first token of the line)
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
}

/** Conventional splits first, in this order; any others follow alphabetically. */
const SPLIT_ORDER = ['train', 'val', 'test'];

export async function scanVoc(root: string, opts: VocScanOptions = {}): Promise<Manifest> {
  root = path.resolve(root);
  if (!(await isDirectory(root))) throw new TagsegError('dataset folder not found', { file: root });

  const classesFile = path.join(root, 'classes.json');
  const info: ClassInfo = (await isFile(classesFile))
    ? await readClassesFile(classesFile)
    : { classes: [...VOC_CLASSES], background: 0, void: 255 };

  const imageDir = path.join(root, 'JPEGImages');
  if (!(await isDirectory(imageDir))) {
    throw new TagsegError('no JPEGImages folder: not a VOC-layout dataset', {
      file: imageDir,
      hint: 'for a folder of images with a CSV of tags, use the csv-folder importer',
    });
  }
  const images = await indexImages(imageDir);

  const maskDir = path.join(root, 'SegmentationClass');
  const masks = new Set<string>();
  if (await isDirectory(maskDir)) {
    for (const name of await fs.readdir(maskDir)) if (name.endsWith('.png')) masks.add(name.slice(0, -4));
  }

  const listed = await readSplits(root, images, imageDir, opts.splits);
  const items: ItemSpec[] = listed.map(({ id, split, imagePath }) => ({
    id,
    split,
    imagePath,
    maskPath: masks.has(id) ? path.join(maskDir, `${id}.png`) : null,
    tags: null,
  }));

  const tagsFile = path.join(root, 'tags.csv');
  const annDir = path.join(root, 'Annotations');
  let tagSource: string;
  if (await isFile(tagsFile)) {
    const tags = await readTagsCsv(tagsFile, info, images, imageDir);
    for (const item of items) item.tags = tags.get(item.id) ?? null;
    tagSource = tagsFile;
  } else if (await isDirectory(annDir)) {
    await fillTagsFromXml(items, annDir, info);
    tagSource = `${annDir}/<id>.xml`;
  } else {
    tagSource = 'tags.csv or Annotations/';
  }
  for (const item of items) {
    if (item.tags === null && item.maskPath === null) {
      throw new TagsegError(`image ${item.id} has no tags (not in ${tagSource}) and no mask to derive them from`, {
        file: item.imagePath,
        hint: `add a line "${item.id},<class>|<class>" to ${tagsFile} or a mask ${path.join(maskDir, `${item.id}.png`)}`,
      });
    }
  }
  return { root, classes: info.classes, background: info.background, void: info.void, items };
}

async function readSplits(
  root: string,
  images: ImageIndex,
  imageDir: string,
  splits: string[] | undefined,
): Promise<{ id: string; split: string; imagePath: string }[]> {
  const setDir = path.join(root, 'ImageSets', 'Segmentation');
  let names: string[];
  if (splits !== undefined) {
    names = splits;
  } else if (await isDirectory(setDir)) {
    names = (await fs.readdir(setDir))
      .filter((n) => n.endsWith('.txt') && n !== 'trainval.txt')
      .map((n) => n.slice(0, -4))
      .sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
    if (names.length === 0) {
      throw new TagsegError('no split files (<split>.txt) found', { file: setDir });
    }
  } else {
    log.info(`${setDir} not found: using every image in ${imageDir} as split "train"`);
    return [...images.byId.keys()].sort().map((id) => ({ id, split: 'train', imagePath: imageFor(images, id, imageDir, { file: imageDir }) }));
  }

  const ids = new IdRegistry();
  const out: { id: string; split: string; imagePath: string }[] = [];
  for (const split of names) {
    const file = path.join(setDir, `${split}.txt`);
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
    const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
    for (let i = 0; i < lines.length; i++) {
      const id = lines[i].trim().split(/\s+/)[0];
      if (!id) continue;
      const where = { file, line: i + 1 };
      ids.add(id, where);
      out.push({ id, split, imagePath: imageFor(images, id, imageDir, where) });
    }
  }
  return out;
}

function rank(split: string): number {
  const i = SPLIT_ORDER.indexOf(split);
  return i < 0 ? SPLIT_ORDER.length : i;
}

/**
 * `tags.csv`: `image_id,tags` (optional header), tags separated by `|`, `;` or spaces.
 * Every row must name an existing image (typos would otherwise silently drop tags).
 */
async function readTagsCsv(file: string, info: ClassInfo, images: ImageIndex, imageDir: string): Promise<Map<string, number[]>> {
  const rows = parseCsv(await fs.readFile(file, 'utf8'), file);
  if (rows.length > 0 && isHeaderRow(rows[0])) rows.shift();
  const tags = new Map<string, number[]>();
  const ids = new IdRegistry();
  for (const row of rows) {
    if (row.cells.length !== 2 || row.cells[0] === '') {
      throw new TagsegError(`line ${row.line}: malformed line, expected "image_id,tags" (got ${row.cells.length} field(s))`, {
        file,
        hint: 'separate tags with "|", ";" or spaces, not commas (or quote the tags field)',
      });
    }
    const [id, cell] = row.cells;
    const where = { file, line: row.line };
    ids.add(id, where);
    imageFor(images, id, imageDir, where);
    tags.set(id, resolveTags(splitTagCell(cell), info, { ...where, id }));
  }
  return tags;
}

/**
 * VOC XML annotations: the `<name>` of each `<object>`, ignoring `<part>` names (VOC person
 * layouts nest head/hand/foot parts inside objects). A missing XML leaves the tags null.
 */
async function fillTagsFromXml(items: ItemSpec[], annDir: string, info: ClassInfo): Promise<void> {
  const batch = 32;
  for (let start = 0; start < items.length; start += batch) {
    await Promise.all(
      items.slice(start, start + batch).map(async (item) => {
        const file = path.join(annDir, `${item.id}.xml`);
        let xml: string;
        try {
          xml = await fs.readFile(file, 'utf8');
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
          throw new TagsegError(`cannot read annotation (${messageOf(err)})`, { file, cause: err });
        }
        item.tags = resolveTags(parseVocObjectNames(xml), info, { file, id: item.id });
      }),
    );
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
