import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runTraining } from '../../nn/loop.js';
import { SGD } from '../../nn/optim.js';
import { setQuiet } from '../../pipeline/log.js';
import { initBackend } from '../../pipeline/backend.js';

/** Fit w to the mean of the data (loss (w - x)^2), one item per step. */
function problem(data: number[]) {
  const w = tf.variable(tf.scalar(0), true);
  const opt = new SGD([{ name: 'all', params: new Map([['w', w]]) }], { lr: 0.1, momentum: 0 });
  const seen: number[][] = [];
  const step = (idx: number[]) => {
    seen.push(idx);
    const x = tf.scalar(data[idx[0]]);
    const { value, grads } = opt.computeGradients(() => tf.square(tf.sub(w, x)) as tf.Scalar);
    opt.applyGradients(grads);
    const loss = value.dataSync()[0];
    tf.dispose([x, value, grads[w.name]]);
    return loss;
  };
  return { w, opt, seen, step };
}

describe('runTraining', () => {
  let dir: string;
  beforeAll(async () => {
    setQuiet(true);
    await initBackend();
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'loop-'));
  });
  afterAll(async () => fs.rm(dir, { recursive: true, force: true }));

  it('a killed run resumes with the same order, lr schedule and result as an uninterrupted one', async () => {
    const data = [1, 2, 3, 4, 5];
    const base = { name: 't', size: 5, batchSize: 1, epochs: 3, lr: 0.1, meta: {}, hash: 'h', seed: 7 };
    const a = problem(data);
    const full = await runTraining({ ...base, optimizer: a.opt, variables: new Map([['w', a.w]]), checkpointDir: path.join(dir, 'a'), step: a.step });
    const b = problem(data);
    const first = await runTraining({ ...base, optimizer: b.opt, variables: new Map([['w', b.w]]), checkpointDir: path.join(dir, 'b'), step: b.step, stopAfter: 1 });
    expect(first.epochs).toBe(1);
    const c = problem(data);
    const rest = await runTraining({ ...base, optimizer: c.opt, variables: new Map([['w', c.w]]), checkpointDir: path.join(dir, 'b'), step: c.step });
    expect(rest.resumedFrom).toBe(1);
    expect([...b.seen, ...c.seen]).toEqual(a.seen);
    expect(c.w.dataSync()[0]).toBeCloseTo(a.w.dataSync()[0], 6);
    expect(rest.losses).toEqual(full.losses.map((l) => expect.closeTo(l, 6)));
    tf.dispose([a.w, b.w, c.w]);
  });

  it('a different hash starts over and says why; a non-finite loss stops with the epoch and iteration', async () => {
    const a = problem([1, 2]);
    const r = await runTraining({ name: 't', size: 2, batchSize: 1, epochs: 1, lr: 0.1, meta: {}, hash: 'other', seed: 7, optimizer: a.opt, variables: new Map([['w', a.w]]), checkpointDir: path.join(dir, 'b'), step: a.step });
    expect(r.resumedFrom).toBe(0);
    expect(r.restartReason).toMatch(/hash/);
    await expect(runTraining({ name: 't', size: 2, batchSize: 1, epochs: 1, lr: 0.1, meta: {}, hash: 'x', seed: 7, optimizer: a.opt, variables: new Map([['w', a.w]]), checkpointDir: path.join(dir, 'c'), step: () => Number.NaN }))
      .rejects.toThrow(/loss is NaN at epoch 1, iteration 0/);
    a.w.dispose();
  });
});
