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
 * Streaming: images are decoded in chunks (`batchSize` x 4) while the previous chunk runs through
 * the network, so memory is flat in the number of images; inside a chunk, images of the same
 * working and original size form batches of up to `batchSize` (photo collections have a few
 * sizes). Output files are written atomically; the order of the work is the order of the ids.
 *
 * Inputs (predict_files.ts): every raster format sharp reads, top level of the folder only;
 * subfolders and other entries are listed in `skipped` with the reason. A missing, ambiguous or
 * undecodable image stops the run with a TagsegError naming it, or with `onError: 'skip'` is
 * listed in `skipped` too.
 */
import * as path from 'node:path';
import { type DecodedImage, decodeImage } from '../../data/decode.js';
import { isDirectory } from '../../data/manifest.js';
import { classPalette, encodeIndexedPng } from '../../data/palette.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError, messageOf } from '../../pipeline/errors.js';
import { ensureDir, writeFileAtomic } from '../../pipeline/fsutil.js';
import { progress } from '../../pipeline/log.js';
import { crfFromKeys } from '../../ops/crf.js';
import { defaultParams } from '../../pipeline/params.js';
import { type InferOptions, batchProbs, crfMarginals, labelsOf } from './infer.js';
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

/**
 * Labels at the original size of a batch of same-size items: the network's probabilities,
 * restricted to each image's tags if it has some, the CRF (its marginals restricted again), then
 * the resize and argmax.
 */
async function segmentItems(net: SegNet, b: Item[], o: InferOptions): Promise<Uint8Array[]> {
  const { height: H, width: W, origHeight, origWidth } = b[0].image;
  const K = net.config.classes.length;
  const N = H * W * K;
  const probs = await batchProbs(net, b.map((x) => x.image.rgb), H, W, o);
  b.forEach((x, i) => {
    const p = probs.subarray(i * N, (i + 1) * N);
    if (x.allowed) restrictProbs(p, x.allowed);
    if (!o.crf) return;
    const q = crfMarginals(p, x.image.rgb, H, W, K, o.crf);
    probs.set(x.allowed ? restrictProbs(q, x.allowed) : q, i * N);
  });
  return labelsOf(probs, b.length, H, W, K, [origHeight, origWidth]);
}

export async function predictFolder(o: PredictOptions): Promise<PredictResult> {
  const t0 = performance.now();
  if (!(Number.isInteger(o.batchSize) && o.batchSize >= 1)) throw new TagsegError(`--batch-size must be a positive integer, got ${o.batchSize}`);
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
  const scales = o.scales ?? net.config.scales;
  const flip = o.flip ?? net.config.flip;
  const modelCrf = net.config.crf ?? null;
  const crf = o.crf === undefined ? modelCrf : o.crf ? (modelCrf ?? crfFromKeys(defaultParams().segment.crf)) : null;
  const size = net.config.workingSize;
  const palette = classPalette(net.config.background);
  await ensureDir(o.out);
  if (o.overlay !== undefined) await ensureDir(o.overlay);
  const chunk = o.batchSize * 4;
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
  const decodeChunk = (start: number): Promise<Item[]> => {
    const p = Promise.all(todo.slice(start, start + chunk).map(decodeOne)).then((xs) => xs.filter((x): x is Item => x !== null));
    // Decoded ahead: the error (a corrupt image, named) surfaces when the chunk is awaited, not as
    // an unhandled rejection while the previous chunk is still being segmented.
    p.catch(() => undefined);
    return p;
  };
  const bar = progress('predict', todo.length);
  let batches = 0;
  let written = 0;
  try {
    let next: Promise<Item[]> | null = decodeChunk(0);
    for (let start = 0; next; start += chunk) {
      const items: Item[] = await next;
      next = start + chunk < todo.length ? decodeChunk(start + chunk) : null;
      bar.tick(Math.min(chunk, todo.length - start) - items.length);
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
          const labels = await segmentItems(net, b, { scales, flip, crf });
          batches++;
          await Promise.all(b.map(async (x, k) => {
            await writeFileAtomic(path.join(o.out, `${x.id}.png`), encodeIndexedPng(labels[k], im0.origWidth, im0.origHeight, palette));
            if (o.overlay !== undefined && x.original) {
              const png = await overlayWithLegend(x.original.rgb, labels[k], im0.origHeight, im0.origWidth, net.config.classes, net.config.background);
              await writeFileAtomic(path.join(o.overlay, `${x.id}.png`), png);
            }
          }));
          written += b.length;
          bar.tick(b.length);
        }
      }
    }
  } finally {
    bar.stop();
    net.dispose();
  }
  const seconds = (performance.now() - t0) / 1000;
  return { images: written, out: o.out, scales, flip, crf: crf !== null, batches, seconds, imagesPerSecond: written / seconds, skipped: skipped.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0)) };
}
