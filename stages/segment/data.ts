/**
 * The segment stage's images and labels, streamed (issue 26: flat memory). Two sequential passes
 * keep a few numbers per image, never pixels or masks:
 * - `indexImages`: the train and validation images' row positions in images.arrow (its order is
 *   the training order), working sizes and tags;
 * - `pseudoPositions`: each image's row position in cache/pseudo_masks.arrow, joined by id, so a
 *   folder of parts (pipeline/shard.ts) in any row order gives the same items as one file.
 * Training (`trainDataset`) and the labelled-fraction pass (`meanLabelledFraction`) then read the
 * rows of a step by position (nn/dataset.ts) and build each image's labels on the fly by the rules
 * of labels.ts: a corrected mask (review), else its pseudo-mask, or (`gt`) images.arrow's mask.
 */
import { readMask } from '../../data/decode.js';
import { type Dataset, type JoinSource, type RowReader, joinDataset } from '../../nn/dataset.js';
import { type Row, TableReader, decodeRow } from '../../pipeline/arrow.js';
import { TagsegError } from '../../pipeline/errors.js';
import { labelledFraction, labelsAtWorkingSize } from './labels.js';
import { ignoreClassPixels } from './review.js';
import type { SegTrainImage } from './train.js';

/** An image of the train split by its row in images.arrow (working size). */
export interface ImageRef {
  id: string;
  position: number;
  height: number;
  width: number;
  tags: number[];
  /** Its row in pseudo_masks.arrow (pseudoPositions); null: none, or not read (gt mode, a corrected image). */
  pseudo: number | null;
}

/** A training image: its ref plus what the review changes (review.ts). */
export interface TrainRef extends ImageRef {
  /** The corrected mask file replacing its pseudo-mask. */
  correction: string | null;
  /** Classes whose pixels are set to ignore. */
  ignore: readonly number[];
}

/** What building one image's labels needs besides its rows. */
export interface LabelContext {
  labels: 'pseudo' | 'gt';
  numClasses: number;
  imagesFile: string;
  pseudoFile: string;
  /** Original size of an image (dataset.arrow), for corrected masks. */
  origSize(id: string): { width: number; height: number };
}

export interface StreamReaders {
  images: RowReader;
  /** null in gt mode (pseudo_masks.arrow is not opened). */
  pseudo: RowReader | null;
}

/**
 * Each row of a table in TableReader.rows() order (the positions RowReader counts) with only
 * `columns`, read cell by cell (TableReader.readRows): the index passes read no pixels or masks,
 * whose 16 MiB batch bodies would otherwise raise the peak RSS with the number of batches read.
 * Whole bodies stay the fallback where a batch cannot be read that way.
 */
async function* scan(reader: TableReader, columns: readonly string[]): AsyncGenerator<Row> {
  const specs = reader.info.columns.filter((c) => columns.includes(c.name));
  const counts = await reader.batchRowCounts();
  for (const [i, n] of counts.entries()) {
    const direct = await reader.readRows(i, Array.from({ length: n }, (_, r) => r), columns);
    if (direct) {
      yield* direct;
      continue;
    }
    const batch = await reader.recordBatch(i);
    for (let r = 0; r < batch.numRows; r++) yield decodeRow(specs, batch, r);
  }
}

/** One pass over images.arrow: the rows of `train` and `val` ids, in table order. */
export async function indexImages(file: string, train: ReadonlySet<string>, val: ReadonlySet<string>): Promise<{ train: ImageRef[]; val: ImageRef[] }> {
  const out = { train: [] as ImageRef[], val: [] as ImageRef[] };
  const reader = await TableReader.open(file, { stage: 'ingest' });
  let position = 0;
  try {
    for await (const row of scan(reader, ['id', 'height', 'width', 'tags'])) {
      const at = position++;
      const id = row.id as string;
      const target = train.has(id) ? out.train : val.has(id) ? out.val : null;
      target?.push({ id, position: at, height: row.height as number, width: row.width as number, tags: row.tags as number[], pseudo: null });
    }
  } finally {
    await reader.close();
  }
  return out;
}

/**
 * One pass over pseudo_masks.arrow's ids (a file or a folder of parts): the row position of each
 * id in `ids`, counted as RowReader does; its class list checked. The masks are checked where they
 * are read: every training mask before the first epoch (meanLabelledFraction), validation ones in validate.ts.
 */
export async function pseudoPositions(file: string, classes: readonly string[], ids: ReadonlySet<string>): Promise<Map<string, number>> {
  const reader = await TableReader.open(file, { stage: 'refine' });
  const out = new Map<string, number>();
  let position = 0;
  try {
    if (JSON.stringify(reader.info.meta.classes) !== JSON.stringify(classes)) {
      throw new TagsegError('pseudo_masks.arrow has another class list than images.arrow', { file, hint: 'rerun the pipeline from ingest' });
    }
    for await (const row of scan(reader, ['id'])) {
      const at = position++;
      if (ids.has(row.id as string)) out.set(row.id as string, at);
    }
  } finally {
    await reader.close();
  }
  return out;
}

/** Sets each training ref's pseudo-mask row; a training image without one (and no correction) is an error. */
export function joinPseudo(train: TrainRef[], val: ImageRef[], positions: ReadonlyMap<string, number>, file: string): void {
  for (const t of train) {
    if (t.correction) continue; // its pseudo-mask is never read
    t.pseudo = positions.get(t.id) ?? null;
    if (t.pseudo === null) throw new TagsegError(`image '${t.id}' of the train split has no pseudo-mask`, { file, hint: 'rerun `tagseg run refine`' });
  }
  for (const v of val) v.pseudo = positions.get(v.id) ?? null;
}

/** An image's training labels at the working size, from the rows read for it (labels.ts rules). */
export async function trainLabels(ref: TrainRef, rows: { image: Row | null; pseudo: Row | null }, c: LabelContext): Promise<Uint8Array> {
  const { id, height: H, width: W } = ref;
  if (c.labels === 'gt') {
    const mask = rows.image?.mask;
    if (!mask) throw new TagsegError(`image '${id}' of the train split has no ground-truth mask; segment.labels: gt needs one for every training image`, { file: c.imagesFile, hint: 'use segment.labels: pseudo' });
    return labelsAtWorkingSize(mask as Uint8Array, H, W, H, W, c.numClasses, { file: c.imagesFile, id });
  }
  let labels: Uint8Array;
  if (ref.correction) {
    const o = c.origSize(id);
    const m = await readMask(ref.correction, o.width, o.height);
    labels = labelsAtWorkingSize(m.data, m.height, m.width, H, W, c.numClasses, { file: ref.correction, id });
  } else {
    const p = rows.pseudo!;
    labels = labelsAtWorkingSize(p.mask as Uint8Array, p.height as number, p.width as number, H, W, c.numClasses, { file: c.pseudoFile, id });
  }
  return ignoreClassPixels(labels, ref.ignore);
}

/** Which rows an item reads: images.arrow (pixels; the mask in gt mode) and its pseudo-mask. */
function sources(refs: readonly TrainRef[], r: StreamReaders, c: LabelContext, pixels: boolean): JoinSource[] {
  const image: JoinSource = { reader: r.images, positions: refs.map((t) => (pixels || c.labels === 'gt' ? t.position : null)) };
  return r.pseudo ? [image, { reader: r.pseudo, positions: refs.map((t) => t.pseudo) }] : [image];
}

/** The training images, streamed: pixels and labels read and built per step. */
export function trainDataset(refs: readonly TrainRef[], r: StreamReaders, c: LabelContext): Dataset<SegTrainImage> {
  return joinDataset(sources(refs, r, c, true), async ([image, pseudo = null], i) => {
    const t = refs[i];
    const labels = await trainLabels(t, { image, pseudo }, c);
    return { id: t.id, pixels: image!.pixels as Uint8Array, height: t.height, width: t.width, labels, tags: t.tags };
  });
}

/**
 * Mean labelled fraction of the training labels (metrics), built as training builds them, summed
 * in training order; also checks every label map before the first epoch. Reads no pixels in pseudo mode.
 */
export async function meanLabelledFraction(refs: readonly TrainRef[], r: StreamReaders, c: LabelContext, chunk = 64): Promise<number> {
  const ds = joinDataset(sources(refs, r, c, false), async ([image, pseudo = null], i) => labelledFraction(await trainLabels(refs[i], { image, pseudo }, c)));
  let sum = 0;
  for (let i = 0; i < refs.length; i += chunk) {
    const idx = Array.from({ length: Math.min(chunk, refs.length - i) }, (_, k) => i + k);
    for (const f of await ds.get(idx)) sum += f;
  }
  return refs.length ? sum / refs.length : 0;
}
