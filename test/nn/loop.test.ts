import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finishTraining, runTraining, trainingHash } from '../../nn/loop.js';
import { TagsegError } from '../../pipeline/errors.js';
import { loadParams } from '../../stages/params.js';
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

  const toy = (data: number[], dir: string, hash: string, extra: Partial<Parameters<typeof runTraining>[0]> = {}) => {
    const pr = problem(data);
    const run = runTraining({ name: 't', size: data.length, batchSize: 1, epochs: 3, lr: 0.1, meta: {}, hash, seed: 7, optimizer: pr.opt, variables: new Map([['w', pr.w]]), checkpointDir: dir, step: pr.step, ...extra });
    return run.finally(() => pr.w.dispose());
  };

  it('the store keeps one key: leftovers of killed writes and other keys go at the next run; finishTraining empties it', async () => {
    const store = path.join(dir, 'store');
    await toy([1, 2], store, 'k1', { stopAfter: 1 });
    const key = path.join(store, 'k1');
    expect((await fs.readdir(key)).sort()).toEqual(['epoch-0001', 'latest']);
    // what kills leave: an uncommitted epoch, temp folders and files, in the key and in the store
    await fs.mkdir(path.join(key, 'epoch-0002'));
    await fs.mkdir(path.join(key, '.epoch-0002.0123abcd.tmp'));
    await fs.writeFile(path.join(key, '.latest.89abcdef.tmp'), 'epoch-0002\n');
    await fs.mkdir(path.join(store, '.k1.00000000.tmp'));
    await fs.mkdir(path.join(store, 'k0'));
    const r = await toy([1, 2], store, 'k1', { stopAfter: 1 });
    expect(r.resumedFrom).toBe(1);
    expect(r.restartReason).toMatch(/hash k0 differs from k1/);
    expect(await fs.readdir(store)).toEqual(['k1']);
    expect((await fs.readdir(key)).sort()).toEqual(['epoch-0002', 'latest']);
    await finishTraining(store);
    await expect(fs.access(store)).rejects.toThrow();
  });

  it('a corrupt manifest or pointer is a TagsegError naming the file, never a silent fresh start', async () => {
    const store = path.join(dir, 'corrupt');
    await toy([1, 2], store, 'k', { stopAfter: 1 });
    const manifest = path.join(store, 'k', 'epoch-0001', 'manifest.json');
    const good = await fs.readFile(manifest, 'utf8');
    await fs.writeFile(manifest, good.slice(0, good.length / 2));
    const err = await toy([1, 2], store, 'k').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TagsegError);
    expect((err as Error).message).toContain(manifest);
    expect((err as Error).message).toMatch(/corrupt checkpoint manifest[\s\S]*delete .* to train from scratch/);
    expect(await fs.readFile(manifest, 'utf8')).toBe(good.slice(0, good.length / 2)); // left as it was, for the user to look at
    await fs.writeFile(manifest, good);
    await fs.writeFile(path.join(store, 'k', 'latest'), 'garbage');
    await expect(toy([1, 2], store, 'k')).rejects.toThrow(/latest: corrupt checkpoint pointer/);
    await fs.writeFile(path.join(store, 'k', 'latest'), 'epoch-0009\n');
    await expect(toy([1, 2], store, 'k')).rejects.toThrow(/names epoch-0009, which is missing/);
    await fs.writeFile(path.join(store, 'k', 'latest'), 'epoch-0001\n');
    await expect(toy([1, 2], store, 'k')).resolves.toMatchObject({ resumedFrom: 1, epochs: 3 }); // control: repaired, it resumes
  });

  it('a key that leaves out epochs cannot pass a longer run off as a shorter one: it stops', async () => {
    const store = path.join(dir, 'epochs');
    await toy([1, 2], store, 'same', { stopAfter: 2 });
    await expect(toy([1, 2], store, 'same', { epochs: 1 })).rejects.toThrow(/at epoch 2, beyond this run's 1 epochs/);
  });

  it('epochs is part of the training hash (a run of 8 never resumes one of 12); inference keys are not', async () => {
    const p = await loadParams(path.join(import.meta.dirname, '../../params.yaml'), []);
    const at = (over: Partial<typeof p.cam>) => trainingHash({ ...p, cam: { ...p.cam, ...over } }, 'cam', ['scales'], 'data');
    expect(at({ epochs: 8 })).not.toBe(at({ epochs: 12 }));
    expect(at({ scales: [1] })).toBe(at({ scales: [1, 2] }));
    expect(() => trainingHash(p, 'cam', ['epochs'], 'data')).toThrow(/epochs/);
  });
});
