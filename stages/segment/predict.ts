/**
 * `tagseg predict`: masks for any folder of images from a model directory written by the segment
 * stage (net.ts), without the project: each image is decoded at the model's working size
 * (data/decode.ts, the rule ingest uses), segmented with multi-scale + flip and the model's dense
 * CRF (infer.ts; the model's config.json holds the segment stage's settings) and the
 * label map, taken at the image's ORIGINAL size, is written as `<out>/<id>.png`: an 8-bit palette
 * PNG in the dataset's class palette (data/palette.ts classPalette) whose pixel values are the
 * dataset's class indices, so `tagseg eval` and any VOC tool read it directly; `overlay` adds a
 * colour overlay with a legend per image (predict_overlay.ts).
 *
 * A bounded pipeline, so memory is flat in the number of images: images are decoded in chunks
 * (`batchSize` x 4) while the previous chunk runs through the network; inside a chunk, images of
 * the same working and original size form batches of up to `batchSize` (photo collections have a
 * few sizes). Each image's CRF then runs on a worker thread (ops/crf_pool.ts, every core by
 * default), its resize + argmax and PNG after it, in a p-queue that holds at most one waiting
 * image per thread, while the main thread decodes and runs the network on the next images. Every
 * step is deterministic and per image, so the masks are the same bytes whatever the thread count.
 * Output files are written atomically.
 *
 * Inputs (predict_files.ts): every raster format sharp reads, top level of the folder only;
 * subfolders and other entries are listed in `skipped` with the reason. A missing, ambiguous or
 * undecodable image stops the run with a TagsegError naming it, or with `onError: 'skip'` is
 * listed in `skipped` too.
 */
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import PQueue from 'p-queue';
import { type DecodedImage, decodeImage } from '../../data/decode.js';
import { isDirectory } from '../../data/manifest.js';
import { classPalette, encodeIndexedPng } from '../../data/palette.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError, messageOf } from '../../pipeline/errors.js';
import { ensureDir, writeFileAtomic } from '../../pipeline/fsutil.js';
import { progress } from '../../pipeline/log.js';
import { type DenseCrfOptions, crfFromKeys } from '../../ops/crf.js';
import { crfPool } from '../../ops/crf_pool.js';
import { type Shard, shardOf } from '../../pipeline/shard.js';
import { defaultParams } from '../params.js';
import { batchProbs, labelsOf } from './infer.js';
import { type SegNet, loadSegModel } from './net.js';
import { type SkippedFile, imageOf, listImages } from './predict_files.js';
import { overlayWithLegend } from './predict_overlay.js';
import { type TagMasks, readTagsFile, restrictProbs } from './predict_tags.js';

export type { SkippedFile } from './predict_files.js';

export interface PredictOptions {
  /** Model directory (models/segment). */
  model: string;
  /** Folder of images (every raster format sharp reads: predict_files.ts); its top level only. */
  images: string;
  /** Only these ids (file names without extension); default every image of the folder. */
  ids?: string[];
  /** The file the ids came from, named in errors. */
  idsFile?: string;
  /** The importer's `image_id,tags` CSV: each image's prediction restricted to its tags (+ background); predict_tags.ts. */
  tags?: string;
  /** Output folder for `<id>.png`. */
  out: string;
  /** Also write colour overlays with a legend as `<overlay>/<id>.png` (predict_overlay.ts); another folder than `out`. */
  overlay?: string;
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
  /** CRF threads (ops/workerpool.ts; 1 = on the main thread); default every core. */
  threads?: number;
  /** A missing, ambiguous or undecodable image: 'fail' (default) stops with its TagsegError;
   * 'skip' lists it in `skipped` and goes on. */
  onError?: 'fail' | 'skip';
}

export interface PredictResult {
  /** Masks written. */
  images: number;
  out: string;
  scales: number[];
  flip: boolean;
  crf: boolean;
  batches: number;
  /** CRF threads used. */
  threads: number;
  seconds: number;
  imagesPerSecond: number;
  /** Folder entries that are not images, and (with onError 'skip') images that failed, with the reason. */
  skipped: SkippedFile[];
}

interface Item { id: string; file: string; image: DecodedImage; original?: DecodedImage; allowed?: Uint8Array }

/** The files to segment (in id order) and what is skipped; per-item errors follow `onError`. */
async function resolveInputs(o: PredictOptions): Promise<{ todo: { id: string; file: string }[]; skipped: SkippedFile[] }> {
  if (!(await isDirectory(o.images))) throw new TagsegError('images folder not found', { file: o.images });
  const listing = await listImages(o.images);
  const skipped = [...listing.skipped];
  const todo: { id: string; file: string }[] = [];
  const ids = o.ids ?? [...new Set([...listing.byId.keys(), ...listing.ambiguous.keys()])].sort();
  for (const id of ids) {
    const r = imageOf(listing, id, o.images);
    if ('file' in r) todo.push({ id, file: r.file });
    else if (o.onError === 'skip') skipped.push({ file: listing.ambiguous.has(id) ? path.join(o.images, id) : (o.idsFile ?? o.images), reason: r.reason });
    else throw new TagsegError(r.reason, { file: o.idsFile ?? o.images, hint: 'or pass --on-error skip to list it and go on' });
  }
  if (todo.length === 0) {
    throw new TagsegError(`no images to segment (${skipped.length} entries skipped)`, {
      file: o.images,
      hint: skipped.slice(0, 3).map((s) => `${path.basename(s.file)}: ${s.reason}`).join('; ') || undefined,
    });
  }
  return { todo, skipped };
}

/** `todo` with each image's allowed classes; an image without a row follows `onError`. */
function withTags(todo: { id: string; file: string }[], tags: TagMasks, file: string, onError: PredictOptions['onError'], skipped: SkippedFile[]) {
  const out: { id: string; file: string; allowed: Uint8Array }[] = [];
  for (const t of todo) {
    const allowed = tags.get(t.id);
    if (allowed) out.push({ ...t, allowed });
    else if (onError === 'skip') skipped.push({ file: t.file, reason: `no row for image "${t.id}" in the tags file ${file}` });
    else throw new TagsegError(`no row for image "${t.id}"`, { file, hint: 'add its tags, leave it out with --ids, or pass --on-error skip' });
  }
  if (out.length === 0) throw new TagsegError('no image to segment has a row in the tags file', { file });
  return out;
}

/** Network settings for predict: the options over the model's config.json. */
function inferSettings(net: SegNet, o: PredictOptions): { scales: number[]; flip: boolean; crf: DenseCrfOptions | null } {
  const modelCrf = net.config.crf ?? null;
  return {
    scales: o.scales ?? net.config.scales,
    flip: o.flip ?? net.config.flip,
    crf: o.crf === undefined ? modelCrf : o.crf ? (modelCrf ?? crfFromKeys(defaultParams().segment.crf)) : null,
  };
}

/** Batches of one working + original size, at most `batchSize` each, in id order within the chunk. */
function sizeBatches(items: Item[], batchSize: number): Item[][] {
  const groups = new Map<string, Item[]>();
  for (const it of items) {
    const key = `${it.image.width}x${it.image.height}/${it.image.origWidth}x${it.image.origHeight}`;
    const g = groups.get(key);
    if (g) g.push(it);
    else groups.set(key, [it]);
  }
  return [...groups.values()].flatMap((g) => Array.from({ length: Math.ceil(g.length / batchSize) }, (_, i) => g.slice(i * batchSize, (i + 1) * batchSize)));
}

/**
 * decodeChunk(start): the images todo[start, start + chunk) decoded at the working size (and the
 * original size for overlays); an undecodable one throws, or with onError 'skip' is listed.
 */
function chunkDecoder(todo: { id: string; file: string; allowed?: Uint8Array }[], chunk: number, size: number, o: PredictOptions, skipped: SkippedFile[]) {
  const decodeOne = async (t: { id: string; file: string; allowed?: Uint8Array }): Promise<Item | null> => {
    try {
      // The overlay is drawn at the original size, where the mask is.
      const original = o.overlay !== undefined ? await decodeImage(t.file, 0) : undefined;
      return { ...t, image: await decodeImage(t.file, size), original };
    } catch (err) {
      if (o.onError !== 'skip') throw err;
      skipped.push({ file: t.file, reason: err instanceof TagsegError ? err.reason : messageOf(err) });
      return null;
    }
  };
  return (start: number): Promise<Item[]> => {
    const p = Promise.all(todo.slice(start, start + chunk).map(decodeOne)).then((xs) => xs.filter((x): x is Item => x !== null));
    // Decoded ahead: the error (a corrupt image, named) surfaces when the chunk is awaited, not as
    // an unhandled rejection while the previous chunk is still being segmented.
    p.catch(() => undefined);
    return p;
  };
}

export async function predictFolder(o: PredictOptions): Promise<PredictResult> {
  const t0 = performance.now();
  if (!(Number.isInteger(o.batchSize) && o.batchSize >= 1)) throw new TagsegError(`--batch-size must be a positive integer, got ${o.batchSize}`);
  if (o.threads !== undefined && !(Number.isInteger(o.threads) && o.threads >= 1)) throw new TagsegError(`--threads must be a positive integer, got ${o.threads}`);
  if (o.overlay !== undefined && path.resolve(o.overlay) === path.resolve(o.out)) {
    throw new TagsegError('--overlay must be another folder than --out (tagseg eval reads every PNG of --out as a mask)', { file: o.overlay });
  }
  const inputs = await resolveInputs(o);
  const { skipped } = inputs;
  await initBackend();
  const net = await loadSegModel(o.model);
  let todo: { id: string; file: string; allowed?: Uint8Array }[] = inputs.todo;
  try {
    if (o.tags !== undefined) todo = withTags(todo, await readTagsFile(o.tags, { ...net.config, void: 255 }), o.tags, o.onError, skipped);
  } catch (err) {
    net.dispose();
    throw err;
  }
  // After the checks of the whole run, so every shard reports the same errors and skipped entries.
  if (o.shard) todo = todo.filter((t) => shardOf(t.id, o.shard!.n) === o.shard!.k);
  const { scales, flip, crf } = inferSettings(net, o);
  const size = net.config.workingSize;
  const K = net.config.classes.length;
  const palette = classPalette(net.config.background);
  await ensureDir(o.out);
  if (o.overlay !== undefined) await ensureDir(o.overlay);
  const chunk = o.batchSize * 4;
  const decodeChunk = chunkDecoder(todo, chunk, size, o, skipped);
  const pool = crfPool(crf ? (o.threads ?? availableParallelism()) : 1);
  const threads = pool.size;
  const post = new PQueue({ concurrency: threads });
  let failure: unknown = null;
  const bar = progress('predict', todo.length);
  let batches = 0;
  let written = 0;
  /** CRF (on the pool), tags, resize + argmax, PNG and overlay of one image's probabilities. */
  const finish = async (x: Item, p: Float32Array): Promise<void> => {
    const { height: H, width: W, origHeight, origWidth } = x.image;
    let q = crf ? await pool.run({ probs: p, rgb: x.image.rgb, H, W, K, crf }) : p;
    if (crf && x.allowed) q = restrictProbs(q, x.allowed);
    const [labels] = await labelsOf(q, 1, H, W, K, [origHeight, origWidth]);
    await writeFileAtomic(path.join(o.out, `${x.id}.png`), encodeIndexedPng(labels, origWidth, origHeight, palette));
    if (o.overlay !== undefined && x.original) {
      await writeFileAtomic(path.join(o.overlay, `${x.id}.png`), await overlayWithLegend(x.original.rgb, labels, origHeight, origWidth, net.config.classes, net.config.background));
    }
    written++;
    bar.tick(1);
  };
  try {
    let next: Promise<Item[]> | null = decodeChunk(0);
    for (let start = 0; next && failure === null; start += chunk) {
      const items: Item[] = await next;
      next = start + chunk < todo.length ? decodeChunk(start + chunk) : null;
      bar.tick(Math.min(chunk, todo.length - start) - items.length);
      for (const b of sizeBatches(items, o.batchSize)) {
        const { height: H, width: W } = b[0].image;
        const probs = await batchProbs(net, b.map((x) => x.image.rgb), H, W, { scales, flip });
        batches++;
        for (const [i, x] of b.entries()) {
          // A copy per image: a worker gets its own buffer, not the whole batch's.
          const p = probs.slice(i * H * W * K, (i + 1) * H * W * K);
          if (x.allowed) restrictProbs(p, x.allowed);
          await post.onSizeLessThan(threads);
          post.add(() => finish(x, p)).catch((err: unknown) => {
            failure ??= err;
          });
        }
      }
    }
    await post.onIdle();
    if (failure !== null) throw failure;
  } finally {
    post.clear();
    await pool.close();
    await post.onIdle();
    bar.stop();
    net.dispose();
  }
  const seconds = (performance.now() - t0) / 1000;
  return {
    images: written, out: o.out, scales, flip, crf: crf !== null, batches, threads, seconds, imagesPerSecond: written / seconds,
    skipped: skipped.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0)),
  };
}
