/**
 * End to end on a tiny synthetic workspace: the segment stage through its dvc.yaml cmd (with a
 * hand-made pseudo_masks.arrow in place of the refine stage's, `repro --single`), then the
 * user's path through the real CLI: `tagseg predict` on the validation images' files and
 * `tagseg eval` against the dataset's masks, which must reproduce the stage's own validation
 * mIoU (same images, same inference, both scored at the original resolution).
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeIndexedPng } from '../../data/palette.js';
import { repro } from '../../cli/dag.js';
import { createWorkspace } from '../../cli/workspace.js';
import { writePseudoMasks, writeRefineMetrics } from '../stages/segment_fixtures.js';
import { expectFloorAboveBaseline, expectScore, trivialBaseline } from '../helpers/quality.js';

// Quality floors (fractions, as in the metrics file): measured on this test's tiny config, minus a margin of
// 0.05 (rounded down to 0.01) for float differences between CPUs and thread counts. Measured val mIoU 0.3861
// (pseudo-mask fixtures, 24 epochs); trivial baseline (background everywhere, test/helpers/quality.ts) on the
// same 5 validation images 0.1794: the floor must stay ABOVE_BASELINE over it (2 epochs on 16 images scored
// 0.2856 on 1 image whose baseline was 0.30).
const FLOOR = { val: 0.33 };
const ABOVE_BASELINE = 0.05;

let root: string;

beforeAll(async () => {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-e2e-segment-'));
  root = await createWorkspace(path.join(tmp, 'ws'), [
    'synth.images=32', 'synth.size=48', 'ingest.size=32',
    'cam.width=8', 'cam.epochs=20', 'cam.lr=0.01', 'cam.batch_size=4', 'cam.crop=32', 'cam.scales=[1.0]',
    'segment.epochs=24', 'segment.lr=0.005', 'segment.batch_size=4', 'segment.crop=32', 'segment.head_dim=32', 'segment.val_fraction=0.3', 'segment.scales=[1.0,0.75]',
  ]);
  const r = await repro(root, { target: 'cam' });
  expect(r.ok).toBe(true);
}, 300_000);
afterAll(async () => {
  await fs.rm(path.dirname(root), { recursive: true, force: true });
});

const tagseg = (args: string[]) => execa('node', ['bin/tagseg.js', '-q', ...args], { cwd: root, reject: false });

describe('segment end to end', () => {
  it('trains through dvc.yaml, and predict + eval on the image files reproduce its validation mIoU', async () => {
    // synth 48 px, working size 32: the pseudo-masks (original size) are resized by nearest
    await writePseudoMasks(root, { ignoreRows: 2 });
    await writeRefineMetrics(root);
    const r = await repro(root, { target: 'segment', single: true });
    expect(r.failed?.message).toBeUndefined();
    expect(r.stages.map((s) => [s.name, s.action])).toEqual([['segment', 'ran']]);
    const metrics = JSON.parse(await fs.readFile(path.join(root, 'metrics/segment.json'), 'utf8'));
    expect(metrics.val.images).toBeGreaterThan(0);
    expectScore('segment e2e: val.miou', metrics.val.miou, FLOOR.val);
    expect(Object.keys(metrics.chain)).toContain('segmentation');

    const data = path.join(root, 'datasets/synthetic');
    const out = path.join(root, 'outputs/val_masks');
    const p = await tagseg(['predict', '--model', 'models/segment', '--images', path.join(data, 'JPEGImages'), '--ids', 'models/segment/val_ids.txt', '--out', out, '--json']);
    expect(p.stderr).not.toMatch(/tagseg:/);
    expect(p.exitCode).toBe(0);
    const summary = JSON.parse(p.stdout);
    expect(summary.images).toBe(metrics.val.images);
    expect(summary.scales).toEqual([1, 0.75]);
    expect(summary.crf).toBe(true); // the model's segment.crf (the default: on)
    const plain = await tagseg(['predict', '--model', 'models/segment', '--images', path.join(data, 'JPEGImages'), '--ids', 'models/segment/val_ids.txt', '--out', path.join(root, 'outputs/plain'), '--no-crf', '--json']);
    expect(plain.exitCode).toBe(0);
    expect(JSON.parse(plain.stdout).crf).toBe(false);
    const ids = (await fs.readFile(path.join(root, 'models/segment/val_ids.txt'), 'utf8')).trim().split('\n');
    const baseline = await trivialBaseline(root, ids);
    expect(baseline.images).toBe(metrics.val.images);
    expectFloorAboveBaseline('segment e2e: val.miou', FLOOR.val, baseline, ABOVE_BASELINE);
    const mask = decodeIndexedPng(await fs.readFile(path.join(out, `${ids[0]}.png`)), ids[0]);
    expect([mask.width, mask.height]).toEqual([48, 48]); // the original size, not the working size

    const e = await tagseg(['eval', '--pred', out, '--gt', path.join(data, 'SegmentationClass'), '--classes', 'models/segment/classes.json', '--json']);
    expect(e.exitCode).toBe(0);
    const report = JSON.parse(e.stdout);
    expect(report.images).toBe(ids.length);
    expect(report.miou).toBeCloseTo(metrics.val.miou, 3);
    expect(report.pixel_accuracy).toBeCloseTo(metrics.val.pixel_accuracy, 3);
    expect(JSON.parse(await fs.readFile(path.join(out, 'eval.json'), 'utf8')).miou).toBe(report.miou);

    const human = await tagseg(['eval', '--pred', out, '--gt', path.join(data, 'SegmentationClass'), '--classes', 'models/segment/classes.json', '--out', path.join(root, 'e.json')]);
    expect(human.stdout).toMatch(/mIoU \d+\.\d {2}pixel accuracy/);

    const bad = await tagseg(['predict', '--model', 'models/nope', '--images', path.join(data, 'JPEGImages'), '--out', out]);
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toMatch(/models\/nope\/config\.json: cannot read the segmentation model config/);
  }, 180_000);
});
