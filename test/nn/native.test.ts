import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { fusedBatchNormFixed, maxPool, nativeKernels, relu, relu6, setNativeKernels } from '../../nn/native.js';
import { batchNormTrain } from '../../nn/norm.js';

beforeAll(async () => {
  await initBackend();
  expect(tf.getBackend()).toBe('tensorflow');
});
afterEach(() => setNativeKernels(true));

const maxDiff = (a: tf.Tensor[], b: tf.Tensor[]) => Math.max(...a.map((t, i) => tf.tidy(() => tf.max(tf.abs(tf.sub(t, b[i]))).dataSync()[0])));

/** Value and gradients (upstream gradient `w`) of f at `inputs`, with the native kernels on or off. */
function valueAndGrads(native: boolean, f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], w: tf.Tensor): tf.Tensor[] {
  setNativeKernels(native);
  try {
    const y = f(...inputs);
    const g = tf.grads((...xs: tf.Tensor[]) => tf.sum(tf.mul(f(...xs), w)))(inputs);
    return [y, ...g];
  } finally {
    setNativeKernels(true);
  }
}

describe('native kernels (tfjs-node)', () => {
  it('are in use on the tensorflow backend and can be switched off', () => {
    expect(nativeKernels()).toBe(true);
    setNativeKernels(false);
    expect(nativeKernels()).toBe(false);
  });

  it('relu: hand-computed value and gradient, including x = 0', () => {
    const x = tf.tensor1d([-2, 0, 3]);
    const [y, dx] = valueAndGrads(true, (t) => relu(t), [x], tf.tensor1d([5, 6, 7]));
    expect(Array.from(y.dataSync())).toEqual([0, 0, 3]);
    expect(Array.from(dx.dataSync())).toEqual([0, 0, 7]); // 0 at x = 0, as tfjs and torch
  });

  it('relu6: hand-computed value and gradient (0 outside (0, 6), as torch)', () => {
    const x = tf.tensor1d([-1, 0, 2, 6, 7]);
    const [y, dx] = valueAndGrads(true, (t) => relu6(t), [x], tf.ones([5]));
    expect(Array.from(y.dataSync())).toEqual([0, 0, 2, 6, 6]);
    expect(Array.from(dx.dataSync())).toEqual([0, 0, 1, 0, 0]);
  });

  it.each([
    ['relu', (x: tf.Tensor) => relu(x)],
    ['relu6', (x: tf.Tensor) => relu6(tf.mul(x, 4))],
  ] as const)('%s matches the portable path on random maps', (_n, f) => {
    const x = tf.randomNormal([2, 5, 6, 3], 0, 1, 'float32', 1);
    const w = tf.randomNormal([2, 5, 6, 3], 0, 1, 'float32', 2);
    expect(maxDiff(valueAndGrads(true, f, [x], w), valueAndGrads(false, f, [x], w))).toBe(0);
  });

  it('batch-statistics BatchNorm: value, gradients and statistics match the portable path', () => {
    const x = tf.add(tf.mul(tf.randomNormal([3, 4, 5, 6], 0, 1, 'float32', 3), 3), 2);
    const g = tf.randomNormal([6], 1, 0.5, 'float32', 4);
    const b = tf.randomNormal([6], 0, 1, 'float32', 5);
    const w = tf.randomNormal([3, 4, 5, 6], 0, 1, 'float32', 6);
    const stats: tf.Tensor[][] = [];
    const f = (xx: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) =>
      batchNormTrain(xx as tf.Tensor4D, gg as tf.Tensor1D, bb as tf.Tensor1D, 1e-5, (m, v) => stats.push([tf.keep(m.clone()), tf.keep(v.clone())]));
    const fast = valueAndGrads(true, f, [x, g, b], w);
    const slow = valueAndGrads(false, f, [x, g, b], w);
    expect(maxDiff(fast, slow)).toBeLessThan(1e-4);
    expect(maxDiff(stats[0], stats[stats.length - 1])).toBeLessThan(1e-5); // mean and biased variance
    // hand check of the statistics: channel means of x, biased variance
    const { mean, variance } = tf.moments(x, [0, 1, 2]);
    expect(maxDiff(stats[0], [mean, variance])).toBeLessThan(1e-5);
    tf.dispose(stats.flat());
  });

  it('fixed-statistics BatchNorm: value and gradients match tf.batchNorm4d', () => {
    const x = tf.randomNormal([2, 3, 4, 5], 1, 2, 'float32', 7);
    const mean = tf.randomNormal([5], 0, 1, 'float32', 8) as tf.Tensor1D;
    const variance = tf.randomUniform([5], 0.5, 2, 'float32', 9) as tf.Tensor1D;
    const g = tf.randomNormal([5], 1, 0.5, 'float32', 10);
    const b = tf.randomNormal([5], 0, 1, 'float32', 11);
    const w = tf.randomNormal([2, 3, 4, 5], 0, 1, 'float32', 12);
    const fused = (xx: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => fusedBatchNormFixed(xx as tf.Tensor4D, mean, variance, gg as tf.Tensor1D, bb as tf.Tensor1D, 1e-3)!;
    const ref = (xx: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => tf.batchNorm4d(xx as tf.Tensor4D, mean, variance, bb as tf.Tensor1D, gg as tf.Tensor1D, 1e-3);
    expect(maxDiff(valueAndGrads(true, fused, [x, g, b], w), valueAndGrads(true, ref, [x, g, b], w))).toBeLessThan(1e-4);
    setNativeKernels(false);
    expect(fusedBatchNormFixed(x as tf.Tensor4D, mean, variance, g as tf.Tensor1D, b as tf.Tensor1D, 1e-3)).toBeUndefined();
  });

  it('maxPool: value and gradient match tf.maxPool, ties to the first maximum', () => {
    // 4x4 map, 3x3/2 'same' pooling -> 2x2; the zeros make ties inside every window.
    const x = tf.tensor4d([0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0], [1, 4, 4, 1]);
    const w = tf.tensor4d([1, 10, 100, 1000], [1, 2, 2, 1]);
    const f = (t: tf.Tensor) => maxPool(t as tf.Tensor4D, 3, 2, 'same');
    const [y, dx] = valueAndGrads(true, f, [x], w);
    // 'same' pads one row/column at the bottom/right: windows rows {0-2, 2-3} x cols {0-2, 2-3}.
    expect(Array.from(y.dataSync())).toEqual([2, 1, 3, 0]);
    // maxima at (1,1), (0,2), (3,0); the all-zero last window sends its gradient to its first
    // element in scan order, (2,2)
    const expected = new Array<number>(16).fill(0);
    [expected[5], expected[2], expected[12], expected[10]] = [1, 10, 100, 1000];
    expect(Array.from(dx.dataSync())).toEqual(expected);
    const ref = valueAndGrads(false, f, [x], w);
    expect(maxDiff([y, dx], ref)).toBe(0);
    const big = tf.randomNormal([2, 9, 11, 4], 0, 1, 'float32', 13);
    const wb = tf.randomNormal([2, 5, 6, 4], 0, 1, 'float32', 14);
    expect(maxDiff(valueAndGrads(true, f, [big], wb), valueAndGrads(false, f, [big], wb))).toBeLessThan(1e-6);
  });

  it('leaves no tensors behind', () => {
    const x = tf.randomNormal([2, 6, 6, 4], 0, 1, 'float32', 15);
    const g = tf.ones([4]);
    const b = tf.zeros([4]);
    const f = (xx: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) =>
      relu6(relu(maxPool(batchNormTrain(xx as tf.Tensor4D, gg as tf.Tensor1D, bb as tf.Tensor1D, 1e-5), 3, 2, 'same')));
    const run = () => tf.tidy(() => void valueAndGrads(true, f, [x, g, b], tf.ones([2, 3, 3, 4])));
    run(); // warm-up (the one-time kernel probe of maxPool)
    const before = tf.memory().numTensors;
    run();
    expect(tf.memory().numTensors).toBe(before);
  });
});
