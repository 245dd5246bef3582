/**
 * Dataset -> Arrow: scan (VOC layout or CSV folder), decode with bounded concurrency in a stable
 * order, and stream rows into cache/dataset.arrow and cache/images.arrow. Memory is flat in the
 * number of images: at most a window of decoded images plus one record batch are held.
 */
import { artifact } from '../../pipeline/artifacts.js';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { TableWriter, type TableMeta } from '../../pipeline/arrow.js';
import { TagsegError, messageOf } from '../../pipeline/errors.js';
import { writeFileAtomic } from '../../pipeline/fsutil.js';
import { log, progress } from '../../pipeline/log.js';
import { scanCsvFolder } from '../../data/csvfolder.js';
import { type LoadedItem, loadItems } from '../../data/load.js';
import { datasetRelative, quoteId, readClassesFile, relTo, type Manifest, type SkippedItem } from '../../data/manifest.js';
import { scanVoc } from '../../data/voc.js';
import { DATASET_COLUMNS, IMAGES_COLUMNS, type DatasetExtra } from './tables.js';

export interface IngestOptions {
  root: string;
  format: 'voc' | 'csv';
  csv: string;
  /** VOC splits; [] = all but trainval. */
  splits: string[];
  size: number;
  concurrency: number;
  onError: 'fail' | 'skip';
  /** classes.json that fixes the class indices (absolute); default: the dataset's own, else VOC's / derived. */
  classesFile?: string;
  /** Where a derived class list (CSV without classes.json) is written, so later imports can pin it (absolute); default: next to `datasetTable`. */
  derivedClassesFile?: string;
  datasetTable: string;
  imagesTable: string;
  paramsHash: string;
}

export interface IngestSummary {
  dataset: string;
  images: number;
  bySplit: Record<string, number>;
  withMask: number;
  classes: string[];
  background: number | null;
  tagsPerImage: number;
  /** The classes.json the indices come from (absolute), or the pinned derived one. */
  classesFile: string | null;
  /** The derived class list was written to `derivedClassesFile` (or already there, the same). */
  classesDerived: boolean;
  skipped: SkippedItem[];
  seconds: number;
  imagesPerSecond: number;
  peakRssMiB: number;
}

/** The dataset's manifest from its layout (VOC or CSV folder); bad items fail or land in `errors` (onError). */
export async function scanDataset(
  o: Pick<IngestOptions, 'root' | 'format' | 'csv' | 'splits' | 'onError' | 'classesFile'>,
  errors: SkippedItem[],
): Promise<Manifest> {
  const common = { classesFile: o.classesFile, onError: o.onError, errors };
  return o.format === 'voc'
    ? scanVoc(o.root, { splits: o.splits.length ? o.splits : undefined, ...common })
    : scanCsvFolder(o.root, { csv: o.csv, ...common });
}

/** Scan, decode and stream every item into both tables; a derived class list is pinned once they are written. */
export async function ingestDataset(o: IngestOptions): Promise<IngestSummary> {
  const t0 = performance.now();
  const skipped: SkippedItem[] = [];
  const manifest = await scanDataset(o, skipped);
  const pinFile = o.derivedClassesFile ?? path.join(path.dirname(o.datasetTable), 'classes.json');
  if (manifest.classesDerived) await checkPin(pinFile, manifest);
  if (manifest.items.length === 0) {
    const what = skipped.length ? `every item was skipped (${skipped.length})` : 'the dataset has no images in the selected splits';
    throw new TagsegError(what, { file: o.root });
  }
  const t = await writeTables(o, manifest, skipped);
  if (manifest.classesDerived) await pinClasses(pinFile, manifest);
  const seconds = (performance.now() - t0) / 1000;
  return {
    dataset: manifest.root,
    images: t.images,
    bySplit: t.bySplit,
    withMask: t.withMask,
    classes: manifest.classes,
    background: manifest.background,
    tagsPerImage: t.tagCount / t.images,
    classesFile: manifest.classesDerived ? pinFile : (manifest.classesFile ?? null),
    classesDerived: manifest.classesDerived === true,
    skipped,
    seconds,
    imagesPerSecond: t.images / seconds,
    peakRssMiB: Math.round(t.peakRss / 2 ** 20),
  };
}

/** What the written rows add up to, for the summary. */
interface IngestTally { images: number; bySplit: Record<string, number>; withMask: number; tagCount: number; peakRss: number }

/** Decode the manifest's items in order and write each to dataset.arrow and images.arrow: both tables commit, or neither. */
async function writeTables(o: IngestOptions, manifest: Manifest, skipped: SkippedItem[]): Promise<IngestTally> {
  const extra: DatasetExtra = { background: manifest.background, void: manifest.void, working_size: o.size };
  const meta: TableMeta = { stage: 'ingest', paramsHash: o.paramsHash, classes: manifest.classes, extra: { ...extra } };
  const datasetW = await TableWriter.open(o.datasetTable, DATASET_COLUMNS, meta, { batchRows: 1024 });
  // ~16 MiB batches: small enough for flat memory, big enough for fast sequential reads.
  const imagesW = await TableWriter.open(o.imagesTable, IMAGES_COLUMNS, meta, { batchRows: 256, batchBytes: 16 * 2 ** 20 });
  const t: IngestTally = { images: 0, bySplit: {}, withMask: 0, tagCount: 0, peakRss: process.memoryUsage().rss };
  const bar = progress('ingest', manifest.items.length, ['skipped']);
  try {
    for await (const item of loadItems(manifest, { size: o.size, concurrency: o.concurrency, onError: o.onError, errors: skipped })) {
      await writeItem(item, manifest, datasetW, imagesW);
      t.images++;
      t.bySplit[item.split] = (t.bySplit[item.split] ?? 0) + 1;
      if (item.mask) t.withMask++;
      t.tagCount += item.tags.length;
      t.peakRss = Math.max(t.peakRss, process.memoryUsage().rss);
      bar.tick(1, { skipped: skipped.length });
    }
    if (t.images === 0) throw new TagsegError('every item was skipped; nothing to write', { file: o.root });
    await datasetW.close();
    await imagesW.close();
  } catch (err) {
    await datasetW.abort();
    await imagesW.abort();
    throw err;
  } finally {
    bar.stop();
  }
  return t;
}

/** One item's rows: its files and sizes in dataset.arrow (paths relative to the dataset root), its pixels and mask in images.arrow. */
async function writeItem(item: LoadedItem, manifest: Manifest, datasetW: TableWriter, imagesW: TableWriter): Promise<void> {
  const { image } = item;
  await datasetW.write({
    id: item.id,
    split: item.split,
    image_path: datasetRelative(manifest.root, item.imagePath),
    mask_path: item.maskPath === null ? null : datasetRelative(manifest.root, item.maskPath),
    orig_width: image.origWidth,
    orig_height: image.origHeight,
    width: image.width,
    height: image.height,
    tags: item.tags,
    tag_names: item.tags.map((t) => manifest.classes[t]),
  });
  await imagesW.write({
    id: item.id,
    split: item.split,
    width: image.width,
    height: image.height,
    tags: item.tags,
    pixels: image.rgb,
    mask: item.mask,
  });
}

export function formatIngest(r: IngestSummary): string {
  const splits = Object.entries(r.bySplit).map(([s, n]) => `${s} ${n}`).join(', ');
  const lines = [
    `imported ${r.images} images (${splits}; ${r.withMask} with masks) from ${r.dataset}`,
    `${r.classes.length} classes${r.background === null ? ' (no background class)' : `, background = ${r.classes[r.background]}`}, ${r.tagsPerImage.toFixed(2)} tags per image`,
    `${r.seconds.toFixed(1)} s, ${r.imagesPerSecond.toFixed(1)} images/s, peak RSS ${r.peakRssMiB} MiB`,
  ];
  if (r.skipped.length) {
    lines.push(`skipped ${r.skipped.length}:`);
    for (const s of r.skipped.slice(0, 50)) lines.push(`  ${quoteId(s.id)}: ${s.reason} (${relTo(r.dataset, s.file)})`);
    if (r.skipped.length > 50) lines.push(`  ... ${r.skipped.length - 50} more (see --json or metrics/ingest.json)`);
  }
  return lines.join('\n');
}

/**
 * The stage's DVC record (metrics/ingest.json): the summary without timings or absolute paths,
 * so it is a pure function of the data and params. `dataset` is the root as the params give it;
 * skipped items' files are relative to the dataset root.
 */
export function ingestRecord(r: IngestSummary, dataset: string): Record<string, unknown> {
  const { seconds: _s, imagesPerSecond: _r, peakRssMiB: _m, dataset: _d, classesFile: _c, skipped, ...stable } = r;
  return {
    dataset,
    ...stable,
    skipped: skipped.length,
    skippedItems: skipped.map((s) => ({ id: s.id, file: relTo(r.dataset, s.file), reason: s.reason })),
  };
}

function classesJson(m: Manifest): string {
  return `${JSON.stringify({ classes: m.classes, background: m.background, void: m.void }, null, 1)}\n`;
}

/** A derived class list may go to `file` only if nothing is there or the same list is. */
async function checkPin(file: string, m: Manifest): Promise<void> {
  let existing: Awaited<ReturnType<typeof readClassesFile>>;
  try {
    await fs.access(file);
  } catch {
    return;
  }
  try {
    existing = await readClassesFile(file);
  } catch (err) {
    throw new TagsegError(`a file is in the way of the derived class list (${messageOf(err)})`, { file, hint: 'move it away, or pin it with --classes / dataset.classes' });
  }
  if (JSON.stringify(existing.classes) !== JSON.stringify(m.classes) || existing.background !== m.background || existing.void !== m.void) {
    throw new TagsegError(`no class list is pinned and the CSV's tags give [${m.classes.join(', ')}], but this file holds another list`, {
      file,
      hint: 'pin it (--classes FILE on import, dataset.classes in params.yaml) to keep its indices, or delete it to derive the list again',
    });
  }
}

/** Write the derived class list (checked by `checkPin`) and warn: its indices depend on the tags seen. */
async function pinClasses(file: string, m: Manifest): Promise<void> {
  await checkPin(file, m);
  await writeFileAtomic(file, classesJson(m));
  log.warn(
    `no classes.json: the ${m.classes.length} classes are the sorted tag names [${m.classes.join(', ')}]; ` +
      `wrote them to ${file}: pin it (tagseg import --classes, params dataset.classes) so later imports keep these indices (a new tag is then an unknown class)`,
  );
}

/** Paths relative to the project root, as dvc.yaml lists them. */
export const INGEST_OUTPUTS = { dataset: artifact('dataset'), images: artifact('images'), metrics: artifact('ingestMetrics') };

/** Where the ingest stage writes a derived class list, relative to the project root (then named by dataset.classes). */
export const DERIVED_CLASSES = 'classes.json';
