/**
 * The contrast stage on a tiny synthetic workspace (12 images, 32 px): tensor count flat across
 * epochs (memory included), everything freed, more epochs resume, and a killed run resumed from
 * its checkpoint (weights, optimizer and memory queues) ends exactly where an uninterrupted run does.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAll } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { repro } from '../../cli/dag.js';
import { setQuiet } from '../../pipeline/log.js';
import { loadParams } from '../../stages/params.js';
import { createWorkspace } from '../../cli/workspace.js';
import { type ContrastRunResult, runContrast } from '../../stages/contrast/index.js';
import { runContrastTrain } from '../../stages/contrast/train_stage.js';

describe('contrast stage (tiny)', () => {
  let root: string;
  const TINY = [
    'synth.images=12', 'synth.size=32', 'ingest.size=32', 'cam.width=8', 'cam.epochs=1', 'cam.batch_size=4', 'cam.crop=32', 'cam.scales=[1.0]',
    'affinity.epochs=1', 'affinity.radius=3', 'affinity.batch_size=4', 'affinity.crop=32', 'affinity.dim=16', 'affinity.logt=3',
    'contrast.batch_size=4', 'contrast.crop=32', 'contrast.scales=[1.0]', 'contrast.memory_size=8', 'contrast.centroids=2',
    'contrast.dim=8', 'contrast.contrast_from=1', 'contrast.enqueue_prob=0',
  ];
  beforeAll(async () => {
    setQuiet(true);
    await initBackend();
    const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-contrast-'));
    root = await createWorkspace(path.join(tmp, 'ws'), TINY);
    const r = await repro(root, { target: 'affinity' });
    expect(r.ok).toBe(true);
  }, 300_000);
  afterAll(async () => {
    await fs.rm(path.dirname(root), { recursive: true, force: true });
  });
  /** contrast_train, then (when the training finished; else no rows) the contrast map stage: what `repro` runs. */
  const run = async (overrides: string[], stopAfter?: number) => {
    const params = await loadParams(path.join(root, 'params.yaml'), overrides);
    const at = (rel: string) => path.join(root, rel);
    const trained = await runContrastTrain({ params, path: at, stopAfter });
    return { ...trained, ...(trained.epochs < params.contrast.epochs ? ({ rows: 0 } as Partial<ContrastRunResult>) : await runContrast({ params, path: at })) };
  };

  it('trains with a flat tensor count (memory included), frees everything, writes every row, and leaves no training state', async () => {
    const before = tf.memory().numTensors;
    const r = await run(['contrast.epochs=3']);
    expect(r.training.tensorsAfterEpoch).toHaveLength(3);
    // flat from the first epoch with the contrast term on (contrast_from 1): AdamW creates the
    // projection head's slots at its first gradient; the memory is allocated up front
    expect(new Set(r.training.tensorsAfterEpoch.slice(1)).size).toBe(1);
    expect(r.training.tensorsAfterEpoch[1] - r.training.tensorsAfterEpoch[0]).toBeLessThanOrEqual(8); // 2 slots x 4 projection variables
    expect(tf.memory().numTensors).toBe(before);
    expect(r.training.losses.every(Number.isFinite)).toBe(true);
    // enqueue_prob 0: every tagged region goes into the memory; the contrast term runs from epoch 1
    expect(r.training.enqueued.every((n) => n > 0)).toBe(true);
    expect(r.training.contrastLosses[0]).toBe(0);
    expect(r.training.contrastLosses[2]).toBeGreaterThan(0);
    expect(Math.max(...r.training.filled)).toBe(8);
    expect(r.rows).toBe(12);
    const rows = await readAll(path.join(root, 'cache/contrast_cams.arrow'), { stage: 'contrast' });
    expect(rows).toHaveLength(12);
    for (const row of rows) expect((row.propagated as Uint8Array).byteLength).toBe((row.cams as Uint8Array).byteLength);
    await expect(fs.access(path.join(root, '.tagseg/checkpoints/contrast_train'))).rejects.toThrow();
  }, 180_000);

  it('a killed run resumed from its checkpoint ends where an uninterrupted run does', async () => {
    const o = ['contrast.epochs=3', 'contrast.lr=0.0004'];
    const cut = await run(o, 2);
    expect(cut.training.epochs).toBe(2);
    expect(cut.rows).toBe(0);
    const resumed = await run(o);
    expect(resumed.training.resumedFrom).toBe(2);
    const weights = () => fs.readFile(path.join(root, 'models/contrast/weights/weights.bin'));
    const resumedWeights = await weights();
    const straight = await run(o); // the finished run left no state: from scratch
    expect(await weights()).toEqual(resumedWeights);
    expect(straight.training.resumedFrom).toBe(0);
    expect(resumed.training.losses).toEqual(straight.training.losses);
    expect(resumed.rca!.miou).toBe(straight.rca!.miou);
    expect(resumed.rca_random_walk!.miou).toBe(straight.rca_random_walk!.miou);
  }, 240_000);
});
