/**
 * End to end through the real dvc.yaml cmds: synth -> ingest -> cam -> affinity -> contrast on a
 * tiny synthetic set; contrast_cams.arrow has cams.arrow's rows and columns plus `propagated`.
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
// random_walk 0.3048, rca 0.3391, rca_random_walk 0.2924; trivial baseline (background everywhere,
// test/helpers/quality.ts) on the same 24 train images 0.1807: the floors must stay ABOVE_BASELINE over it.
const FLOOR = { cam: 0.29, random_walk: 0.25, rca: 0.28, rca_random_walk: 0.24 };
const ABOVE_BASELINE = 0.05;

let root: string;

beforeAll(async () => {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-e2e-contrast-'));
  root = await createWorkspace(path.join(tmp, 'ws'), [
    'synth.images=32', 'synth.size=48', 'ingest.size=32',
    'cam.width=8', 'cam.epochs=20', 'cam.lr=0.01', 'cam.batch_size=4', 'cam.crop=32', 'cam.scales=[1.0]',
    'affinity.epochs=3', 'affinity.radius=3', 'affinity.batch_size=4', 'affinity.crop=32', 'affinity.dim=16', 'affinity.logt=4',
    'contrast.epochs=2', 'contrast.batch_size=4', 'contrast.crop=32', 'contrast.scales=[1.0]', 'contrast.memory_size=8',
    'contrast.centroids=2', 'contrast.dim=8', 'contrast.contrast_from=1',
  ]);
});
afterAll(async () => {
  await fs.rm(path.dirname(root), { recursive: true, force: true });
});

describe('contrast end to end', () => {
  it('repro runs the chain up to contrast and writes every declared output', async () => {
    const r = await repro(root, { target: 'contrast' });
    expect(r.ok).toBe(true);
    expect(r.stages.map((s) => s.name)).toEqual(['synth', 'ingest', 'cam_train', 'cam', 'affinity_train', 'affinity', 'contrast_train', 'contrast']);
    const cams = await readAll(path.join(root, 'cache/cams.arrow'), { stage: 'cam' });
    const rca = await readAll(path.join(root, 'cache/contrast_cams.arrow'), { stage: 'contrast' });
    expect(rca.map((x) => [x.id, x.split, x.tags, x.height, x.width, x.image_height, x.image_width]))
      .toEqual(cams.map((x) => [x.id, x.split, x.tags, x.height, x.width, x.image_height, x.image_width]));
    rca.forEach((x, i) => {
      expect((x.cams as Uint8Array).byteLength).toBe((cams[i].cams as Uint8Array).byteLength);
      expect((x.propagated as Uint8Array).byteLength).toBe((cams[i].cams as Uint8Array).byteLength);
    });
    const info = await readInfo(path.join(root, 'cache/contrast_cams.arrow'));
    expect(info.meta.stage).toBe('contrast');
    expect(info.meta.extra).toMatchObject({ stride: 4, background: 0, radius: 3, dtype: 'float16' });
    const m = JSON.parse(await fs.readFile(path.join(root, 'metrics/contrast.json'), 'utf8'));
    for (const k of ['cam', 'random_walk', 'rca', 'rca_random_walk']) {
      expectScore(`contrast e2e: ${k}.miou`, m[k].miou, FLOOR[k as keyof typeof FLOOR]);
      expect(m[k].images).toBe(cams.filter((c) => c.split === 'train').length);
    }
    const baseline = await trivialBaseline(root, cams.filter((c) => c.split === 'train').map((c) => c.id as string));
    for (const k of Object.keys(FLOOR) as (keyof typeof FLOOR)[]) expectFloorAboveBaseline(`contrast e2e: ${k}.miou`, FLOOR[k], baseline, ABOVE_BASELINE);
    // the cam and random-walk figures are the ones their own stages report
    const aff = JSON.parse(await fs.readFile(path.join(root, 'metrics/affinity.json'), 'utf8'));
    expect(m.cam.miou).toBe(aff.cam.miou);
    expect(m.random_walk.miou).toBe(aff.random_walk.miou);
    for (const f of ['config.json', 'weights/manifest.json']) {
      await expect(fs.access(path.join(root, 'models/contrast', f))).resolves.toBeUndefined();
    }
    // A finished training keeps no resumable state (nn/checkpoint.ts: it lives under .tagseg/checkpoints until then).
    expect((await fs.readdir(path.join(root, 'models/contrast'))).sort()).toEqual(['config.json', 'weights']);
    await expect(fs.access(path.join(root, '.tagseg/checkpoints/contrast_train'))).rejects.toThrow();
    // a second repro skips contrast: its outputs are stable (other people editing the linked code
    // folders meanwhile may make it rerun for `dep changed` on code only, never for its outputs)
    const again = await repro(root, { target: 'contrast' });
    const st = again.stages.find((s) => s.name === 'contrast');
    if (st?.action !== 'skipped') expect(st?.reasons.filter((r) => !/^dep changed: (eval|nn|ops|pipeline|stages\/)/.test(r))).toEqual([]);
  }, 300_000);
});
