/**
 * Validation of the segment stage, streamed batch by batch: consecutive validation images of one
 * working and original size go through the network together (`valGroups`); each group's pixels,
 * pseudo-masks and ground truth are read by position when its turn nears (orderedMap keeps two
 * groups going: one's CRFs run on a pool of every core while the next is read and goes through the
 * network), so memory does not grow with the validation carve. Predictions at the working size with `segment.scales` x flip and the dense CRF
 * of `segment.crf` (infer.ts), upsampled to the original size, scored against the ground truth at
 * mask_path -> mIoU, pixel accuracy, per-class IoU; in pseudo mode the pseudo-masks of the same
 * images are scored too.
 */
import { readMask } from '../../data/decode.js';
import { orderedMap } from '../../pipeline/concurrency.js';
import { ConfusionMatrix, segmentationScores } from '../../eval/metrics.js';
import { type DenseCrfOptions, crfFromKeys } from '../../ops/crf.js';
import { artifact } from '../../pipeline/artifacts.js';
import { TagsegError } from '../../pipeline/errors.js';
import { log, progress } from '../../pipeline/log.js';
import type { Params } from '../params.js';
import type { ImageRef, StreamReaders } from './data.js';
import { segmentBatch } from './infer.js';
import { availableParallelism } from 'node:os';
import { crfPool } from '../../ops/crf_pool.js';
import type { SegNet } from './net.js';

/** Images per inference batch during validation (same-size images only). */
const VAL_BATCH = 4;

export interface SegScores {
  /** Full coverage: a pseudo-mask's ignore pixels count as wrong (eval/metrics.ts). */
  miou: number | null;
  /** Over the labelled pixels only. */
  miou_labelled: number | null;
  pixel_accuracy: number | null;
  /** Labelled fraction of the valid pixels (1 for a network; < 1 for pseudo-masks with 255). */
  coverage: number | null;
  images: number;
  iou: Record<string, number | null>;
}

/** What validation needs of dataset.arrow for one image. */
export interface ValInfo {
  maskPath: string | null;
  origWidth: number;
  origHeight: number;
}

interface ValBatch {
  refs: ImageRef[];
  pixels: Uint8Array[];
  gt: Uint8Array[];
  pseudo: ({ mask: Uint8Array; height: number; width: number } | null)[];
  gtSize: { width: number; height: number };
}

/** segment.crf as inference options: null when its iterations are 0. */
export function inferCrf(s: Params['segment']): DenseCrfOptions | null {
  return s.crf.iterations > 0 ? crfFromKeys(s.crf) : null;
}

/** `items` in order, in runs of at most `n` consecutive items that are `same` as their run's first (batches of one size). */
export function consecutiveRuns<T>(items: readonly T[], n: number, same: (first: T, item: T) => boolean): T[][] {
  const runs: T[][] = [];
  for (const t of items) {
    const last = runs.at(-1);
    if (last && last.length < n && same(last[0], t)) last.push(t);
    else runs.push([t]);
  }
  return runs;
}

/** Two images of one working size. */
export const sameWorkingSize = (a: { height: number; width: number }, b: { height: number; width: number }): boolean => a.height === b.height && a.width === b.width;

/** The scored images (those with a mask) in runs of at most VAL_BATCH of one working and original size. */
export function valGroups(val: readonly ImageRef[], info: (id: string) => ValInfo): ImageRef[][] {
  const scored = val.filter((v) => info(v.id).maskPath);
  if (scored.length < val.length) log.warn(`segment: ${val.length - scored.length} validation images have no ground-truth mask and are not scored`);
  return consecutiveRuns(scored, VAL_BATCH, (a, v) => {
    const [d0, d] = [info(a.id), info(v.id)];
    return sameWorkingSize(a, v) && d.origHeight === d0.origHeight && d.origWidth === d0.origWidth;
  });
}

/** One group's rows and ground truth, read by position. */
async function loadBatch(refs: ImageRef[], r: StreamReaders, info: (id: string) => ValInfo): Promise<ValBatch> {
  const images = await r.images.rows(refs.map((v) => v.position));
  const withPseudo = r.pseudo ? refs.flatMap((v, k) => (v.pseudo === null ? [] : [k])) : [];
  const pseudoRows = r.pseudo ? await r.pseudo.rows(withPseudo.map((k) => refs[k].pseudo!)) : [];
  const pseudo = refs.map(() => null as ValBatch['pseudo'][number]);
  withPseudo.forEach((k, j) => {
    const m = { mask: pseudoRows[j].mask as Uint8Array, height: pseudoRows[j].height as number, width: pseudoRows[j].width as number };
    if (m.mask.length !== m.height * m.width) throw new TagsegError(`row '${refs[k].id}': mask has ${m.mask.length} values, expected ${m.height} x ${m.width}`, { file: r.pseudo!.file });
    pseudo[k] = m;
  });
  const d0 = info(refs[0].id);
  const gt = await Promise.all(refs.map(async (v) => {
    const d = info(v.id);
    return (await readMask(d.maskPath!, d.origWidth, d.origHeight)).data;
  }));
  return { refs, pixels: images.map((row) => row.pixels as Uint8Array), gt, pseudo, gtSize: { width: d0.origWidth, height: d0.origHeight } };
}

/** The network's (and in pseudo mode the pseudo-masks') scores on the validation images. */
export async function validate(
  net: SegNet, val: readonly ImageRef[], r: StreamReaders, info: (id: string) => ValInfo, classes: string[], s: Params['segment'],
): Promise<{ scores: SegScores; pseudoScores: SegScores | null }> {
  const cm = new ConfusionMatrix(classes.length);
  const pcm = r.pseudo ? new ConfusionMatrix(classes.length) : null;
  const groups = valGroups(val, info);
  const images = groups.reduce((n, g) => n + g.length, 0);
  const bar = progress('segment validation', images);
  const o = { scales: s.scales, flip: s.flip, crf: inferCrf(s) };
  // CRFs on every core; while a group's CRFs run, the next group goes through the network
  const pool = crfPool(o.crf ? availableParallelism() : 1);
  const predict = async (g: ImageRef[]) => {
    const b = await loadBatch(g, r, info);
    const first = b.refs[0];
    return { b, preds: await segmentBatch(net, b.pixels, first.height, first.width, [b.gtSize.height, b.gtSize.width], o, (q) => pool.run(q)) };
  };
  let pseudoImages = 0;
  const score = (b: ValBatch, preds: Uint8Array[]) => b.refs.forEach((v, k) => {
    cm.add(preds[k], b.gt[k]);
    const pm = b.pseudo[k];
    if (pcm && pm) {
      if (pm.height !== b.gtSize.height || pm.width !== b.gtSize.width) {
        throw new TagsegError(`pseudo-mask of '${v.id}' is ${pm.width}x${pm.height}, its mask ${b.gtSize.width}x${b.gtSize.height}`, { file: artifact('pseudoMasks') });
      }
      pcm.add(pm.mask, b.gt[k]);
      pseudoImages++;
    }
    bar.tick();
  });
  try {
    for await (const { b, preds } of orderedMap(groups, predict, { concurrency: 2, window: 3 })) score(b, preds);
  } finally {
    await pool.close();
  }
  bar.stop();
  return { scores: scoresOf(cm, classes, images), pseudoScores: pcm ? scoresOf(pcm, classes, pseudoImages) : null };
}

function scoresOf(cm: ConfusionMatrix, classes: readonly string[], images: number): SegScores {
  const r = segmentationScores(cm);
  const round = (v: number | null) => (v === null ? null : Math.round(v * 1e4) / 1e4);
  return {
    miou: round(r.fullMiou), miou_labelled: round(r.miou), pixel_accuracy: round(r.fullPixelAccuracy), coverage: round(r.coverage), images,
    iou: Object.fromEntries(classes.map((c, i) => [c, round(r.fullIou[i])])),
  };
}
