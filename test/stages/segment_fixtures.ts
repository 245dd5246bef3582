/**
 * Test fixtures of the segment stage: a hand-made cache/pseudo_masks.arrow in the refine stage's
 * layout (one row per image of images.arrow, masks at the ORIGINAL size) built from the
 * ground-truth masks with a band of ignore pixels and, optionally, a wrong class in one corner.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { readMask } from '../../data/decode.js';
import { TableWriter, readAll, readInfo } from '../../pipeline/arrow.js';
import { PSEUDO_MASK_COLUMNS } from '../../stages/refine/tables.js';

/** The refine stage's own schema, so fixtures follow it when it changes. */
export const PSEUDO_COLUMNS = PSEUDO_MASK_COLUMNS;

/**
 * Write `<root>/cache/pseudo_masks.arrow` from `<root>/cache/dataset.arrow`: each mask = the
 * ground-truth mask file at the original size, the first `ignoreRows` rows set to 255, and the top-left `wrong` x
 * `wrong` block set to class `wrongClass`.
 */
export async function writePseudoMasks(root: string, o: { ignoreRows?: number; wrong?: number; wrongClass?: number } = {}): Promise<void> {
  const images = await readAll(path.join(root, 'cache/dataset.arrow'), { stage: 'ingest' });
  const info = await readInfo(path.join(root, 'cache/dataset.arrow'));
  const k = info.meta.classes.length;
  const w = await TableWriter.open(path.join(root, 'cache/pseudo_masks.arrow'), PSEUDO_COLUMNS, { stage: 'refine', paramsHash: 'test', classes: info.meta.classes });
  for (const r of images) {
    const H = r.orig_height as number;
    const W = r.orig_width as number;
    // dataset.arrow's paths are relative to dataset.root (the workspace's datasets/synthetic)
    const mask = Uint8Array.from((await readMask(path.join(root, 'datasets/synthetic', r.mask_path as string), W, H)).data);
    mask.fill(255, 0, (o.ignoreRows ?? 0) * W);
    for (let y = 0; y < (o.wrong ?? 0); y++) mask.fill(o.wrongClass ?? 0, y * W, y * W + (o.wrong ?? 0));
    const counts = new Array<number>(k).fill(0);
    let ignored = 0;
    for (const v of mask) if (v === 255) ignored++; else if (v < k) counts[v]++;
    await w.write({
      id: r.id, split: r.split, height: H, width: W, tags: r.tags as number[], mask, confidence: new Uint8Array(H * W).fill(200),
      class_pixels: counts, ignore_fraction: ignored / (H * W), mean_margin: 0.5, flags: [],
    });
  }
  await w.close();
}

/** A metrics/refine.json with a chain table. */
export async function writeRefineMetrics(root: string): Promise<void> {
  const table = { cam: { miou: 0.5, images: 9 }, random_walk: { miou: 0.55 }, rca: 0.6, rca_random_walk: { miou: 0.62 }, pseudo_masks: { miou: 0.7 } };
  await fs.mkdir(path.join(root, 'metrics'), { recursive: true });
  await fs.writeFile(path.join(root, 'metrics/refine.json'), JSON.stringify({ table }));
}
