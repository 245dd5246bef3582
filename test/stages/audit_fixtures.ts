/**
 * Hand-made inputs of the audit stage: every table it reads (ingest, cam, affinity, contrast,
 * refine layouts) for a few tiny images whose right answer is known, plus the original images as
 * PNG files (full-size overlays). Used by the stage test and the browser test; runAudit runs both
 * audit stages in one call.
 *
 * Scene of each image (H x W = 24 x 32, classes bg/cat/dog, background 0): a rectangle of its
 * tagged class on a flat background, drawn in distinct colours so the image edges are exactly the
 * rectangle's outline. Maps are the ground truth blurred to stride 4. Pseudo-masks:
 * - 'good-*': the ground truth, confidence 230, no ignore.
 * - 'bad': half the image ignore, the rest labelled with the wrong layout (shifted rectangle),
 *   confidence 60, the tag 'dog' lost: the image the audit must rank first.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import sharp from 'sharp';
import { TableWriter } from '../../pipeline/arrow.js';
import { encodeFloat16 } from '../../maps/f16.js';
import { camColumns } from '../../maps/cams_table.js';
import { contrastColumns } from '../../stages/contrast/tables.js';
import { DATASET_COLUMNS, IMAGES_COLUMNS } from '../../stages/ingest/tables.js';
import { PSEUDO_MASK_COLUMNS } from '../../stages/refine/tables.js';
import { type RunAuditOptions, runAuditMeasures } from '../../stages/audit/index.js';
import { type AuditRunResult, runAuditReport } from '../../stages/audit/report_stage.js';

export const FIX = { H: 24, W: 32, classes: ['background', 'cat', 'dog'], background: 0 } as const;

/** The refine stage's own schema, so fixtures follow it when it changes. */
export const PSEUDO_COLUMNS = PSEUDO_MASK_COLUMNS;

export interface FixtureImage { id: string; split: string; cls: number; box: [number, number, number, number]; bad?: boolean; noGt?: boolean }

export const FIXTURE_IMAGES: FixtureImage[] = [
  { id: 'good-1', split: 'train', cls: 1, box: [4, 6, 16, 20] },
  { id: 'good-2', split: 'train', cls: 2, box: [8, 10, 20, 28] },
  { id: 'bad', split: 'train', cls: 2, box: [2, 2, 14, 14], bad: true },
  { id: 'good-3', split: 'val', cls: 1, box: [6, 4, 18, 16], noGt: true },
];

const COLOURS: [number, number, number][] = [[40, 40, 40], [220, 120, 30], [30, 160, 220]];

function labelsOf(im: FixtureImage, H: number, W: number, box = im.box): Uint8Array {
  const m = new Uint8Array(H * W);
  const [y0, x0, y1, x1] = box;
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) m[y * W + x] = im.cls;
  return m;
}

/** Stride-4 map of class `c` from labels (fraction of each 4x4 cell that is c), max-normalised. */
function mapOf(labels: Uint8Array, H: number, W: number, c: number): Float32Array {
  const h = Math.ceil(H / 4);
  const w = Math.ceil(W / 4);
  const out = new Float32Array(h * w);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) if (labels[y * W + x] === c) out[((y / 4) | 0) * w + ((x / 4) | 0)] += 1 / 16;
  const max = Math.max(...out);
  if (max > 0) for (let i = 0; i < out.length; i++) out[i] /= max;
  return out;
}

/** Writes cache/{dataset,images,cams,affinity_cams,contrast_cams,pseudo_masks}.arrow and images/ under `root`. */
export async function writeAuditFixture(root: string, images: readonly FixtureImage[] = FIXTURE_IMAGES): Promise<void> {
  const { H, W } = FIX;
  const classes = [...FIX.classes];
  const meta = (stage: string, extra: Record<string, unknown> = {}) => ({ stage, paramsHash: 'fixture', classes, extra: { background: FIX.background, ...extra } });
  const dir = path.join(root, 'cache');
  await fs.mkdir(path.join(root, 'images'), { recursive: true });
  const ds = await TableWriter.open(path.join(dir, 'dataset.arrow'), DATASET_COLUMNS, meta('ingest', { void: 255, dataset_root: root, working_size: 32 }));
  const ims = await TableWriter.open(path.join(dir, 'images.arrow'), IMAGES_COLUMNS, meta('ingest', { void: 255, dataset_root: root, working_size: 32 }));
  const camExtra = { stride: 4, dtype: 'float16', scales: [1], flip: false, model: 'models/cam' };
  const cams = await TableWriter.open(path.join(dir, 'cams.arrow'), camColumns('float16'), meta('cam', camExtra));
  const rw = await TableWriter.open(path.join(dir, 'affinity_cams.arrow'), camColumns('float16'), meta('affinity', camExtra));
  const rca = await TableWriter.open(path.join(dir, 'contrast_cams.arrow'), contrastColumns('float16'), meta('contrast', camExtra));
  const pm = await TableWriter.open(path.join(dir, 'pseudo_masks.arrow'), PSEUDO_COLUMNS, meta('refine'));
  for (const im of images) {
    const gt = labelsOf(im, H, W);
    const pixels = new Uint8Array(H * W * 3);
    for (let i = 0; i < H * W; i++) pixels.set(COLOURS[gt[i]], 3 * i);
    const imagePath = path.join(root, 'images', `${im.id}.png`);
    await sharp(Buffer.from(pixels), { raw: { width: W, height: H, channels: 3 } }).png().toFile(imagePath);
    const tags = [im.cls];
    await ds.write({
      id: im.id, split: im.split, image_path: imagePath, mask_path: null, orig_width: W, orig_height: H, width: W, height: H,
      tags: [0, im.cls], tag_names: ['background', classes[im.cls]],
    });
    await ims.write({ id: im.id, split: im.split, width: W, height: H, tags: [0, im.cls], pixels, mask: im.noGt ? null : gt });
    const maps = encodeFloat16(mapOf(gt, H, W, im.cls));
    const row = { id: im.id, split: im.split, tags, height: H / 4, width: W / 4, image_height: H, image_width: W, cams: maps };
    await cams.write(row);
    await rw.write(row);
    await rca.write({ ...row, propagated: maps });
    let mask = gt;
    let confidence = new Uint8Array(H * W).fill(230);
    const flags: string[] = [];
    if (im.bad) {
      mask = labelsOf({ ...im, cls: 1 }, H, W, [10, 16, 24, 32]);
      for (let i = 0; i < (H * W) / 2; i++) mask[i] = 255;
      confidence = new Uint8Array(H * W).fill(60);
      flags.push('empty:dog', 'mostly_ignore');
    }
    const classPixels = classes.map((_, c) => mask.filter((v) => v === c).length);
    await pm.write({
      id: im.id, split: im.split, height: H, width: W, tags, mask, confidence, class_pixels: classPixels,
      ignore_fraction: mask.filter((v) => v === 255).length / (H * W), mean_margin: im.bad ? 0.1 : 0.8, flags,
    });
  }
  for (const w of [ds, ims, cams, rw, rca, pm]) await w.close();
}

/** Both audit stages in one call (every shard's measures, then the report), as `tagseg repro audit_report` runs them. */
export async function runAudit(o: RunAuditOptions): Promise<AuditRunResult> {
  const m = await runAuditMeasures({ ...o, shard: undefined });
  const r = await runAuditReport(o);
  return { ...r, seconds: m.seconds + r.seconds, measureSeconds: m.measureSeconds, overlaySeconds: m.overlaySeconds };
}
