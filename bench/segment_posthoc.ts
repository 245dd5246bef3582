/**
 * Test-time options of a trained segmentation model on its validation carve (diagnostic, not a test).
 *   npm run bench -- segment_posthoc <workspace> [variant ...]
 * A variant is `scales=1,0.75,1.25` and/or `crf=SXY/SRGB/COMPAT` (bilateral kernel; the rest
 * from params.yaml's default segment.crf), joined by '+', e.g. `scales=1+crf=50/5/10`. Default variants: single scale,
 * three scales, each with and without IRN's CRF. Reads models/segment (weights + val_ids.txt),
 * cache/images.arrow (working-size pixels) and cache/dataset.arrow (mask paths); scores at the
 * original resolution as the segment stage does. Prints mIoU, pixel accuracy and seconds per variant.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { readMask } from '../data/decode.js';
import { resolveDatasetPath } from '../data/manifest.js';
import { ConfusionMatrix, segmentationScores } from '../eval/metrics.js';
import { type DenseCrfOptions, crfFromKeys } from '../ops/crf.js';
import { readAll } from '../pipeline/arrow.js';
import { initBackend } from '../pipeline/backend.js';
import { defaultParams, loadParams } from '../stages/params.js';
import { segmentBatch } from '../stages/segment/infer.js';
import { loadSegModel } from '../stages/segment/net.js';

const ws = process.argv[2];
if (!ws) {
  console.error('usage: npm run bench -- segment_posthoc <workspace> [scales=1,0.75,1.25+crf=50/5/10 ...]');
  process.exit(2);
}
const variants = process.argv.length > 3 ? process.argv.slice(3) : ['scales=1', 'scales=1+crf=50/5/10', 'scales=1,0.75,1.25', 'scales=1,0.75,1.25+crf=50/5/10'];

function parseVariant(v: string): { scales: number[]; crf: DenseCrfOptions | null } {
  let scales = [1];
  let crf: DenseCrfOptions | null = null;
  for (const part of v.split('+')) {
    const [k, val] = part.split('=');
    if (k === 'scales') scales = val.split(',').map(Number);
    else if (k === 'crf') {
      const [sxy, srgb, compat] = val.split('/').map(Number);
      crf = { ...crfFromKeys(defaultParams().segment.crf), bilateral: { sxy, srgb, compat } };
    } else throw new Error(`unknown variant part '${part}'`);
  }
  return { scales, crf };
}

await initBackend();
const net = await loadSegModel(path.join(ws, 'models/segment'));
const valIds = new Set((await fs.readFile(path.join(ws, 'models/segment/val_ids.txt'), 'utf8')).split('\n').filter(Boolean));
const datasetRoot = path.resolve(ws, (await loadParams(path.join(ws, 'params.yaml'))).dataset.root); // dataset.arrow's paths are relative to it
const dataset = new Map((await readAll(path.join(ws, 'cache/dataset.arrow'))).map((r) => [r.id as string, r]));
const rows = (await readAll(path.join(ws, 'cache/images.arrow'))).filter((r) => valIds.has(r.id as string) && dataset.get(r.id as string)?.mask_path);
const K = net.config.classes.length;
const masks = new Map<string, Uint8Array>();
for (const r of rows) {
  const d = dataset.get(r.id as string)!;
  masks.set(r.id as string, (await readMask(resolveDatasetPath(datasetRoot, d.mask_path as string), d.orig_width as number, d.orig_height as number)).data);
}
console.log(`${rows.length} validation images, ${K} classes, model trained on ${String(net.config.labels)} labels`);
for (const v of variants) {
  const o = parseVariant(v);
  const t0 = performance.now();
  const cm = new ConfusionMatrix(K);
  for (const r of rows) {
    const d = dataset.get(r.id as string)!;
    const [pred] = await segmentBatch(net, [r.pixels as Uint8Array], r.height as number, r.width as number, [d.orig_height as number, d.orig_width as number], { scales: o.scales, flip: true, crf: o.crf });
    cm.add(pred, masks.get(r.id as string)!);
  }
  const s = segmentationScores(cm);
  console.log(`${v.padEnd(36)} mIoU ${(100 * (s.miou ?? 0)).toFixed(1)}  pixel acc ${(100 * (s.pixelAccuracy ?? 0)).toFixed(1)}  ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
net.dispose();
