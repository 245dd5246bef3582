/**
 * `tagseg eval`: score a folder of predicted masks against a folder of ground-truth masks, both
 * `<id>.png` label PNGs (palette or 8-bit grey, pixel value = class index: data/palette.ts), with
 * the class list of a classes.json ({"classes": [...], "background": 0 | null, "void": 255}).
 *
 * Conventions of eval/metrics.ts: ground-truth pixels equal to the void index are not counted;
 * predicted void pixels (a pseudo-mask's "unsure") are left out of the matrix and reported as
 * `coverage` < 1; mIoU averages the classes present in ground truth or prediction.
 *
 * Which images: the ids given (`ids`), else every PNG of the prediction folder. Each must have a
 * ground-truth mask of the same size; anything else is an error naming the file, because a
 * silently skipped image changes the score.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { decodeIndexedPng } from '../data/palette.js';
import { readClassesFile } from '../data/manifest.js';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import { ConfusionMatrix, segmentationScores } from './metrics.js';

export interface FolderEvalOptions {
  pred: string;
  gt: string;
  /** classes.json path. */
  classes: string;
  /** Only these ids; default every `*.png` in `pred`. */
  ids?: string[];
}

export interface FolderEvalResult {
  images: number;
  classes: string[];
  void: number;
  miou: number | null;
  pixel_accuracy: number | null;
  mean_class_accuracy: number | null;
  /** Share of valid ground-truth pixels that the predictions label (not void). */
  coverage: number | null;
  iou: Record<string, number | null>;
  /** Rows = ground truth, columns = prediction, in class order. */
  confusion: number[][];
}

async function readPng(file: string, what: string): Promise<Uint8Array> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new TagsegError(missing ? `${what} not found` : `cannot read ${what}: ${messageOf(err)}`, { file, cause: err });
  }
}

/** Every `<id>.png` of a folder, sorted. */
async function pngIds(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (err) {
    throw new TagsegError(`cannot list the folder: ${messageOf(err)}`, { file: dir, cause: err });
  }
  return names.filter((n) => n.toLowerCase().endsWith('.png')).map((n) => n.slice(0, -4)).sort();
}

/** Ids of an ids file: one per line, first whitespace-separated token, blank lines and `#` comments skipped. */
export async function readIdsFile(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new TagsegError(`cannot read the ids file: ${messageOf(err)}`, { file });
  }
  const ids = text.split(/\r?\n/).map((l) => l.trim().split(/\s+/)[0] ?? '').filter((l) => l !== '' && !l.startsWith('#'));
  if (ids.length === 0) throw new TagsegError('the ids file lists no ids', { file });
  const seen = new Set<string>();
  for (const id of ids) {
    if (seen.has(id)) throw new TagsegError(`id '${id}' is listed twice`, { file });
    seen.add(id);
  }
  return ids;
}

export async function evaluateFolders(o: FolderEvalOptions): Promise<FolderEvalResult> {
  const info = await readClassesFile(o.classes);
  const k = info.classes.length;
  const ids = o.ids ?? (await pngIds(o.pred));
  if (ids.length === 0) throw new TagsegError('no predicted masks (*.png) to score', { file: o.pred });
  const cm = new ConfusionMatrix(k, { ignoreIndex: info.void });
  for (const id of ids) {
    const pf = path.join(o.pred, `${id}.png`);
    const gf = path.join(o.gt, `${id}.png`);
    const pred = decodeIndexedPng(await readPng(pf, 'predicted mask'), pf);
    const gt = decodeIndexedPng(await readPng(gf, 'ground-truth mask'), gf);
    if (pred.width !== gt.width || pred.height !== gt.height) {
      throw new TagsegError(`prediction is ${pred.width}x${pred.height}, its ground truth ${gt.width}x${gt.height}`, {
        file: pf, hint: 'predict at the original image size (tagseg predict does)',
      });
    }
    try {
      cm.add(pred.data, gt.data);
    } catch (err) {
      // Name the file: the matrix only knows the pixel.
      const which = messageOf(err).startsWith('ground-truth') ? gf : pf;
      throw new TagsegError(`${messageOf(err)} (${k} classes in ${path.basename(o.classes)})`, { file: which, cause: err });
    }
  }
  const s = segmentationScores(cm);
  const round = (v: number | null) => (v === null ? null : Math.round(v * 1e6) / 1e6);
  return {
    images: ids.length,
    classes: info.classes,
    void: info.void,
    miou: round(s.miou),
    pixel_accuracy: round(s.pixelAccuracy),
    mean_class_accuracy: round(s.meanClassAccuracy),
    coverage: round(s.coverage),
    iou: Object.fromEntries(info.classes.map((c, i) => [c, round(s.iou[i])])),
    confusion: Array.from({ length: k }, (_, g) => Array.from({ length: k }, (_, p) => cm.get(g, p))),
  };
}

/** The human table: per-class IoU and pixel counts, then the summary lines. */
export function formatFolderEval(r: FolderEvalResult): string {
  const pct = (v: number | null) => (v === null ? '    -' : (100 * v).toFixed(1).padStart(5));
  const w = Math.max(5, ...r.classes.map((c) => c.length));
  const lines = [`${'class'.padEnd(w)}   IoU  scored gt px`];
  r.classes.forEach((c, i) => {
    const gtPixels = r.confusion[i].reduce((a, b) => a + b, 0);
    lines.push(`${c.padEnd(w)} ${pct(r.iou[c])}  ${String(gtPixels).padStart(10)}`);
  });
  lines.push(
    `mIoU ${pct(r.miou).trim()}  pixel accuracy ${pct(r.pixel_accuracy).trim()}  mean class accuracy ${pct(r.mean_class_accuracy).trim()}` +
      `  coverage ${pct(r.coverage).trim()}  (${r.images} images)`,
  );
  return lines.join('\n');
}
