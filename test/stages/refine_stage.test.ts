/**
 * runRefine on hand-made tables (dataset, cams, affinity_cams, contrast_cams with `propagated`)
 * and original images / masks on disk, for a scene whose right answer is known. The maps live on
 * the stride-4 grid of a working size HALF the original, so the masks must come back at the
 * original size. Maps per table:
 *   cams.arrow                shifted one cell (wrong)
 *   affinity_cams.arrow       right
 *   contrast_cams.arrow cams  shifted (wrong), propagated: right
 * so `refine.source` visibly picks its column.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeIndexedPng, encodeIndexedPng } from '../../data/palette.js';
import { type ColumnSpec, TableWriter, readAll, readInfo } from '../../pipeline/arrow.js';
import { type Params, defaultParams } from '../../stages/params.js';
import { encodeFloat16 } from '../../maps/f16.js';
import { camColumns } from '../../maps/cams_table.js';
import { DATASET_COLUMNS } from '../../stages/ingest/tables.js';
import { runRefine, stage } from '../../stages/refine/index.js';

const CLASSES = ['background', 'cat', 'dog'];
/** Original size; the working size is half, maps are on its stride-4 grid (3 x 4 cells of 8 x 8 original pixels). */
const H = 24;
const W = 32;
const h = 3;
const w = 4;
const COLOURS: [number, number, number][] = [[40, 90, 40], [220, 120, 30], [30, 120, 220]];

interface Img { id: string; split: string; boxes: { cls: number; cells: [number, number, number, number] }[]; tags: number[]; gt: boolean }
const IMAGES: Img[] = [
  { id: 'a', split: 'train', boxes: [{ cls: 1, cells: [1, 1, 2, 3] }], tags: [1], gt: true },
  // tagged cat, but no cat in the picture and an all-zero cat map: flagged empty:cat
  { id: 'b', split: 'train', boxes: [{ cls: 2, cells: [0, 2, 2, 4] }], tags: [1, 2], gt: true },
  { id: 'c', split: 'val', boxes: [{ cls: 1, cells: [0, 0, 2, 2] }], tags: [1], gt: false },
];

function labels(im: Img): Uint8Array {
  const m = new Uint8Array(H * W);
  for (const b of im.boxes) {
    const [cy0, cx0, cy1, cx1] = b.cells;
    for (let y = cy0 * 8; y < cy1 * 8; y++) for (let x = cx0 * 8; x < cx1 * 8; x++) m[y * W + x] = b.cls;
  }
  return m;
}

/** [tags, h, w] maps: 1 on the cells of each tag's boxes (shifted by `shift` cells to the right), 0 elsewhere. */
function maps(im: Img, shift: number): Uint8Array {
  const out = new Float32Array(im.tags.length * h * w);
  im.tags.forEach((t, k) => {
    for (const b of im.boxes.filter((x) => x.cls === t)) {
      const [cy0, cx0, cy1, cx1] = b.cells;
      for (let y = cy0; y < cy1; y++) for (let x = cx0; x < cx1; x++) out[k * h * w + y * w + Math.min(w - 1, x + shift)] = 1;
    }
  });
  return encodeFloat16(out);
}

let root: string;
const file = (rel: string) => path.join(root, rel);

async function writeFixture(withContrast: boolean): Promise<void> {
  await fs.rm(path.join(root, 'cache'), { recursive: true, force: true });
  await fs.mkdir(path.join(root, 'data'), { recursive: true });
  const meta = (s: string, extra: Record<string, unknown> = {}) => ({ stage: s, paramsHash: 'fixture', classes: CLASSES, extra: { background: 0, ...extra } });
  const camExtra = { stride: 4, dtype: 'float16', scales: [1], flip: false, model: 'models/cam' };
  const ds = await TableWriter.open(file('cache/dataset.arrow'), DATASET_COLUMNS, meta('ingest', { void: 255, dataset_root: root, working_size: 16 }));
  const cams = await TableWriter.open(file('cache/cams.arrow'), camColumns('float16'), meta('cam', camExtra));
  const aff = await TableWriter.open(file('cache/affinity_cams.arrow'), camColumns('float16'), meta('affinity', camExtra));
  const contrastCols: ColumnSpec[] = [...camColumns('float16'), { name: 'propagated', type: 'binary', tensor: { dtype: 'float16', shape: '[tags, height, width]' } }];
  const con = withContrast ? await TableWriter.open(file('cache/contrast_cams.arrow'), contrastCols, meta('contrast', camExtra)) : null;
  for (const im of IMAGES) {
    const gt = labels(im);
    const rgb = new Uint8Array(H * W * 3);
    for (let i = 0; i < H * W; i++) rgb.set(COLOURS[gt[i]].map((c) => c + ((i * 7) % 5) - 2), 3 * i);
    const imagePath = file(`data/${im.id}.png`);
    await sharp(Buffer.from(rgb), { raw: { width: W, height: H, channels: 3 } }).png().toFile(imagePath);
    const maskPath = im.gt ? file(`data/${im.id}_mask.png`) : null;
    if (maskPath) await fs.writeFile(maskPath, encodeIndexedPng(gt, W, H));
    await ds.write({
      id: im.id, split: im.split, image_path: imagePath, mask_path: maskPath, orig_width: W, orig_height: H, width: W / 2, height: H / 2,
      tags: im.tags, tag_names: im.tags.map((t) => CLASSES[t]),
    });
    const row = { id: im.id, split: im.split, tags: im.tags, height: h, width: w, image_height: H / 2, image_width: W / 2 };
    await cams.write({ ...row, cams: maps(im, 1) });
    await aff.write({ ...row, cams: maps(im, 0) });
    await con?.write({ ...row, cams: maps(im, 1), propagated: maps(im, 0) });
  }
  for (const t of [ds, cams, aff, con]) await t?.close();
}

function params(o: Partial<Params['refine']> = {}): Params {
  const p = defaultParams();
  return { ...p, refine: { ...p.refine, concurrency: 2, ...o } };
}

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-refine-stage-'));
  await writeFixture(true);
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

describe('runRefine', () => {
  it('writes one pseudo-mask per image at the original size, PNGs, flags and the chain table', async () => {
    const r = await runRefine({ params: params(), path: file });
    const rows = await readAll(file('cache/pseudo_masks.arrow'), { stage: 'refine' });
    expect(rows.map((x) => [x.id, x.split, x.height, x.width])).toEqual(IMAGES.map((im) => [im.id, im.split, H, W]));
    for (const [k, row] of rows.entries()) {
      const mask = row.mask as Uint8Array;
      const counts = row.class_pixels as number[];
      expect(mask.length).toBe(H * W);
      expect((row.confidence as Uint8Array).length).toBe(H * W);
      expect(counts).toHaveLength(CLASSES.length);
      const ignored = mask.filter((v) => v === 255).length;
      expect(counts.reduce((a, b) => a + b, 0) + ignored).toBe(H * W);
      expect(row.ignore_fraction).toBeCloseTo(ignored / (H * W), 6);
      for (const v of new Set(mask)) expect([0, 255, ...IMAGES[k].tags]).toContain(v); // only tagged classes (+ bg, ignore)
      const png = decodeIndexedPng(await fs.readFile(file(`outputs/pseudo_masks/${row.id as string}.png`)), 'png');
      expect([png.width, png.height]).toEqual([W, H]);
      expect(png.data).toEqual(mask);
    }
    expect(rows[1].flags).toEqual(['empty:cat']);
    expect(rows[0].flags).toEqual([]);
    // the right maps + CRF on flat colour regions: every non-ignored pixel right
    const a = rows[0].mask as Uint8Array;
    const gtA = labels(IMAGES[0]);
    a.forEach((v, i) => { if (v !== 255) expect(v).toBe(gtA[i]); });
    expect(r.table.pseudo_masks.images).toBe(2);
    expect(r.table.pseudo_masks.miou).toBeGreaterThan(0.95);
    expect(r.table.pseudo_masks.ignore_fraction).toBeLessThan(0.25);
    for (const s of ['cam', 'random_walk', 'rca', 'rca_random_walk'] as const) expect(r.table[s]?.images).toBe(2);
    // shifted maps score worse than right ones, and the source column was `propagated`, not `cams`
    expect(r.table.rca!.miou!).toBeLessThan(r.table.rca_random_walk!.miou! - 0.2);
    expect(r.table.cam!.miou!).toBeLessThan(r.table.random_walk!.miou! - 0.2);
    expect(r.flagged).toEqual({ images: 1, empty_tags: 1, mostly_ignore: 0 });
    expect(r.images).toBe(3);
    expect(r.pngs).toBe(3);
    expect(r.images_per_second).toBeGreaterThan(0);
    const info = await readInfo(file('cache/pseudo_masks.arrow'));
    expect(info.meta.classes).toEqual(CLASSES);
    expect(info.meta.extra).toMatchObject({ background: 0, source: 'contrast', maps: { table: 'cache/contrast_cams.arrow', column: 'propagated' }, ignore: { rule: 'either' } });
    expect((await fs.readdir(file('outputs'))).sort()).toEqual(['pseudo_masks']); // no staging folder left
  });

  it('refines the maps that refine.source names', async () => {
    const fromCam = await runRefine({ params: params({ source: 'cam' }), path: file });
    expect(fromCam.table.pseudo_masks.miou!).toBeLessThan(0.8);
    const info = await readInfo(file('cache/pseudo_masks.arrow'));
    expect(info.meta.extra).toMatchObject({ source: 'cam', maps: { table: 'cache/cams.arrow', column: 'cams' } });
  });

  it('ignore none labels every pixel; CRF iterations 0 gives the maps labels', async () => {
    const r = await runRefine({ params: params({ source: 'affinity', ignore: 'none', crf: { ...defaultParams().refine.crf, iterations: 0 } }), path: file });
    expect(r.table.pseudo_masks.ignore_fraction).toBe(0);
    expect(r.table.pseudo_masks.miou).toBeCloseTo(r.ablation.maps.miou!, 9);
    expect(r.ablation.crf.miou).toBeCloseTo(r.ablation.maps.miou!, 9);
    expect(r.crf_seconds_per_image).toBe(0);
  });

  it('without contrast_cams.arrow: runs from another source with empty RCA rows, refuses source contrast', async () => {
    await writeFixture(false);
    try {
      const r = await runRefine({ params: params({ source: 'affinity' }), path: file });
      expect(r.table.rca).toBeNull();
      expect(r.table.rca_random_walk).toBeNull();
      expect(r.table.random_walk?.images).toBe(2);
      await expect(runRefine({ params: params({ source: 'contrast' }), path: file })).rejects.toThrow(/contrast_cams\.arrow|table not found/);
    } finally {
      await writeFixture(true);
    }
  });

  it('io: reads the original images (dataset.root) and every map table', () => {
    const p = defaultParams();
    const io = stage.io(p);
    expect(io.reads).toEqual(expect.arrayContaining([p.dataset.root, 'cache/dataset.arrow', 'cache/cams.arrow', 'cache/affinity_cams.arrow', 'cache/contrast_cams.arrow']));
    expect(io.writes).toEqual(['cache/pseudo_masks.arrow', 'outputs/pseudo_masks']);
  });
});
