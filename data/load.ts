import { orderedMap } from '../pipeline/concurrency.js';
import { TagsegError } from '../pipeline/errors.js';
import { log } from '../pipeline/log.js';
import { decodeImage, readMask, resizeNearest, workingSize, type DecodedImage } from './decode.js';
import type { ItemSpec, Manifest, SkippedItem } from './manifest.js';

/**
 * Streaming loader: decodes a manifest's images (and masks) with bounded concurrency and yields
 * them in manifest order (orderedMap, pipeline/concurrency.ts). Order matters because later
 * stages write rows in a stable order (DVC assumes deterministic outputs) and p-queue completes
 * tasks out of order; the bound matters because a dataset never has to fit in memory: at most
 * `concurrency * 2` items are decoded ahead of the consumer.
 */

export type LoadedItem = ItemSpec & {
  image: DecodedImage;
  /** `[image.height, image.width]` uint8 class indices at working size (NEAREST), or null. */
  mask: Uint8Array | null;
  /** Sorted unique class indices, never background or void, never empty. */
  tags: number[];
};

/** A skipped item (with `onError: 'skip'`): the file at fault (image, mask) and the reason. */
export type LoadError = SkippedItem;

export interface LoadOptions {
  /** Working size: long side in pixels (0 = original size). */
  size: number;
  /** Decodes running at once (sharp itself is further bounded by UV_THREADPOOL_SIZE). */
  concurrency: number;
  /**
   * `fail`: the first bad item's TagsegError ends the iteration (thrown from `next()`).
   * `skip`: bad items (any TagsegError) are left out, logged as warnings, and appended to
   * `errors` in manifest order. Errors that are not TagsegErrors (bugs) always propagate.
   */
  onError: 'fail' | 'skip';
  /** Caller-owned array that collects skipped items; read it after the loop ends. */
  errors?: LoadError[];
}

/**
 * Yield every item of `manifest` decoded at working size, in manifest order.
 *
 *   const errors: LoadError[] = [];
 *   for await (const item of loadItems(m, { size: 256, concurrency: 4, onError: 'skip', errors })) ...
 *   if (errors.length) ...
 *
 * Tags: the item's own, or (when null) the classes present in the full-resolution mask minus
 * background and void (derived before resizing, so small objects are not lost). Mask values
 * outside the class list (other than void) are an error naming the mask.
 */
export async function* loadItems(manifest: Manifest, opts: LoadOptions): AsyncGenerator<LoadedItem> {
  if (!Number.isInteger(opts.concurrency) || opts.concurrency < 1) {
    throw new RangeError(`loadItems: concurrency must be an integer >= 1, got ${opts.concurrency}`);
  }
  workingSize(1, 1, opts.size); // validates size
  type Outcome = { item: LoadedItem } | { skipped: LoadError };
  const task = async (spec: ItemSpec): Promise<Outcome> => {
    try {
      return { item: await loadOne(manifest, spec, opts.size) };
    } catch (err) {
      if (opts.onError === 'skip' && err instanceof TagsegError) {
        return { skipped: { id: spec.id, file: err.file ?? spec.imagePath, reason: err.reason } };
      }
      throw err;
    }
  };
  for await (const out of orderedMap(manifest.items, task, { concurrency: opts.concurrency })) {
    if ('item' in out) {
      yield out.item;
    } else {
      log.warn(`skipped ${out.skipped.id}: ${out.skipped.file}: ${out.skipped.reason}`);
      opts.errors?.push(out.skipped);
    }
  }
}

async function loadOne(manifest: Manifest, spec: ItemSpec, size: number): Promise<LoadedItem> {
  const image = await decodeImage(spec.imagePath, size);
  let mask: Uint8Array | null = null;
  let present: number[] | null = null;
  if (spec.maskPath !== null) {
    const full = await readMask(spec.maskPath, image.origWidth, image.origHeight);
    present = classesPresent(full.data, manifest, spec.maskPath);
    mask = resizeNearest(full.data, full.width, full.height, image.width, image.height);
  }
  let tags: number[];
  if (spec.tags !== null) {
    tags = spec.tags;
    checkTags(tags, manifest, spec.imagePath);
  } else if (present !== null) {
    tags = present.filter((c) => c !== manifest.background);
    if (tags.length === 0) {
      throw new TagsegError(`empty tag list for image ${spec.id}: its mask holds only background/void`, {
        file: spec.maskPath ?? spec.imagePath,
        hint: 'remove the image or give it tags',
      });
    }
  } else {
    throw new TagsegError(`image ${spec.id} has no tags and no mask to derive them from`, { file: spec.imagePath });
  }
  return { ...spec, image, mask, tags };
}

/** Sorted class indices present in `data` (void excluded); values beyond the class list are an error. */
function classesPresent(data: Uint8Array, manifest: Manifest, file: string): number[] {
  const seen = new Uint8Array(256);
  for (let i = 0; i < data.length; i++) seen[data[i]] = 1;
  const out: number[] = [];
  for (let v = 0; v < 256; v++) {
    if (!seen[v] || v === manifest.void) continue;
    if (v >= manifest.classes.length) {
      throw new TagsegError(`mask has value ${v} but the dataset has ${manifest.classes.length} classes (void = ${manifest.void})`, {
        file,
        hint: 'mask pixel values must be class indices or the void index',
      });
    }
    out.push(v);
  }
  return out;
}

function checkTags(tags: number[], manifest: Manifest, file: string): void {
  if (tags.length === 0) throw new TagsegError('empty tag list', { file });
  for (const t of tags) {
    if (!Number.isInteger(t) || t < 0 || t >= manifest.classes.length || t === manifest.void) {
      throw new TagsegError(`tag ${t} is not a class index (0..${manifest.classes.length - 1})`, { file });
    }
    if (t === manifest.background) {
      throw new TagsegError(`tag ${t} is the background class, which is never a tag`, { file });
    }
  }
}
