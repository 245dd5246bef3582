/**
 * tagseg export on the hand-made audit (audit_fixtures.ts): selection, the relabel list, and the
 * FiftyOne / CVAT layouts checked against their documentation:
 * - FiftyOne ImageSegmentationDirectory (fiftyone.types; its importer pairs data/<name>.<ext>
 *   with labels/<name>.png by file stem and reads masks with OpenCV IMREAD_UNCHANGED, so the
 *   masks must be 1-channel class indices);
 * - CVAT "Segmentation mask 1.1" (docs.cvat.ai, format-smask): a zip with labelmap.txt
 *   (`# label:color_rgb:parts:actions`, lines `name:r,g,b::`), ImageSets/Segmentation/default.txt
 *   (names without extension), SegmentationClass/<name>.png whose colours are the labelmap's.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { decode as decodePng } from 'fast-png';
import { unzipSync, strFromU8 } from 'fflate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { classPalette, decodeIndexedPng } from '../../data/palette.js';
import { parseCsv } from '../../data/manifest.js';
import { writeDecisions } from '../../data/review.js';
import { readAll } from '../../pipeline/arrow.js';
import { setQuiet } from '../../pipeline/log.js';
import { defaultParams } from '../../stages/params.js';
import { cvatFiles, cvatLabelmap, exportCvat, exportFiftyOne, exportRelabel, loadReviewProject, selectItems } from '../../stages/audit/export.js';
import { PngExport } from '../../data/mask_png.js';
import { FIX, runAudit, writeAuditFixture } from './audit_fixtures.js';

let root: string;
const masks = new Map<string, Uint8Array>();

beforeAll(async () => {
  setQuiet(true);
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-export-'));
  await writeAuditFixture(root);
  await runAudit({ params: defaultParams(), path: (rel) => path.resolve(root, rel) });
  // outputs/pseudo_masks as refine writes it
  const png = await PngExport.open(path.join(root, 'outputs/pseudo_masks'), classPalette(FIX.background));
  for (const r of await readAll(path.join(root, 'cache/pseudo_masks.arrow'))) {
    masks.set(r.id as string, r.mask as Uint8Array);
    await png.write(r.id as string, r.mask as Uint8Array, r.width as number, r.height as number);
  }
  await png.commit();
  await writeDecisions(path.join(root, 'review/decisions.csv'), [
    { id: 'bad', decision: 'relabel', class: '', note: '' },
    { id: 'good-2', decision: 'reject', class: 'dog', note: 'half, "maybe"' },
    { id: 'good-1', decision: 'accept', class: '', note: '' },
  ]);
});
afterAll(async () => { await fs.rm(root, { recursive: true, force: true }); });

describe('selection', () => {
  it('by decision (image or class), split, suspicion and top k, in rank order', async () => {
    const p = await loadReviewProject(root);
    expect(p.items.map((i) => i.id)).toEqual(['bad', 'good-3', 'good-2', 'good-1']);
    expect(selectItems(p, { decisions: ['relabel', 'reject'] }).map((i) => i.id)).toEqual(['bad', 'good-2']);
    expect(selectItems(p, { decisions: ['accept'] }).map((i) => i.id)).toEqual(['good-1']);
    expect(selectItems(p, { top: 2 }).map((i) => i.id)).toEqual(['bad', 'good-3']);
    expect(selectItems(p, { split: 'val' }).map((i) => i.id)).toEqual(['good-3']);
    expect(selectItems(p, { minSuspicion: p.items[0].suspicion }).map((i) => i.id)).toEqual(['bad']);
    // a class: ranked by that class's suspicion (cache/audit.arrow), images without it left out
    expect(selectItems(p, { class: 'dog' }).map((i) => i.id)).toEqual(['bad', 'good-2']);
    expect(p.items.find((i) => i.id === 'bad')!.classSuspicion.get('dog')!).toBeGreaterThan(p.items.find((i) => i.id === 'good-2')!.classSuspicion.get('dog')!);
    expect(() => selectItems(p, { decisions: ['maybe'] })).toThrow(/not one of accept, reject, relabel/);
    expect(() => selectItems(p, { class: 'horse' })).toThrow(/--class 'horse' is not a class/);
  });
});

describe('relabel list', () => {
  it('has the documented columns, real paths, and the decisions', async () => {
    const p = await loadReviewProject(root);
    const out = path.join(root, 'review/relabel.csv');
    expect(await exportRelabel(selectItems(p, { decisions: ['relabel', 'reject'] }), out)).toBe(2);
    const rows = parseCsv(await fs.readFile(out, 'utf8'), out).map((r) => r.cells);
    expect(rows[0]).toEqual(['id', 'image_path', 'pseudo_mask_path', 'suspicion', 'reasons', 'decision']);
    expect(rows.slice(1).map((r) => [r[0], r[4], r[5]])).toEqual([['bad', 'empty_tags|low_confidence|disagreement', 'relabel'], ['good-2', expect.any(String), 'reject:dog']]);
    for (const r of rows.slice(1)) {
      await fs.access(r[1]);
      expect(Array.from(decodeIndexedPng(await fs.readFile(r[2]), r[2]).data)).toEqual(Array.from(masks.get(r[0])!));
      expect(Number(r[3])).toBeGreaterThan(0);
    }
  });
});

describe('FiftyOne ImageSegmentationDirectory', () => {
  it('data/ and labels/ pair by stem; labels are 1-channel class indices equal to the pseudo-masks', async () => {
    const p = await loadReviewProject(root);
    const out = path.join(root, 'export/fiftyone');
    await exportFiftyOne(p, selectItems(p, { top: 3 }), out);
    expect((await fs.readdir(out)).sort()).toEqual(['data', 'labels', 'mask_targets.json']);
    const data = (await fs.readdir(path.join(out, 'data'))).sort();
    const labels = (await fs.readdir(path.join(out, 'labels'))).sort();
    expect(data).toEqual(['bad.png', 'good-2.png', 'good-3.png']);
    expect(labels.map((f) => f.replace(/\.png$/, ''))).toEqual(data.map((f) => f.replace(/\.[^.]+$/, '')));
    for (const f of labels) {
      const png = decodePng(await fs.readFile(path.join(out, 'labels', f)));
      expect([png.channels, png.depth, png.palette]).toEqual([1, 8, undefined]);
      expect(Array.from(png.data)).toEqual(Array.from(masks.get(f.slice(0, -4))!));
    }
    expect(Buffer.compare(await fs.readFile(path.join(out, 'data/bad.png')), await fs.readFile(path.join(root, 'images/bad.png')))).toBe(0);
    expect(JSON.parse(await fs.readFile(path.join(out, 'mask_targets.json'), 'utf8'))).toEqual({ 0: 'background', 1: 'cat', 2: 'dog', 255: 'ignore' });
    // a second export replaces the folder whole (no stale sample)
    await exportFiftyOne(p, selectItems(p, { top: 1 }), out);
    expect(await fs.readdir(path.join(out, 'labels'))).toEqual(['bad.png']);
  });
});

describe('CVAT Segmentation mask 1.1', () => {
  it('zip layout, labelmap, default.txt, and class masks whose colours map back to the pseudo-masks', async () => {
    const p = await loadReviewProject(root);
    const out = path.join(root, 'export/cvat.zip');
    const sel = selectItems(p, { decisions: ['relabel', 'reject'] });
    await exportCvat(p, sel, out);
    const zip = unzipSync(new Uint8Array(await fs.readFile(out)));
    expect(Object.keys(zip).sort()).toEqual([
      'ImageSets/Segmentation/default.txt', 'JPEGImages/bad.png', 'JPEGImages/good-2.png', 'SegmentationClass/bad.png', 'SegmentationClass/good-2.png', 'labelmap.txt',
    ]);
    const lm = strFromU8(zip['labelmap.txt']).trimEnd().split('\n');
    expect(lm[0]).toBe('# label:color_rgb:parts:actions');
    expect(lm.slice(1)).toEqual(['background:0,0,0::', 'cat:128,0,0::', 'dog:0,128,0::']);
    for (const l of lm.slice(1)) expect(l).toMatch(/^[^:]+:\d{1,3},\d{1,3},\d{1,3}::$/);
    expect(strFromU8(zip['ImageSets/Segmentation/default.txt'])).toBe('bad\ngood-2\n');
    const colourToClass = new Map(lm.slice(1).map((l) => [l.split(':')[1], l.split(':')[0]]));
    for (const it of sel) {
      const png = decodePng(zip[`SegmentationClass/${it.id}.png`]);
      expect([png.width, png.height, png.channels]).toEqual([FIX.W, FIX.H, 3]);
      const m = masks.get(it.id)!;
      for (let i = 0; i < m.length; i++) {
        const name = colourToClass.get(Array.from(png.data.subarray(3 * i, 3 * i + 3)).join(','));
        // ignore pixels are written as not annotated (black = background here)
        expect(name).toBe(m[i] === 255 ? 'background' : FIX.classes[m[i]]);
      }
    }
    // same selection, same bytes
    const again = path.join(root, 'export/cvat2.zip');
    await exportCvat(p, sel, again);
    expect(Buffer.compare(await fs.readFile(out), await fs.readFile(again))).toBe(0);
  });

  it('a dataset without a background class gets a black background line and no black class', () => {
    const lm = cvatLabelmap(['building', 'grass', 'tree'], null).text.trimEnd().split('\n');
    expect(lm).toEqual(['# label:color_rgb:parts:actions', 'background:0,0,0::', 'building:128,0,0::', 'grass:0,128,0::', 'tree:128,128,0::']);
    expect(() => cvatLabelmap(['a:b'], null)).toThrow(/labelmap\.txt cannot hold/);
  });

  it('fails naming the pseudo-mask when refine has not written it', async () => {
    const p = await loadReviewProject(root);
    const it = { ...p.items[0], pseudoMaskPath: path.join(root, 'outputs/pseudo_masks/missing.png') };
    await expect(cvatFiles(p, [it])).rejects.toThrow(/missing\.png: pseudo-mask not found/);
  });
});

describe('the CLI (tagseg review / tagseg export)', () => {
  const cli = (...args: string[]) => promisify(execFile)(process.execPath, [path.resolve('bin/tagseg.js'), '--root', root, ...args]);

  it('records a decision, lists it, and exports the selection it makes', async () => {
    await cli('review', 'set', 'good-3', 'relabel', '--class', 'cat', '--note', 'ear, "left"');
    const list = JSON.parse((await cli('review', 'list', '--json')).stdout) as { id: string; decision: string; class: string; note: string }[];
    expect(list.find((r) => r.id === 'good-3')).toEqual({ id: 'good-3', decision: 'relabel', class: 'cat', note: 'ear, "left"' });
    const r = JSON.parse((await cli('export', 'cvat', '--out', 'export/cli.zip', '--decision', 'relabel', '--json')).stdout) as { images: number; ids: string[] };
    expect(r).toMatchObject({ images: 2, ids: ['bad', 'good-3'] });
    const zip = unzipSync(new Uint8Array(await fs.readFile(path.join(root, 'export/cli.zip'))));
    expect(strFromU8(zip['ImageSets/Segmentation/default.txt'])).toBe('bad\ngood-3\n');
    await expect(cli('export', 'cvat', '--out', 'x.zip', '--decision', 'maybe')).rejects.toThrow(/--decision 'maybe' is not one of/);
    await expect(cli('review', 'set', 'ghost', 'accept')).rejects.toThrow(/image 'ghost' is not in the dataset/);
  }, 60_000);
});
