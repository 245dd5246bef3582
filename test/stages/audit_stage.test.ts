/**
 * The audit stage on hand-made tables (audit_fixtures.ts): the deliberately bad pseudo-mask
 * ranks first, the tables, CSVs, report files and metrics are written and agree, and bad input
 * (tables from different runs) fails naming the file.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeIndexedPng } from '../../data/palette.js';
import { TableWriter, readAll, readInfo } from '../../pipeline/arrow.js';
import { setQuiet } from '../../pipeline/log.js';
import { defaultParams } from '../../stages/params.js';
import { type AuditRunResult, auditOutput, formatAudit } from '../../stages/audit/report_stage.js';
import { AUDIT_CLASS_COLUMNS, AUDIT_IMAGE_COLUMNS } from '../../stages/audit/columns.js';
import { PSEUDO_COLUMNS, runAudit, writeAuditFixture } from './audit_fixtures.js';

let root: string;
let result: AuditRunResult;
const params = defaultParams();
const at = (rel: string) => path.join(root, rel);

beforeAll(async () => {
  setQuiet(true);
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-audit-stage-'));
  await writeAuditFixture(root);
  result = await runAudit({ params, path: (rel) => path.resolve(root, rel) });
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

describe('audit stage on hand-made tables', () => {
  it('ranks the bad pseudo-mask first and says why', async () => {
    const images = await readAll(at('cache/audit_images.arrow'), { stage: 'audit' });
    expect(images.map((r) => r.rank)).toEqual([1, 2, 3, 4]);
    expect(images[0].id).toBe('bad');
    expect(images[0].suspicion as number).toBeGreaterThan(2 * (images[1].suspicion as number));
    expect(images[0].reasons).toEqual(['empty_tags', 'low_confidence', 'disagreement']);
    expect(images[0].t_ignore).toBe(0.5);
    expect(images[0].refine_flags).toEqual(['empty:dog', 'mostly_ignore']);
    expect(images[0].empty_tags).toBe(1);
    expect(images[0].ignore_fraction as number).toBeCloseTo(0.5);
    const good = images.filter((r) => r.id !== 'bad');
    for (const g of good) {
      expect(g.ignore_fraction).toBe(0);
      expect(g.agree_cam_final as number).toBeGreaterThan(0.8);
    }
    // ground truth where masks exist (good-3 has none)
    expect(images.find((r) => r.id === 'good-1')?.gt_miou).toBe(1);
    expect(images.find((r) => r.id === 'good-3')?.gt_miou).toBeNull();
    expect(images[0].gt_miou as number).toBeLessThan(0.3);
  });

  it('writes one class row per tagged, present or ground-truth class with the documented columns', async () => {
    const info = await readInfo(at('cache/audit.arrow'));
    expect(info.columns.map((c) => c.name)).toEqual(AUDIT_CLASS_COLUMNS.map((c) => c.name));
    expect(info.columns.every((c) => (c.doc ?? '').length > 5)).toBe(true);
    const rows = await readAll(at('cache/audit.arrow'), { stage: 'audit' });
    const bad = rows.filter((r) => r.id === 'bad');
    // tags background + dog, the final mask has cat (wrong) + background
    expect(bad.map((r) => [r.class_name, r.tagged, r.empty_tag])).toEqual([['background', true, false], ['cat', false, false], ['dog', true, true]]);
    const dog = bad.find((r) => r.class_name === 'dog');
    expect(dog?.gt_recall).toBe(0);
    const g1 = rows.find((r) => r.id === 'good-1' && r.class_name === 'cat');
    expect(g1).toMatchObject({ components: 1, largest_share: 1, gt_iou: 1, iou_cam_final: expect.any(Number) });
    expect(g1?.boundary_alignment as number).toBeGreaterThan(0.9);
  });

  it('summarises classes, scores the ranking against ground truth and lists the top images', () => {
    const m = result.metrics;
    expect(m.images).toBe(4);
    expect(m.top[0]).toMatchObject({ rank: 1, id: 'bad' });
    expect(m.gt?.images).toBe(3);
    expect(m.gt?.precision_at_top).toBeCloseTo(1 / 3); // top 20 of 3 GT images: 1 bad
    expect(m.gt?.bad_rate).toBeCloseTo(1 / 3);
    expect(m.gt?.spearman as number).toBeGreaterThan(0.5);
    const conf = result.summary.gt?.confused ?? [];
    // the wrong cat rectangle over background, then the lost dog
    expect(conf.map((p) => [p.gt, p.predicted])).toEqual([['background', 'cat'], ['dog', 'background']]);
    expect(conf[0].pixels).toBe(192);
    expect(result.summary.classes.find((c) => c.name === 'dog')?.empty_tags).toBe(1);
    expect(m.classes.cat.gt_iou).toBeLessThan(1);
  });

  it('writes the report: page, data.js, CSVs, thumbnails per stage and full-size overlays', async () => {
    const dir = at('reports/audit');
    const html = await fs.readFile(path.join(dir, 'index.html'), 'utf8');
    expect(html).toContain('<script src="data.js"></script>');
    expect(html).not.toContain('__APP__');
    const data = await fs.readFile(path.join(dir, 'data.js'), 'utf8');
    expect(data.startsWith('window.AUDIT = ')).toBe(true);
    const A = JSON.parse(data.slice('window.AUDIT = '.length).trim().replace(/;$/, '')) as { images: unknown[][]; imageFields: string[]; stages: { key: string }[] };
    expect(A.images).toHaveLength(4);
    expect(A.stages.map((s) => s.key)).toEqual(['cam', 'random_walk', 'rca', 'final', 'gt']);
    const file = A.images[0][A.imageFields.indexOf('file')] as string;
    for (const s of ['cam', 'random_walk', 'rca', 'final', 'gt', 'full']) {
      const meta = await sharp(path.join(dir, 'img', s, `${file}.jpg`)).metadata();
      expect([meta.width, meta.height]).toEqual([32, 24]);
    }
    // detail view: the photo and the CAM heatmap of each tag at the working size
    for (const f of ['photo/' + file, `heat/${file}_${String(A.images[0][A.imageFields.indexOf('heat')] as number[])}`]) {
      const meta = await sharp(path.join(dir, 'img', `${f}.jpg`)).metadata();
      expect([meta.width, meta.height]).toEqual([32, 24]);
    }
    expect(A.images[0][A.imageFields.indexOf('heat')]).toEqual([1]); // good-1: tagged cat
    // no gt thumbnail for the image without ground truth
    const noGt = A.images.find((r) => r[0] === 'good-3') as unknown[];
    await expect(fs.access(path.join(dir, 'img', 'gt', `${noGt[A.imageFields.indexOf('file')] as string}.jpg`))).rejects.toThrow();
    const csv = (await fs.readFile(path.join(dir, 'images.csv'), 'utf8')).trim().split('\n');
    expect(csv[0]).toBe(AUDIT_IMAGE_COLUMNS.map((c) => c.name).join(','));
    expect(csv).toHaveLength(5);
    expect(csv[1].startsWith('bad,train,1,')).toBe(true);
    expect((await fs.readFile(path.join(dir, 'classes.csv'), 'utf8')).split('\n')[2]).toMatch(/^1,cat,/);
    const leftovers = (await fs.readdir(at('reports'))).filter((f) => f !== 'audit');
    expect(leftovers).toEqual([]);
  });

  it('fails naming the file when a table comes from another run', async () => {
    const other = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-audit-bad-'));
    try {
      await writeAuditFixture(other);
      // pseudo_masks.arrow with its rows in another order
      const rows = await readAll(path.join(other, 'cache/pseudo_masks.arrow'));
      const info = await readInfo(path.join(other, 'cache/pseudo_masks.arrow'));
      const w = await TableWriter.open(path.join(other, 'cache/pseudo_masks.arrow'), PSEUDO_COLUMNS, info.meta);
      for (const r of rows.reverse()) await w.write(r);
      await w.close();
      await expect(runAudit({ params, path: (rel) => path.resolve(other, rel) })).rejects.toThrow(/pseudo_masks\.arrow.*row 0 is 'good-3', images\.arrow has 'good-1'/s);
      // nothing half-written: no report folder, no staging folder left behind
      expect(await fs.readdir(path.join(other, 'reports')).catch(() => [])).toEqual([]);
      await expect(fs.access(path.join(other, 'cache/audit.arrow'))).rejects.toThrow();
    } finally {
      await fs.rm(other, { recursive: true, force: true });
    }
  });

  it('without a label-quality table or corrections: null scores, nothing marked corrected', async () => {
    const images = await readAll(at('cache/audit_images.arrow'), { stage: 'audit' });
    expect(images.map((r) => [r.label_quality, r.label_confidence, r.corrected])).toEqual(images.map(() => [null, null, false]));
    expect(result.metrics.gt?.label_quality).toBeNull();
  });

  it('shows the out-of-fold label quality beside the suspicion and marks corrected masks', async () => {
    const other = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-audit-lq-'));
    try {
      await writeAuditFixture(other);
      await fs.mkdir(path.join(other, 'review/corrections'), { recursive: true });
      await fs.writeFile(path.join(other, 'review/corrections/good-2.png'), encodeIndexedPng(new Uint8Array(32 * 24), 32, 24));
      // label quality: low for the bad mask, high for two good ones; good-3 not scored
      await fs.writeFile(path.join(other, 'review/label_quality.csv'), [
        'id,label_quality,self_confidence,labelled_pixels,fold,seeds,recipe', 'bad,0.05,0.2,384,0,1,r', 'good-2,0.8,0.9,768,1,1,r', 'good-1,0.9,0.95,768,0,1,r',
      ].join('\n'));
      const r = await runAudit({ params, path: (rel) => path.resolve(other, rel) });
      const images = await readAll(path.join(other, 'cache/audit_images.arrow'), { stage: 'audit' });
      const by = new Map(images.map((x) => [x.id as string, x]));
      expect(['bad', 'good-1', 'good-2', 'good-3'].map((id) => [by.get(id)?.label_quality, by.get(id)?.corrected])).toEqual([
        [expect.closeTo(0.05, 6), false], [expect.closeTo(0.9, 6), false], [expect.closeTo(0.8, 6), true], [null, false],
      ]);
      expect(by.get('bad')?.label_confidence).toBeCloseTo(0.2, 6);
      // the suspicion ranking is kept (rank by suspicion); the label quality's figures on the 3 GT images
      expect(images[0].id).toBe('bad');
      // its figures over the 3 images with both (good-3 has no GT): the top 20 = all, 1 bad of 3
      expect(r.metrics.gt?.label_quality).toMatchObject({ images: 3, precision_at_top: expect.closeTo(1 / 3, 6) });
      expect(r.metrics.gt?.label_quality?.spearman as number).toBeGreaterThan(0.5);
      expect(formatAudit(auditOutput(r))).toMatch(/out-of-fold label quality \(low = suspect\) on 3 images: Spearman 0\.\d{3}, bad masks 33\.3% of its top 3/);
      const data = await fs.readFile(path.join(other, 'reports/audit/data.js'), 'utf8');
      const A = JSON.parse(data.slice('window.AUDIT = '.length).trim().replace(/;$/, '')) as { images: unknown[][]; imageFields: string[]; overview: { labelQualityImages: number; corrected: number; ranking: string } };
      const row = A.images.find((x) => x[A.imageFields.indexOf('id')] === 'good-2')!;
      expect([row[A.imageFields.indexOf('label_quality')], row[A.imageFields.indexOf('corrected')]]).toEqual([0.8, true]);
      expect(A.overview).toMatchObject({ labelQualityImages: 3, corrected: 1, ranking: expect.stringMatching(/suspicion/) });
      // a corrected mask named after no image of the dataset is an error naming the file
      await fs.writeFile(path.join(other, 'review/corrections/nope.png'), encodeIndexedPng(new Uint8Array(4), 2, 2));
      await expect(runAudit({ params, path: (rel) => path.resolve(other, rel) })).rejects.toThrow(/nope\.png/);
    } finally {
      await fs.rm(other, { recursive: true, force: true });
    }
  });
});
