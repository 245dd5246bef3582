import * as path from 'node:path';
import { expect } from 'vitest';
import { readMask } from '../../data/decode.js';
import { resolveDatasetPath } from '../../data/manifest.js';
import { ConfusionMatrix, segmentationScores } from '../../eval/metrics.js';
import { readAll, readInfo } from '../../pipeline/arrow.js';
import { loadParams } from '../../stages/params.js';

/**
 * A score from a metrics file (a fraction: mIoU, accuracy) is a finite number in [0, 1] and at least
 * `floor`, so a pipeline producing NaN or garbage fails. Printed, so CI logs keep the measured value.
 */
export function expectScore(label: string, value: unknown, floor: number): void {
  process.stdout.write(`score ${label}: ${String(value)} (floor ${floor})\n`);
  expect(typeof value === 'number' && Number.isFinite(value), `${label} must be a finite number, got ${String(value)}`).toBe(true);
  expect(value as number, label).toBeGreaterThanOrEqual(floor);
  expect(value as number, label).toBeLessThanOrEqual(1);
}

/** mIoU (eval/metrics.ts, the stages' scorer) of two predictions that know nothing of where things are. */
export interface TrivialBaseline {
  /** Every pixel the most frequent ground-truth class of the images (background, on the synthetic sets). */
  mostFrequent: number;
  /** Every pixel the image's first (lowest) foreground tag; the background class if it has none. */
  firstTag: number;
  /** The better of the two. */
  best: number;
  /** Images scored. */
  images: number;
}

/**
 * Trivial baselines of a workspace's images `ids` (every image with a mask when omitted), scored
 * against their ground-truth masks at the original size as the stages score them. A quality floor
 * that is not clearly above `best` lets a pipeline producing garbage pass.
 */
export async function trivialBaseline(root: string, ids?: readonly string[]): Promise<TrivialBaseline> {
  const params = await loadParams(path.join(root, 'params.yaml'));
  const datasetRoot = path.resolve(root, params.dataset.root);
  const info = await readInfo(path.join(root, 'cache/images.arrow'));
  const k = info.meta.classes.length;
  const bgRaw = info.meta.extra?.background;
  const background = typeof bgRaw === 'number' ? bgRaw : 0;
  const tags = new Map((await readAll(path.join(root, 'cache/images.arrow'))).map((r) => [r.id as string, r.tags as number[]]));
  const rows = (await readAll(path.join(root, 'cache/dataset.arrow'))).filter((r) => r.mask_path && (!ids || ids.includes(r.id as string)));
  if (ids) expect(rows.map((r) => r.id).sort(), 'every baseline id has a mask').toEqual([...ids].sort());
  const masks = await Promise.all(rows.map(async (r) => ({
    id: r.id as string,
    gt: (await readMask(resolveDatasetPath(datasetRoot, r.mask_path as string), r.orig_width as number, r.orig_height as number)).data,
  })));
  const freq = new Float64Array(k);
  for (const { gt } of masks) for (const g of gt) if (g < k) freq[g]++;
  const top = freq.indexOf(Math.max(...freq));
  const constant = new ConfusionMatrix(k);
  const first = new ConfusionMatrix(k);
  for (const { id, gt } of masks) {
    const fg = (tags.get(id) ?? []).filter((t) => t !== background);
    constant.add(new Uint8Array(gt.length).fill(top), gt);
    first.add(new Uint8Array(gt.length).fill(fg.length ? Math.min(...fg) : background), gt);
  }
  const mostFrequent = segmentationScores(constant).miou ?? 0;
  const firstTag = segmentationScores(first).miou ?? 0;
  return { mostFrequent, firstTag, best: Math.max(mostFrequent, firstTag), images: masks.length };
}

/**
 * The control on a quality floor: it is at least `margin` (a fraction, in mIoU) above the trivial
 * baseline of the same images, so a pipeline scoring what a constant prediction scores fails.
 */
export function expectFloorAboveBaseline(label: string, floor: number, baseline: TrivialBaseline, margin: number): void {
  process.stdout.write(`baseline ${label}: most frequent ${baseline.mostFrequent.toFixed(4)}, first tag ${baseline.firstTag.toFixed(4)} (${baseline.images} images; floor ${floor})\n`);
  expect(floor, `${label}: floor ${floor} must be at least ${margin} above the trivial baseline ${baseline.best.toFixed(4)}`).toBeGreaterThanOrEqual(baseline.best + margin);
}
