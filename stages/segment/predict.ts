/**
 * `tagseg predict`: masks for any folder of images from a model directory written by the segment
 * stage (net.ts), without the project: each image is decoded at the model's working size
 * (data/decode.ts, the rule ingest uses), segmented with multi-scale + flip and the model's dense
 * CRF (infer.ts; the model's config.json holds the segment stage's settings) and the
 * label map, taken at the image's ORIGINAL size, is written as `<out>/<id>.png`: an 8-bit palette
 * PNG with the VOC colours whose pixel values are the dataset's class indices (data/palette.ts),
 * so `tagseg eval` and any VOC tool read it directly.
 *
 * Streaming: images are decoded in chunks (`batchSize` x 4) while the previous chunk runs through
 * the network, so memory is flat in the number of images; inside a chunk, images of the same
 * working and original size form batches of up to `batchSize` (photo collections have a few
 * sizes). Output files are written atomically; the order of the work is the order of the ids.
 */
import * as path from 'node:path';
import { type DecodedImage, decodeImage } from '../../data/decode.js';
import { indexImages, imageFor, isDirectory } from '../../data/manifest.js';
import { encodeIndexedPng } from '../../data/palette.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError } from '../../pipeline/errors.js';
import { ensureDir, writeFileAtomic } from '../../pipeline/fsutil.js';
import { progress } from '../../pipeline/log.js';
import { type Shard, shardOf } from '../../pipeline/shard.js';
import { crfFromKeys } from '../../ops/crf.js';
import { defaultParams } from '../../pipeline/params.js';
import { segmentBatch } from './infer.js';
import { loadSegModel } from './net.js';

export interface PredictOptions {
  /** Model directory (models/segment). */
  model: string;
  /** Folder of .jpg/.jpeg/.png images. */
  images: string;
  /** Only these ids (file names without extension); default every image of the folder. */
  ids?: string[];
  /** Output folder for `<id>.png`. */
  out: string;
  /** Inference scales / flip; default the model's (config.json). */
  scales?: number[];
  flip?: boolean;
  /** Dense CRF on the probabilities: false none; true the model's (config.json `crf`), or
   * params.yaml's default segment.crf for a model without one; default the model's. */
  crf?: boolean;
  /** Images per network batch (same-size images only). */
  batchSize: number;
  /** Only the ids of this shard (pipeline/shard.ts); shards may share `out`, each writes its own files. */
  shard?: Shard;
}

export interface PredictResult {
  images: number;
  out: string;
  scales: number[];
  flip: boolean;
  crf: boolean;
  batches: number;
  seconds: number;
  imagesPerSecond: number;
}

interface Item { id: string; file: string; image: DecodedImage }

export async function predictFolder(o: PredictOptions): Promise<PredictResult> {
  const t0 = performance.now();
  if (!(Number.isInteger(o.batchSize) && o.batchSize >= 1)) throw new TagsegError(`--batch-size must be a positive integer, got ${o.batchSize}`);
  if (!(await isDirectory(o.images))) throw new TagsegError('images folder not found', { file: o.images });
  const index = await indexImages(o.images);
  const all = o.ids ?? [...index.byId.keys()];
  if (all.length === 0) throw new TagsegError('no .jpg/.jpeg/.png images in the folder', { file: o.images });
  const ids = o.shard ? all.filter((id) => shardOf(id, o.shard!.n) === o.shard!.k) : all;
  const files = ids.map((id) => imageFor(index, id, o.images, { file: o.images }));
  await initBackend();
  const net = await loadSegModel(o.model);
  const scales = o.scales ?? net.config.scales;
  const flip = o.flip ?? net.config.flip;
  const modelCrf = net.config.crf ?? null;
  const crf = o.crf === undefined ? modelCrf : o.crf ? (modelCrf ?? crfFromKeys(defaultParams().segment.crf)) : null;
  const size = net.config.workingSize;
  await ensureDir(o.out);
  const chunk = o.batchSize * 4;
  const decodeChunk = (start: number): Promise<Item[]> => {
    const p = Promise.all(ids.slice(start, start + chunk).map(async (id, k) => ({ id, file: files[start + k], image: await decodeImage(files[start + k], size) })));
    // Decoded ahead: the error (a corrupt image, named) surfaces when the chunk is awaited, not as
    // an unhandled rejection while the previous chunk is still being segmented.
    p.catch(() => undefined);
    return p;
  };
  const bar = progress('predict', ids.length);
  let batches = 0;
  try {
    let next: Promise<Item[]> | null = decodeChunk(0);
    for (let start = 0; next; start += chunk) {
      const items: Item[] = await next;
      next = start + chunk < ids.length ? decodeChunk(start + chunk) : null;
      // Batches of one working + original size, in id order within the chunk.
      const groups = new Map<string, Item[]>();
      for (const it of items) {
        const key = `${it.image.width}x${it.image.height}/${it.image.origWidth}x${it.image.origHeight}`;
        const g = groups.get(key);
        if (g) g.push(it);
        else groups.set(key, [it]);
      }
      for (const g of groups.values()) {
        for (let i = 0; i < g.length; i += o.batchSize) {
          const b = g.slice(i, i + o.batchSize);
          const im0 = b[0].image;
          const labels = await segmentBatch(net, b.map((x) => x.image.rgb), im0.height, im0.width, [im0.origHeight, im0.origWidth], { scales, flip, crf });
          batches++;
          await Promise.all(b.map((x, k) => writeFileAtomic(path.join(o.out, `${x.id}.png`), encodeIndexedPng(labels[k], im0.origWidth, im0.origHeight))));
          bar.tick(b.length);
        }
      }
    }
  } finally {
    bar.stop();
    net.dispose();
  }
  const seconds = (performance.now() - t0) / 1000;
  return { images: ids.length, out: o.out, scales, flip, crf: crf !== null, batches, seconds, imagesPerSecond: seconds > 0 ? ids.length / seconds : 0 };
}
