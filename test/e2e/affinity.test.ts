/**
 * End to end through the real dvc.yaml cmds: synth -> ingest -> cam -> affinity on a tiny
 * synthetic set; every declared output exists, affinity_cams.arrow has cams.arrow's layout.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAll, readInfo } from '../../pipeline/arrow.js';
import { repro } from '../../cli/dag.js';
import { createWorkspace } from '../../cli/workspace.js';
import { expectFloorAboveBaseline, expectScore, trivialBaseline } from '../helpers/quality.js';

// Quality floors (fractions, as in the metrics file): measured on this test's tiny config, minus a margin of
// 0.05 (rounded down to 0.01) for float differences between CPUs and thread counts. Measured cam 0.3443,
// random_walk 0.3048; trivial baseline (background everywhere, test/helpers/quality.ts) on the same 24 train
// images 0.1807: the floors must stay ABOVE_BASELINE over it (1 CAM epoch on 16 images scored 0.19, at it).
const FLOOR = { cam: 0.29, random_walk: 0.25 };
const ABOVE_BASELINE = 0.05;

let root: string;

beforeAll(async () => {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-e2e-affinity-'));
  root = await createWorkspace(path.join(tmp, 'ws'), [
    'synth.images=32', 'synth.size=48', 'ingest.size=32',
    'cam.width=8', 'cam.epochs=20', 'cam.lr=0.01', 'cam.batch_size=4', 'cam.crop=32', 'cam.scales=[1.0]',
    'affinity.epochs=3', 'affinity.radius=3', 'affinity.batch_size=4', 'affinity.crop=32', 'affinity.dim=16', 'affinity.logt=4',
  ]);
});
afterAll(async () => {
  await fs.rm(path.dirname(root), { recursive: true, force: true });
});

describe('affinity end to end', () => {
  it('repro runs synth, ingest, cam_train, cam, affinity_train and affinity and writes every declared output', async () => {
    const r = await repro(root, { target: 'affinity' });
    expect(r.ok).toBe(true);
    expect(r.stages.map((s) => [s.name, s.action])).toEqual([['synth', 'ran'], ['ingest', 'ran'], ['cam_train', 'ran'], ['cam', 'ran'], ['affinity_train', 'ran'], ['affinity', 'ran']]);
    const cams = await readAll(path.join(root, 'cache/cams.arrow'), { stage: 'cam' });
    const rw = await readAll(path.join(root, 'cache/affinity_cams.arrow'), { stage: 'affinity' });
    expect(rw.map((x) => [x.id, x.split, x.tags, x.height, x.width])).toEqual(cams.map((x) => [x.id, x.split, x.tags, x.height, x.width]));
    rw.forEach((x, i) => expect((x.cams as Uint8Array).byteLength).toBe((cams[i].cams as Uint8Array).byteLength));
    const info = await readInfo(path.join(root, 'cache/affinity_cams.arrow'));
    expect(info.meta.extra).toMatchObject({ stride: 4, background: 0, radius: 3 });
    const metrics = JSON.parse(await fs.readFile(path.join(root, 'metrics/affinity.json'), 'utf8'));
    expect(JSON.parse(await fs.readFile(path.join(root, 'metrics/affinity_train.json'), 'utf8')).epochs).toBe(3);
    expectScore('affinity e2e: cam.miou', metrics.cam.miou, FLOOR.cam);
    expectScore('affinity e2e: random_walk.miou', metrics.random_walk.miou, FLOOR.random_walk);
    expect(metrics.random_walk.images).toBe(cams.filter((c) => c.split === 'train').length);
    const baseline = await trivialBaseline(root, cams.filter((c) => c.split === 'train').map((c) => c.id as string));
    for (const k of ['cam', 'random_walk'] as const) expectFloorAboveBaseline(`affinity e2e: ${k}.miou`, FLOOR[k], baseline, ABOVE_BASELINE);
    for (const f of ['config.json', 'weights/manifest.json']) {
      await expect(fs.access(path.join(root, 'models/affinity', f))).resolves.toBeUndefined();
    }
    // A finished training keeps no resumable state (nn/checkpoint.ts: it lives under .tagseg/checkpoints until then).
    expect((await fs.readdir(path.join(root, 'models/affinity'))).sort()).toEqual(['config.json', 'weights']);
    await expect(fs.access(path.join(root, '.tagseg/checkpoints/affinity_train'))).rejects.toThrow();
  });
});
