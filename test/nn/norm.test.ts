import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { Norm, NormUpdates, batchNormTrain, groupCount, groupNorm } from '../../nn/norm.js';
import { ParamStore } from '../../nn/params.js';

beforeAll(async () => {
  await initBackend();
  expect(tf.getBackend()).toBe('tensorflow');
});

const arr = (t: tf.Tensor) => Array.from(t.dataSync());

describe('BatchNorm', () => {
  // x [2,1,1,2]: channel 0 = {1, 3}, channel 1 = {2, 6}.
  // batch mean [2, 4]; biased var [1, 4]; unbiased (n = 2) [2, 8].
  const x = () => tf.tensor4d([1, 2, 3, 6], [2, 1, 1, 2]);

  it('normalises with batch statistics in training mode', () => {
    const store = new ParamStore();
    const bn = new Norm(store, 'bn', 2, { kind: 'batch', eps: 0 });
    const y = bn.apply(x(), true);
    // (x - mean) / sqrt(biased var): channel 0 -> [-1, 1], channel 1 -> [-1, 1]
    expect(arr(y)).toEqual([-1, -1, 1, 1].map((v) => expect.closeTo(v, 5)));
    store.dispose();
  });

  it('updates moving averages only when the recorded updates are applied', () => {
    const store = new ParamStore();
    const bn = new Norm(store, 'bn', 2, { kind: 'batch', momentum: 0.1 });
    const updates = new NormUpdates();
    tf.tidy(() => bn.apply(x(), true, updates));
    expect(updates.size).toBe(1);
    // forward alone does not touch the statistics
    expect(arr(bn.movingMean!)).toEqual([0, 0]);
    expect(arr(bn.movingVariance!)).toEqual([1, 1]);
    updates.apply();
    // mean: 0.9 * 0 + 0.1 * [2, 4]; var: 0.9 * 1 + 0.1 * [2, 8] (unbiased, as torch)
    expect(arr(bn.movingMean!)).toEqual([0.2, 0.4].map((v) => expect.closeTo(v, 6)));
    expect(arr(bn.movingVariance!)).toEqual([1.1, 1.7].map((v) => expect.closeTo(v, 6)));
    expect(updates.size).toBe(0);
    store.dispose();
  });

  it('leaves statistics unchanged without a collector or after dispose, and does not leak', () => {
    const store = new ParamStore();
    const bn = new Norm(store, 'bn', 2, { kind: 'batch' });
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      bn.apply(x(), true);
    });
    const updates = new NormUpdates();
    tf.tidy(() => {
      bn.apply(x(), true, updates);
    });
    expect(tf.memory().numTensors).toBe(before + 2); // the two kept statistics
    updates.dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(arr(bn.movingMean!)).toEqual([0, 0]);
    expect(arr(bn.movingVariance!)).toEqual([1, 1]);
    store.dispose();
  });

  it('uses moving statistics in eval mode, and always when frozen', () => {
    const store = new ParamStore();
    const init = { movingMean: tf.tensor1d([1, 2]), movingVariance: tf.tensor1d([4, 16]) };
    const bn = new Norm(store, 'bn', 2, { kind: 'batch', eps: 0 }, { ...init });
    // (x - [1,2]) / [2,4] = [0, 0, 1, 1]
    expect(arr(bn.apply(x(), false))).toEqual([0, 0, 1, 1].map((v) => expect.closeTo(v, 6)));
    const frozen = new Norm(store, 'fz', 2, { kind: 'frozen', eps: 0 }, { movingMean: tf.tensor1d([1, 2]), movingVariance: tf.tensor1d([4, 16]) });
    const updates = new NormUpdates();
    expect(arr(frozen.apply(x(), true, updates))).toEqual([0, 0, 1, 1].map((v) => expect.closeTo(v, 6)));
    expect(updates.size).toBe(0);
    store.dispose();
  });
});

describe('GroupNorm', () => {
  it('normalises per sample and group (hand-computed)', () => {
    const store = new ParamStore();
    const gn = new Norm(store, 'gn', 4, { kind: 'group', groups: 2, eps: 0 });
    expect(gn.groups).toBe(2);
    expect(store.has('gn.moving_mean')).toBe(false);
    // one sample, 2 pixels, 4 channels; group 0 = channels {0,1}: values 1,3,5,7 -> mean 4, var 5
    // group 1 = channels {2,3}: values 10,10,20,20 -> mean 15, var 25
    const x = tf.tensor4d([1, 3, 10, 10, 5, 7, 20, 20], [1, 1, 2, 4]);
    const s5 = Math.sqrt(5);
    const expected = [-3 / s5, -1 / s5, -1, -1, 1 / s5, 3 / s5, 1, 1];
    expect(arr(gn.apply(x, true))).toEqual(expected.map((v) => expect.closeTo(v, 5)));
    // identical in eval mode (no batch dependence)
    expect(arr(gn.apply(x, false))).toEqual(expected.map((v) => expect.closeTo(v, 5)));
    store.dispose();
  });

  it('picks the largest divisor of the channel count', () => {
    expect(groupCount(64, 32)).toBe(32);
    expect(groupCount(24, 32)).toBe(24);
    expect(groupCount(48, 32)).toBe(24);
    expect(groupCount(8, 32)).toBe(8);
  });
});

describe('hand-written normalisation gradients', () => {
  /** Max |a - b| over paired tensors. */
  const maxDiff = (a: tf.Tensor[], b: tf.Tensor[]) => Math.max(...a.map((t, i) => tf.tidy(() => tf.max(tf.abs(tf.sub(t, b[i]))).dataSync()[0])));

  /** Plain-formula references, differentiated by tfjs autodiff. */
  const bnRef = (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
    const { mean, variance } = tf.moments(x, [0, 1, 2]);
    return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, 1e-5))), g), b);
  };
  const gnRef = (groups: number) => (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
    const [n, h, w, c] = x.shape;
    const xg = tf.reshape(x, [n, h, w, groups, c / groups]);
    const { mean, variance } = tf.moments(xg, [1, 2, 4], true);
    return tf.add(tf.mul(tf.reshape(tf.div(tf.sub(xg, mean), tf.sqrt(tf.add(variance, 1e-5))), x.shape), g), b);
  };

  it.each([
    ['batch norm', (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => batchNormTrain(x as tf.Tensor4D, g as tf.Tensor1D, b as tf.Tensor1D, 1e-5), bnRef],
    ['group norm', (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => groupNorm(x as tf.Tensor4D, g as tf.Tensor1D, b as tf.Tensor1D, 3, 1e-5), gnRef(3)],
  ] as const)('%s: value and gradients match autodiff of the plain formula', (_name, fast, ref) => {
    const x = tf.add(tf.mul(tf.randomNormal([3, 4, 5, 6], 0, 1, 'float32', 1), 3), 2);
    const g = tf.randomNormal([6], 1, 0.5, 'float32', 2);
    const b = tf.randomNormal([6], 0, 1, 'float32', 3);
    const w = tf.randomNormal([3, 4, 5, 6], 0, 1, 'float32', 4); // a non-uniform upstream gradient
    const loss = (f: typeof bnRef) => (xx: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => tf.sum(tf.mul(f(xx, gg, bb), w));
    expect(maxDiff([fast(x, g, b)], [ref(x, g, b)])).toBeLessThan(1e-4);
    const gf = tf.grads(loss(fast))([x, g, b]);
    const gr = tf.grads(loss(ref))([x, g, b]);
    expect(maxDiff(gf, gr)).toBeLessThan(1e-4);
    // the gradients are not trivially zero
    expect(tf.tidy(() => tf.max(tf.abs(gr[0])).dataSync()[0])).toBeGreaterThan(1e-2);
  });
});
