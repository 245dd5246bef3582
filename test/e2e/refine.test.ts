/**
 * refine through its real dvc.yaml cmd on a tiny synthetic workspace (48 px originals, 32 px
 * working size). synth and ingest run for real; the three map tables refine reads are written
 * here from the ingested ground truth (stride-4 cell fractions: exact for affinity_cams and
 * contrast `propagated`, shifted one cell for cams and contrast `cams`), so the test stays fast
 * (training cam/affinity/contrast is test/e2e/pipeline.test.ts's job) and the right answer is known.
 * Checks: a pseudo-mask per cams.arrow row at the ORIGINAL size, every PNG decodes to its mask,
 * metrics/refine.json holds the whole chain table, the pseudo-masks beat the shifted maps, and a
 * second repro has nothing to do.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeIndexedPng } from '../../data/palette.js';
import { type ColumnSpec, TableWriter, readAll, readInfo } from '../../pipeline/arrow.js';
import { repro } from '../../cli/dag.js';
import { createWorkspace } from '../../cli/workspace.js';
import { encodeFloat16 } from '../../maps/f16.js';
import { camColumns } from '../../maps/cams_table.js';
import { expectFloorAboveBaseline, expectScore, trivialBaseline } from '../helpers/quality.js';

// Quality floors (fractions, as in the metrics file): measured on this test's fixtures (no training, so
// deterministic up to float rounding), minus a margin of 0.02 (rounded down to 0.01).
const FLOOR = { cam: 0.40, random_walk: 0.79, rca: 0.40, rca_random_walk: 0.79, pseudo_masks: 0.98 }; // measured 0.4232, 0.8184, 0.4232, 0.8184, 1.0
// Each floor must stay this far above the trivial baseline of the same images (test/helpers/quality.ts).
const ABOVE_BASELINE = 0.05;

let root: string;

/** [tags, ceil(H/4), ceil(W/4)] fraction of each 4x4 cell that is the tag, max-normalised, shifted `shift` cells right. */
function cellMaps(mask: Uint8Array, H: number, W: number, tags: number[], shift: number): Uint8Array {
  const h = Math.ceil(H / 4);
  const w = Math.ceil(W / 4);
  const out = new Float32Array(tags.length * h * w);
  tags.forEach((t, k) => {
    const m = out.subarray(k * h * w, (k + 1) * h * w);
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) if (mask[y * W + x] === t) m[((y / 4) | 0) * w + Math.min(w - 1, ((x / 4) | 0) + shift)] += 1;
    const max = Math.max(...m);
    if (max > 0) for (let i = 0; i < m.length; i++) m[i] /= max;
  });
  return encodeFloat16(out);
}

async function writeMapTables(): Promise<void> {
  const images = await readAll(path.join(root, 'cache/images.arrow'), { stage: 'ingest' });
  const info = await readInfo(path.join(root, 'cache/images.arrow'));
  const meta = (stage: string) => ({ stage, paramsHash: 'e2e', classes: info.meta.classes, extra: { background: 0, stride: 4, dtype: 'float16', scales: [1], flip: false, model: 'none' } });
  const contrastCols: ColumnSpec[] = [...camColumns('float16'), { name: 'propagated', type: 'binary', tensor: { dtype: 'float16', shape: '[tags, height, width]' } }];
  const cams = await TableWriter.open(path.join(root, 'cache/cams.arrow'), camColumns('float16'), meta('cam'));
  const aff = await TableWriter.open(path.join(root, 'cache/affinity_cams.arrow'), camColumns('float16'), meta('affinity'));
  const con = await TableWriter.open(path.join(root, 'cache/contrast_cams.arrow'), contrastCols, meta('contrast'));
  for (const r of images) {
    const H = r.height as number;
    const W = r.width as number;
    const mask = r.mask as Uint8Array;
    const tags = (r.tags as number[]).filter((t) => t !== 0);
    const row = { id: r.id, split: r.split, tags, height: Math.ceil(H / 4), width: Math.ceil(W / 4), image_height: H, image_width: W };
    await cams.write({ ...row, cams: cellMaps(mask, H, W, tags, 1) });
    await aff.write({ ...row, cams: cellMaps(mask, H, W, tags, 0) });
    await con.write({ ...row, cams: cellMaps(mask, H, W, tags, 1), propagated: cellMaps(mask, H, W, tags, 0) });
  }
  for (const t of [cams, aff, con]) await t.close();
}

beforeAll(async () => {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-e2e-refine-'));
  root = await createWorkspace(path.join(tmp, 'ws'), ['synth.images=12', 'synth.size=48', 'ingest.size=32']);
});
afterAll(async () => {
  await fs.rm(path.dirname(root), { recursive: true, force: true });
});

describe('refine end to end', () => {
  it('repro -s refine writes pseudo-masks at the original size, their PNGs and the chain table', async () => {
    const up = await repro(root, { target: 'ingest' });
    expect(up.failed?.message).toBeUndefined();
    await writeMapTables();
    const r = await repro(root, { target: 'refine', single: true });
    expect(r.failed?.message).toBeUndefined();
    expect(r.stages.map((s) => [s.name, s.action])).toEqual([['refine', 'ran']]);

    const cams = await readAll(path.join(root, 'cache/cams.arrow'), { stage: 'cam' });
    const dataset = new Map((await readAll(path.join(root, 'cache/dataset.arrow'), { stage: 'ingest' })).map((d) => [d.id, d]));
    const pm = await readAll(path.join(root, 'cache/pseudo_masks.arrow'), { stage: 'refine' });
    expect(pm.map((x) => [x.id, x.split, x.tags])).toEqual(cams.map((x) => [x.id, x.split, x.tags]));
    for (const row of pm) {
      const d = dataset.get(row.id)!;
      expect([row.width, row.height]).toEqual([d.orig_width, d.orig_height]);
      expect(row.width).toBe(48); // original, not the 32 px working size
      const mask = row.mask as Uint8Array;
      const png = decodeIndexedPng(await fs.readFile(path.join(root, 'outputs/pseudo_masks', `${row.id as string}.png`)), 'png');
      expect(png.data).toEqual(mask);
      for (const v of new Set(mask)) expect([0, 255, ...(row.tags as number[])]).toContain(v);
    }
    expect((await fs.readdir(path.join(root, 'outputs/pseudo_masks'))).length).toBe(pm.length);
    const info = await readInfo(path.join(root, 'cache/pseudo_masks.arrow'));
    expect(info.meta.extra).toMatchObject({ background: 0, source: 'contrast', maps: { column: 'propagated' } });

    const m = JSON.parse(await fs.readFile(path.join(root, 'metrics/refine.json'), 'utf8'));
    const train = cams.filter((c) => c.split === 'train').length;
    for (const s of ['cam', 'random_walk', 'rca', 'rca_random_walk', 'pseudo_masks']) {
      expect(m.table[s].images).toBe(train);
      // The floors were measured on the labelled pixels (the maps label every pixel, so for them it is also miou).
      expectScore(`refine e2e: table.${s}.miou_labelled`, m.table[s].miou_labelled, FLOOR[s as keyof typeof FLOOR]);
    }
    // Full coverage (ignore counted as wrong): measured 0.973, floor minus 0.05 as above.
    expectScore('refine e2e: table.pseudo_masks.miou (full coverage)', m.table.pseudo_masks.miou, 0.92);
    expect(m.table.pseudo_masks.miou).toBeLessThanOrEqual(m.table.pseudo_masks.miou_labelled);
    const baseline = await trivialBaseline(root, cams.filter((c) => c.split === 'train').map((c) => c.id as string));
    for (const [s, floor] of Object.entries(FLOOR)) expectFloorAboveBaseline(`refine e2e: table.${s}.miou`, floor, baseline, ABOVE_BASELINE);
    expect(m.table.pseudo_masks.miou).toBeGreaterThan(m.table.cam.miou);
    expect(m.table.pseudo_masks.miou).toBeGreaterThan(m.table.rca.miou);
    expect(m.table.pseudo_masks.ignore_fraction).toBeLessThan(0.3);
    expect(m.images).toBe(cams.length);
    // Run statistics live in the untracked run log, not in the metrics.
    expect(m.images_per_second).toBeUndefined();
    const run = JSON.parse(await fs.readFile(path.join(root, '.tagseg/runs/refine.json'), 'utf8'));
    expect(run.summary.images_per_second).toBeGreaterThan(0);

    const again = await repro(root, { target: 'refine', single: true });
    expect(again.ran).toEqual([]);

    // A forced rerun recomputes everything: tracked metrics and plots are byte-identical (no
    // timings in them); only the untracked run log changes.
    const tracked = ['metrics/refine.json', 'plots/refine_classes.json'];
    const before = await Promise.all(tracked.map((f) => fs.readFile(path.join(root, f), 'utf8')));
    const log = await fs.readFile(path.join(root, '.tagseg/runs/refine.json'), 'utf8');
    const forced = await repro(root, { target: 'refine', single: true, force: true });
    expect(forced.ran).toEqual(['refine']);
    expect(await Promise.all(tracked.map((f) => fs.readFile(path.join(root, f), 'utf8')))).toEqual(before);
    expect(await fs.readFile(path.join(root, '.tagseg/runs/refine.json'), 'utf8')).not.toBe(log); // control: it did run again
  }, 120_000);
});
