/**
 * Test fixtures of the segment stage: a hand-made cache/pseudo_masks.arrow in the refine stage's
 * layout (one row per image of images.arrow, masks at the ORIGINAL size) built from the
 * ground-truth masks with a band of ignore pixels and, optionally, a wrong class in one corner.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { repro } from '../../cli/dag.js';
import { createWorkspace } from '../../cli/workspace.js';
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
export interface PseudoOptions { ignoreRows?: number; wrong?: number; wrongClass?: number }

export async function writePseudoMasks(root: string, o: PseudoOptions = {}): Promise<void> {
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

/**
 * The tiny settings the cv-protocol tests share, and their short protocol: 2 folds, 1 seed, epochs
 * 8 x 0.5 = 4 (1 epoch scores barely above background everywhere).
 */
export const CV_TINY = [
  'synth.images=16', 'synth.size=32', 'ingest.size=32', 'cam.width=8', 'cam.epochs=1', 'cam.batch_size=4', 'cam.crop=32', 'cam.scales=[1.0]',
  'segment.epochs=8', 'segment.batch_size=4', 'segment.crop=32', 'segment.head_dim=16', 'segment.crf.iterations=2',
];
export const CV_SHORT = { folds: 2, seeds: 1, epochsFactor: 0.5 };

/**
 * What the segment and cv tests start from: a workspace in a new temp folder (`<tmp>/ws`, named
 * `tagseg-<prefix>-*`) run up to `cam`, with hand-made pseudo-masks and a refine metrics file.
 */
export async function segmentWorkspace(prefix: string, overrides: string[], pseudo: PseudoOptions = {}): Promise<string> {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), `tagseg-${prefix}-`));
  const root = await createWorkspace(path.join(tmp, 'ws'), overrides);
  const r = await repro(root, { target: 'cam' });
  if (!r.ok) throw new Error(`repro cam failed in the fixture workspace: ${r.failed?.message ?? 'unknown'}`);
  await writePseudoMasks(root, pseudo);
  await writeRefineMetrics(root);
  return root;
}

/** Moves every label of images `ids` to the next class (ignore kept), or `back`: masks wrong everywhere. */
export async function shiftPseudoMasks(root: string, ids: readonly string[], back = false): Promise<void> {
  const file = path.join(root, 'cache/pseudo_masks.arrow');
  const classes = (await readInfo(file)).meta.classes;
  const k = classes.length;
  const rows = await readAll(file);
  const w = await TableWriter.open(file, PSEUDO_COLUMNS, { stage: 'refine', paramsHash: 'test', classes });
  for (const r of rows) {
    if (ids.includes(r.id as string)) r.mask = (r.mask as Uint8Array).map((v) => (v === 255 ? v : (v + (back ? k - 1 : 1)) % k));
    await w.write(r);
  }
  await w.close();
}
