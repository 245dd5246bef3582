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
 * A bounded pipeline, so memory is flat in the number of images (pipeline/concurrency.ts orderedMap, the
 * project's one concurrency helper, at both levels): images go in chunks of `batchSize` x 4,
 * each decoded a few at a time and run through the network in batches of one working and original
 * size (photo collections have a few sizes), one chunk at a time; each image's CRF then runs on a
 * worker thread (ops/crf_pool.ts, every core by default), its resize + argmax and PNG after it.
 * At most a chunk and a CRF per thread of images are in flight beyond the last one written, so the
 * next chunk is decoded and run through the network while the pool works on this one. Every step
 * is deterministic and per image, and the batches depend only on the chunks, so the masks are the
 * same bytes whatever the thread count.
 * Output files are written atomically.
 *
 * Inputs (predict_files.ts): every raster format sharp reads, top level of the folder only;
 * subfolders and other entries are listed in `skipped` with the reason. A missing, ambiguous or
 * undecodable image stops the run with a TagsegError naming it, or with `onError: 'skip'` is
 * listed in `skipped` too.
 */
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { type DecodedImage, decodeImage } from '../../data/decode.js';
import { orderedMap } from '../../pipeline/concurrency.js';
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
import { batchProbs, labelsOf, restrictedCrf } from './infer.js';
import { type SegNet, loadSegModel } from './net.js';
import { type SkippedFile, imageOf, listImages } from './predict_files.js';
import { overlayWithLegend } from './predict_overlay.js';
import { type TagMasks, readTagsFile } from './predict_tags.js';

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

interface Todo { id: string; file: string; allowed?: Uint8Array }
interface Item extends Todo { image: DecodedImage; original?: DecodedImage }
interface Netted extends Item { probs: Float32Array }

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

type CrfPool = ReturnType<typeof crfPool>;

/** Images decoded at once (sharp runs on libuv's threads, so a few overlap the rest of the work). */
const DECODE_CONCURRENCY = 4;

/**
 * netted(i): image todo[i] decoded at the working size (and the original size for overlays) with
 * its network probabilities, or null when it was undecodable and onError is 'skip' (listed in
 * `skipped`); otherwise its decoding error. Images go through in chunks of `chunk`: a chunk is
 * decoded and run (in sizeBatches, one chunk at a time, in chunk order) when its first image is
 * asked for, and dropped once every image of it was handed out, so only the chunks in flight are
 * held. Each image gets its own copy of its probabilities: a CRF worker gets its buffer, not the batch's.
 */
function nettedImages(todo: Todo[], chunk: number, size: number, o: PredictOptions, skipped: SkippedFile[], net: SegNet, view: { scales: number[]; flip: boolean }) {
  const decodeOne = async (t: Todo): Promise<Item | null> => {
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
  const K = net.config.classes.length;
  let netTurn: Promise<unknown> = Promise.resolve();
  const stats = { batches: 0 };
  /** Chunk k's images (null: skipped), by position in the chunk. */
  const netChunk = async (k: number): Promise<(Netted | null)[]> => {
    const decoded: (Item | null)[] = [];
    for await (const x of orderedMap(todo.slice(k * chunk, (k + 1) * chunk), decodeOne, { concurrency: DECODE_CONCURRENCY })) decoded.push(x);
    const turn = netTurn.then(async () => {
      const out: (Netted | null)[] = decoded.map(() => null);
      const at = new Map(decoded.map((x, j) => [x, j]));
      for (const b of sizeBatches(decoded.filter((x): x is Item => x !== null), o.batchSize)) {
        const { height: H, width: W } = b[0].image;
        const probs = await batchProbs(net, b.map((x) => x.image.rgb), H, W, view);
        stats.batches++;
        for (const [i, x] of b.entries()) out[at.get(x)!] = { ...x, probs: probs.slice(i * H * W * K, (i + 1) * H * W * K) };
      }
      return out;
    });
    netTurn = turn.catch(() => undefined);
    return turn;
  };
  const chunks = new Map<number, { images: Promise<(Netted | null)[]>; left: number }>();
  const netted = async (i: number): Promise<Netted | null> => {
    const k = Math.floor(i / chunk);
    let c = chunks.get(k);
    if (!c) {
      c = { images: netChunk(k), left: Math.min(chunk, todo.length - k * chunk) };
      chunks.set(k, c);
    }
    if (--c.left === 0) chunks.delete(k);
    const images = await c.images;
    const x = images[i - k * chunk];
    images[i - k * chunk] = null;
    return x;
  };
  return { netted, stats };
}

/** The option checks that need no file: a bad flag stops the run before the folder is read. */
function checkOptions(o: PredictOptions): void {
  if (!(Number.isInteger(o.batchSize) && o.batchSize >= 1)) throw new TagsegError(`--batch-size must be a positive integer, got ${o.batchSize}`);
  if (o.threads !== undefined && !(Number.isInteger(o.threads) && o.threads >= 1)) throw new TagsegError(`--threads must be a positive integer, got ${o.threads}`);
  if (o.overlay !== undefined && path.resolve(o.overlay) === path.resolve(o.out)) {
    throw new TagsegError('--overlay must be another folder than --out (tagseg eval reads every PNG of --out as a mask)', { file: o.overlay });
  }
}

/** The images this run segments: with their tags (`--tags`), then this shard's; the net is freed on a tags error. */
async function runTodo(o: PredictOptions, inputs: { todo: Todo[]; skipped: SkippedFile[] }, net: SegNet): Promise<Todo[]> {
  let todo: Todo[] = inputs.todo;
  try {
    if (o.tags !== undefined) todo = withTags(todo, await readTagsFile(o.tags, { ...net.config, void: 255 }), o.tags, o.onError, inputs.skipped);
  } catch (err) {
    net.dispose();
    throw err;
  }
  // After the checks of the whole run, so every shard reports the same errors and skipped entries.
  if (o.shard) todo = todo.filter((t) => shardOf(t.id, o.shard!.n) === o.shard!.k);
  return todo;
}

/** finish(x): CRF (on the pool), tags, resize + argmax, PNG and overlay of one image's probabilities. */
function maskWriter(o: PredictOptions, net: SegNet, pool: CrfPool, crf: DenseCrfOptions | null) {
  const K = net.config.classes.length;
  const palette = classPalette(net.config.background);
  const counts = { written: 0 };
  const finish = async (x: Netted): Promise<void> => {
    const { height: H, width: W, origHeight, origWidth } = x.image;
    const q = await restrictedCrf(x.probs, { allowed: x.allowed ?? null, rgb: x.image.rgb, H, W, K, crf }, (r) => pool.run(r));
    const [labels] = await labelsOf(q, 1, H, W, K, [origHeight, origWidth]);
    await writeFileAtomic(path.join(o.out, `${x.id}.png`), encodeIndexedPng(labels, origWidth, origHeight, palette));
    if (o.overlay !== undefined && x.original) {
      await writeFileAtomic(path.join(o.overlay, `${x.id}.png`), await overlayWithLegend(x.original.rgb, labels, origHeight, origWidth, net.config.classes, net.config.background));
    }
    counts.written++;
  };
  return { finish, counts };
}

/**
 * Every image of `todo` through netted + finish in a bounded pipeline: a chunk and a CRF per
 * thread ahead of the last image written, so the next chunk is decoded and run through the
 * network while the pool works on this one. Closes the pool, the bar and the net.
 */
async function runPipeline(
  todo: Todo[], netted: (i: number) => Promise<Netted | null>, finish: (x: Netted) => Promise<void>,
  pool: CrfPool, window: number, net: SegNet,
): Promise<void> {
  const bar = progress('predict', todo.length);
  let closing: Promise<void> | null = null;
  const one = async (_t: Todo, i: number): Promise<void> => {
    try {
      const x = await netted(i);
      if (x && !closing) await finish(x);
      bar.tick(1);
    } catch (err) {
      // The first failure stops the pool; the runs it cancels end quietly, so that error is the one thrown.
      if (closing) return;
      closing = pool.close();
      throw err;
    }
  };
  try {
    for await (const _ of orderedMap(todo, one, { concurrency: window, window }));
  } finally {
    await (closing ?? pool.close());
    bar.stop();
    net.dispose();
  }
}

export async function predictFolder(o: PredictOptions): Promise<PredictResult> {
  const t0 = performance.now();
  checkOptions(o);
  const inputs = await resolveInputs(o);
  const { skipped } = inputs;
  await initBackend();
  const net = await loadSegModel(o.model);
  const todo = await runTodo(o, inputs, net);
  const { scales, flip, crf } = inferSettings(net, o);
  await ensureDir(o.out);
  if (o.overlay !== undefined) await ensureDir(o.overlay);
  const chunk = o.batchSize * 4;
  const { netted, stats } = nettedImages(todo, chunk, net.config.workingSize, o, skipped, net, { scales, flip });
  const pool = crfPool(crf ? (o.threads ?? availableParallelism()) : 1);
  const threads = pool.size;
  const { finish, counts } = maskWriter(o, net, pool, crf);
  await runPipeline(todo, netted, finish, pool, chunk + threads, net);
  const written = counts.written;
  const seconds = (performance.now() - t0) / 1000;
  return {
    images: written, out: o.out, scales, flip, crf: crf !== null, batches: stats.batches, threads, seconds, imagesPerSecond: written / seconds,
    skipped: skipped.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0)),
  };
}
