/**
 * The whole DAG on a tiny synthetic workspace: `repro` with no target runs every dvc.yaml stage
 * (synth -> ingest -> cam -> affinity -> contrast -> refine -> segment -> ...) through their
 * real cmds, every declared output exists, and a second repro skips them all. Every pipeline stage
 * must be registered (stages/index.ts): a missing one fails, it is not skipped.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAll, readInfo } from '../../pipeline/arrow.js';
import { ARTIFACTS, type Artifact } from '../../pipeline/artifacts.js';
import { repro } from '../../cli/dag.js';
import { loadParams } from '../../stages/params.js';
import { createWorkspace } from '../../cli/workspace.js';
import { STAGE_NAMES, loadStages } from '../../stages/index.js';
import { expectFloorAboveBaseline, expectScore, trivialBaseline } from '../helpers/quality.js';
import { declaredColumns, shape } from '../helpers/schema.js';

// Quality floors (fractions, as in metrics/segment.json's chain): measured on this test's tiny config, minus
// 0.05 (rounded down to 0.01) for float differences between CPUs and thread counts. Measured: cam 0.3447,
// random_walk 0.3062, rca 0.3470, rca_random_walk 0.3080, pseudo_masks (train) 0.3889, pseudo_masks (val)
// 0.2973, segmentation 0.3019. Trivial baselines (test/helpers/quality.ts) on the same images: background
// everywhere 0.1807 (train split, 24 images) and 0.1794 (validation carve, 5 images); every floor must stay
// ABOVE_BASELINE over them, so a pipeline that learnt nothing fails.
const CHAIN_FLOOR: [string, number][] = [
  ['cam', 0.29], ['random_walk', 0.25], ['rca', 0.29], ['rca_random_walk', 0.25], ['pseudo_masks', 0.33], ['pseudo_masks', 0.24], ['segmentation', 0.25],
];
const ABOVE_BASELINE = 0.05;

const PIPELINE = ['ingest', 'cam_train', 'cam', 'affinity_train', 'affinity', 'contrast_train', 'contrast', 'refine', 'segment'];

/**
 * Small settings for every stage that has a network; other stages keep their defaults. Enough images and
 * epochs that every chain row learns something (1 epoch on 16 images scored below the trivial baselines).
 */
const TINY = [
  'synth.images=32', 'synth.size=48', 'ingest.size=32',
  'cam.width=8', 'cam.epochs=20', 'cam.lr=0.01', 'cam.batch_size=4', 'cam.crop=32', 'cam.scales=[1.0]',
  'affinity.epochs=3', 'affinity.radius=3', 'affinity.batch_size=4', 'affinity.crop=32', 'affinity.dim=16', 'affinity.logt=4',
  'contrast.epochs=8', 'contrast.batch_size=4', 'contrast.crop=32', 'contrast.scales=[1.0]', 'contrast.memory_size=16', 'contrast.dim=16',
  'segment.epochs=24', 'segment.lr=0.005', 'segment.batch_size=4', 'segment.crop=32', 'segment.head_dim=32', 'segment.val_fraction=0.3',
];

/** [dotted key, value] of every non-object value of a JSON value (as `dvc metrics show` flattens it). */
function leavesOf(v: unknown, prefix = ''): [string, unknown][] {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return [[prefix, v]];
  return Object.entries(v).flatMap(([k, x]) => leavesOf(x, prefix ? `${prefix}.${k}` : k));
}

let root: string;
beforeAll(async () => {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-e2e-pipeline-'));
  root = await createWorkspace(path.join(tmp, 'ws'), TINY);
});
afterAll(async () => {
  if (root) await fs.rm(path.dirname(root), { recursive: true, force: true });
});

describe('the whole pipeline end to end', () => {
  it('every pipeline stage is registered', () => {
    for (const s of PIPELINE) expect(STAGE_NAMES, `stage '${s}' in stages/index.ts`).toContain(s);
  });

  it('repro runs every stage once, writes every declared output, then has nothing left to do', async () => {
    const r = await repro(root);
    expect(r.failed?.message).toBeUndefined();
    const ran = r.stages.map((s) => s.name);
    for (const s of PIPELINE) expect(ran).toContain(s);
    expect(r.stages.every((s) => s.action === 'ran')).toBe(true);
    const params = await loadParams(path.join(root, 'params.yaml'));
    for (const s of await loadStages()) {
      const io = s.io(params);
      for (const f of [...io.writes, ...io.metrics, ...io.plots]) await expect(fs.access(path.join(root, f)), `${s.name}: ${f}`).resolves.toBeUndefined();
    }
    // `dvc metrics show`: a handful of scalars per stage, no lists, no run statistics; plots are rows.
    for (const s of await loadStages()) {
      for (const f of s.io(params).metrics) {
        const leaves = leavesOf(JSON.parse(await fs.readFile(path.join(root, f), 'utf8')));
        expect(leaves.length, f).toBeLessThanOrEqual(40);
        // Lists are not figures: only ingest keeps two short ones (class names, skipped items).
        const lists = f === 'metrics/ingest.json' ? ['classes', 'skippedItems'] : [];
        expect(leaves.filter(([k, v]) => Array.isArray(v) && !lists.includes(k)).map(([k]) => k), f).toEqual([]);
        expect(leaves.map(([k]) => k).filter((k) => /second|rss|thread|concurrency/i.test(k)), f).toEqual([]);
      }
      for (const f of s.io(params).plots) {
        const rows = JSON.parse(await fs.readFile(path.join(root, f), 'utf8')) as unknown;
        expect(Array.isArray(rows) && rows.length > 0, f).toBe(true);
      }
      await expect(fs.access(path.join(root, '.tagseg/runs', `${s.name}.json`)), `${s.name}: run log`).resolves.toBeUndefined();
    }
    const seg = JSON.parse(await fs.readFile(path.join(root, 'metrics/segment.json'), 'utf8'));
    const steps = Object.keys(seg.chain); // step -> figures, in chain order
    expect(steps[0]).toBe('cam');
    expect(steps.at(-1)).toBe('segmentation');
    // step -> figures; a step's second row (pseudo_masks on val) is keyed `<step>_<split>`
    const chain = Object.entries(seg.chain as Record<string, { miou: number; split: string; images: number }>).map(([key, c]) => ({ ...c, step: key.replace(/_(train|val)$/, '') }));
    expect(chain.map((c) => c.step)).toEqual(CHAIN_FLOOR.map(([step]) => step));
    // The train rows score dataset.train_split, the val rows segment's validation carve (val_ids.txt).
    const trainIds = (await readAll(path.join(root, 'cache/dataset.arrow'))).filter((x) => x.split === params.dataset.train_split).map((x) => x.id as string);
    const valIds = (await fs.readFile(path.join(root, 'models/segment/val_ids.txt'), 'utf8')).split('\n').filter(Boolean);
    const baseline = { train: await trivialBaseline(root, trainIds), val: await trivialBaseline(root, valIds) };
    chain.forEach((c, i) => {
      const label = `pipeline e2e: chain ${c.step} (${c.split})`;
      const b = baseline[c.split as keyof typeof baseline];
      expect(c.images, label).toBe(b.images);
      expectScore(label, c.miou, CHAIN_FLOOR[i][1]);
      expectFloorAboveBaseline(label, CHAIN_FLOOR[i][1], b, ABOVE_BASELINE);
    });
    expect(seg.val.miou).toBe(chain.at(-1)!.miou);
    // every table's columns are the ones its artifact's schema declares (pipeline/artifacts.ts)
    for (const a of Object.values(ARTIFACTS as Record<string, Artifact>).filter((x) => x.kind === 'table')) {
      const info = await readInfo(path.join(root, a.path));
      const dtype = typeof info.meta.extra?.dtype === 'string' ? info.meta.extra.dtype : undefined;
      expect(shape(info.columns), a.path).toEqual(shape(await declaredColumns(a, dtype)));
    }
    const again = await repro(root);
    expect(again.ran).toEqual([]);
  }, 300_000);
});
