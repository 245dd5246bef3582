/**
 * End to end through the real dvc.yaml cmds: synth -> ingest -> cam on a tiny synthetic set,
 * then the runner's skip / retrain behaviour for the cam stage.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAll } from '../../pipeline/arrow.js';
import { repro } from '../../cli/dag.js';
import { writeOverrides } from '../../stages/params.js';
import { createWorkspace } from '../../cli/workspace.js';
import { expectFloorAboveBaseline, expectScore, trivialBaseline } from '../helpers/quality.js';

// Quality floors (fractions, as in the metrics file): measured on this test's tiny config, minus a margin of
// 0.05 (rounded down to 0.01) for float differences between CPUs and thread counts. Measured cam 0.3443;
// trivial baseline (background everywhere, test/helpers/quality.ts) on the same 24 train images 0.1807: the
// floor must stay ABOVE_BASELINE over it (1 epoch on 16 images scored 0.1694, below it).
const FLOOR = { cam: 0.29 };
const ABOVE_BASELINE = 0.05;

let root: string;

beforeAll(async () => {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-e2e-cam-'));
  root = await createWorkspace(path.join(tmp, 'ws'), [
    'synth.images=32', 'synth.size=48', 'ingest.size=32',
    'cam.width=8', 'cam.epochs=20', 'cam.lr=0.01', 'cam.batch_size=4', 'cam.crop=32', 'cam.scales=[1.0]',
  ]);
});
afterAll(async () => {
  await fs.rm(path.dirname(root), { recursive: true, force: true });
});

describe('cam end to end', () => {
  it('repro runs synth, ingest, cam_train and cam and writes every declared output', async () => {
    const r = await repro(root, { target: 'cam' });
    expect(r.ok).toBe(true);
    expect(r.stages.map((s) => [s.name, s.action])).toEqual([['synth', 'ran'], ['ingest', 'ran'], ['cam_train', 'ran'], ['cam', 'ran']]);
    const cams = await readAll(path.join(root, 'cache/cams.arrow'), { stage: 'cam' });
    expect(cams).toHaveLength(32);
    const metrics = JSON.parse(await fs.readFile(path.join(root, 'metrics/cam.json'), 'utf8'));
    expect(JSON.parse(await fs.readFile(path.join(root, 'metrics/cam_train.json'), 'utf8')).epochs).toBe(20);
    expect(metrics.cam.images).toBe(cams.filter((c) => c.split === 'train').length);
    expectScore('cam e2e: cam.miou', metrics.cam.miou, FLOOR.cam);
    const baseline = await trivialBaseline(root, cams.filter((c) => c.split === 'train').map((c) => c.id as string));
    expectFloorAboveBaseline('cam e2e: cam.miou', FLOOR.cam, baseline, ABOVE_BASELINE);
    expect(metrics.classification.train.images).toBeGreaterThan(0);
    expect(metrics.classification.val.images).toBeGreaterThan(0);
    const plot = JSON.parse(await fs.readFile(path.join(root, 'plots/cam_threshold.json'), 'utf8'));
    expect(plot).toHaveLength(12);
    for (const f of ['config.json', 'weights/manifest.json']) {
      await expect(fs.access(path.join(root, 'models/cam', f))).resolves.toBeUndefined();
    }
    expect((await fs.readdir(path.join(root, 'models/cam'))).sort()).toEqual(['config.json', 'weights']);
    await expect(fs.access(path.join(root, '.tagseg/checkpoints/cam_train'))).rejects.toThrow(); // finished: no resumable state
  });

  it('a second repro skips cam; more epochs rerun cam_train and cam and train exactly that many from scratch', async () => {
    const again = await repro(root, { target: 'cam' });
    expect(again.stages.map((s) => s.action)).toEqual(['skipped', 'skipped', 'skipped', 'skipped']);
    await writeOverrides(path.join(root, 'params.yaml'), ['cam.epochs=21']);
    const rerun = await repro(root, { target: 'cam' });
    expect(rerun.stages.map((s) => [s.name, s.action])).toEqual([['synth', 'skipped'], ['ingest', 'skipped'], ['cam_train', 'ran'], ['cam', 'ran']]);
    const metrics = JSON.parse(await fs.readFile(path.join(root, 'metrics/cam_train.json'), 'utf8'));
    expect(metrics.epochs).toBe(21);
    expect(JSON.parse(await fs.readFile(path.join(root, 'plots/cam_loss.json'), 'utf8'))).toHaveLength(21); // the loss per epoch is a plot
    const config = JSON.parse(await fs.readFile(path.join(root, 'models/cam/config.json'), 'utf8'));
    expect(config.epochs).toBe(21);
    await expect(fs.access(path.join(root, '.tagseg/checkpoints/cam_train'))).rejects.toThrow();
    // repro -f retrains (no persisted checkpoint to resume), to the same bytes
    const weights = await fs.readFile(path.join(root, 'models/cam/weights/weights.bin'));
    const lossPlot = await fs.readFile(path.join(root, 'plots/cam_loss.json'), 'utf8');
    const forced = await repro(root, { target: 'cam_train', force: true, single: true });
    expect(forced.stages.map((s) => [s.name, s.action])).toEqual([['cam_train', 'ran']]);
    expect(await fs.readFile(path.join(root, 'plots/cam_loss.json'), 'utf8')).toBe(lossPlot); // the losses per epoch
    expect((await fs.readFile(path.join(root, 'models/cam/weights/weights.bin'))).equals(weights)).toBe(true);
  });
});
