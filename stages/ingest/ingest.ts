/**
 * Dataset -> Arrow: scan (VOC layout or CSV folder), decode with bounded concurrency in a stable
 * order, and stream rows into cache/dataset.arrow and cache/images.arrow. Memory is flat in the
 * number of images: at most a window of decoded images plus one record batch are held.
 */
import { artifact } from '../../pipeline/artifacts.js';
import { TableWriter, type TableMeta } from '../../pipeline/arrow.js';
import { TagsegError } from '../../pipeline/errors.js';
import { progress } from '../../pipeline/log.js';
import { scanCsvFolder } from '../../data/csvfolder.js';
import { loadItems, type LoadError } from '../../data/load.js';
import type { Manifest } from '../../data/manifest.js';
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
  skipped: LoadError[];
  seconds: number;
  imagesPerSecond: number;
  peakRssMiB: number;
}

export async function scanDataset(o: Pick<IngestOptions, 'root' | 'format' | 'csv' | 'splits'>): Promise<Manifest> {
  return o.format === 'voc' ? scanVoc(o.root, { splits: o.splits.length ? o.splits : undefined }) : scanCsvFolder(o.root, { csv: o.csv });
}

export async function ingestDataset(o: IngestOptions): Promise<IngestSummary> {
  const t0 = performance.now();
  const manifest = await scanDataset(o);
  if (manifest.items.length === 0) throw new TagsegError('the dataset has no images in the selected splits', { file: o.root });
  const extra: DatasetExtra = { background: manifest.background, void: manifest.void, dataset_root: manifest.root, working_size: o.size };
  const meta: TableMeta = { stage: 'ingest', paramsHash: o.paramsHash, classes: manifest.classes, extra: { ...extra } };
  const datasetW = await TableWriter.open(o.datasetTable, DATASET_COLUMNS, meta, { batchRows: 1024 });
  // ~16 MiB batches: small enough for flat memory, big enough for fast sequential reads.
  const imagesW = await TableWriter.open(o.imagesTable, IMAGES_COLUMNS, meta, { batchRows: 256, batchBytes: 16 * 2 ** 20 });
  const skipped: LoadError[] = [];
  const bySplit: Record<string, number> = {};
  let images = 0;
  let withMask = 0;
  let tagCount = 0;
  let peakRss = process.memoryUsage().rss;
  const bar = progress('ingest', manifest.items.length, ['skipped']);
  try {
    for await (const item of loadItems(manifest, { size: o.size, concurrency: o.concurrency, onError: o.onError, errors: skipped })) {
      const { image } = item;
      await datasetW.write({
        id: item.id,
        split: item.split,
        image_path: item.imagePath,
        mask_path: item.maskPath,
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
      images++;
      bySplit[item.split] = (bySplit[item.split] ?? 0) + 1;
      if (item.mask) withMask++;
      tagCount += item.tags.length;
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
      bar.tick(1, { skipped: skipped.length });
    }
    if (images === 0) throw new TagsegError('every item was skipped; nothing to write', { file: o.root });
    await datasetW.close();
    await imagesW.close();
  } catch (err) {
    await datasetW.abort();
    await imagesW.abort();
    throw err;
  } finally {
    bar.stop();
  }
  const seconds = (performance.now() - t0) / 1000;
  return {
    dataset: manifest.root,
    images,
    bySplit,
    withMask,
    classes: manifest.classes,
    background: manifest.background,
    tagsPerImage: tagCount / images,
    skipped,
    seconds,
    imagesPerSecond: images / seconds,
    peakRssMiB: Math.round(peakRss / 2 ** 20),
  };
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
    for (const s of r.skipped.slice(0, 20)) lines.push(`  ${s.file}: ${s.reason}`);
    if (r.skipped.length > 20) lines.push(`  ... ${r.skipped.length - 20} more (see --json)`);
  }
  return lines.join('\n');
}

/** Paths relative to the project root, as dvc.yaml lists them. */
export const INGEST_OUTPUTS = { dataset: artifact('dataset'), images: artifact('images'), metrics: artifact('ingestMetrics') };
