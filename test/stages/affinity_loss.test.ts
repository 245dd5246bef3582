import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { affinityLoss } from '../../stages/affinity/loss.js';

beforeAll(async () => {
  await initBackend();
  expect(tf.getBackend()).toBe('tensorflow');
});

const val = (t: tf.Tensor) => t.dataSync()[0];
const mask = (v: number[]) => tf.tensor3d(v, [2, 1, 3]);

describe('affinityLoss', () => {
  it('matches hand-computed terms', () => {
    const before = tf.memory().numTensors;
    const aff = tf.tensor3d([0.5, 0.9, 0.2, 1.0, 0.0, 0.6], [2, 1, 3]);
    const pairs = { bgPos: mask([1, 0, 0, 0, 0, 0]), fgPos: mask([0, 1, 0, 1, 0, 0]), neg: mask([0, 0, 1, 0, 1, 1]) };
    const t = affinityLoss(aff, pairs);
    // bg+: -ln 0.5 = 0.693147
    // fg+: (-ln 0.9 - ln(1 - 1e-5)) / 2 = (0.105361 + 0.00001) / 2 = 0.052685   (a = 1 clipped to 1 - 1e-5)
    // neg: (-ln 0.8 - ln(1 - 1e-5) - ln 0.4) / 3 = 0.379815                      (a = 0 clipped to 1e-5)
    // total: 0.693147 / 4 + 0.052685 / 4 + 0.379815 / 2 = 0.376365
    expect(val(t.bgPos)).toBeCloseTo(0.6931471806, 5);
    expect(val(t.fgPos)).toBeCloseTo(0.0526852579, 5);
    expect(val(t.neg)).toBeCloseTo(0.3798147611, 5);
    expect(val(t.loss)).toBeCloseTo(0.3763654901, 5);
    tf.dispose([aff, ...Object.values(pairs), ...Object.values(t)]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('a term without pairs is 0, not NaN, and so is its gradient; clipping keeps log finite', () => {
    const aff = tf.tensor3d([0, 1, 0.3, 0.7, 0.5, 0.5], [2, 1, 3]);
    const zero = mask([0, 0, 0, 0, 0, 0]);
    const negOnly = mask([1, 1, 1, 0, 0, 0]);
    const t = affinityLoss(aff, { bgPos: zero, fgPos: zero, neg: negOnly });
    expect(val(t.bgPos)).toBe(0);
    expect(val(t.fgPos)).toBe(0);
    // a = 0 -> 1e-5: -ln(1 - 1e-5) = 1e-5; a = 1 -> 1 - 1e-5 (float32 0.99999, so 1 - a = 1.001358e-5):
    // -ln 1.001358e-5 = 11.511578; a = 0.3: -ln 0.7 = 0.356675 -> mean 3.956084
    expect(val(t.neg)).toBeCloseTo(3.9560844, 4);
    expect(val(t.loss)).toBeCloseTo(3.9560844 / 2, 4);
    const g = tf.grad((a: tf.Tensor) => affinityLoss(a, { bgPos: zero, fgPos: zero, neg: negOnly }).loss)(aff);
    const gd = Array.from(g.dataSync());
    expect(gd.every(Number.isFinite)).toBe(true);
    // clipped entries (a = 0, a = 1) and entries outside every pair get no gradient;
    // a = 0.3: d/da -ln(1 - a) / 3 / 2 = 1 / (0.7 * 6) = 0.238095
    expect(gd[2]).toBeCloseTo(0.2380952, 5);
    gd.splice(2, 1);
    expect(gd).toEqual([0, 0, 0, 0, 0]);
    const none = affinityLoss(aff, { bgPos: zero, fgPos: zero, neg: zero });
    expect(val(none.loss)).toBe(0);
    tf.dispose([aff, zero, negOnly, g, ...Object.values(t), ...Object.values(none)]);
  });

  it('accepts batched [B, K, h, w] maps and rejects mismatched masks', () => {
    const aff = tf.fill([2, 3, 2, 2], 0.5);
    const ones = tf.onesLike(aff);
    const zero = tf.zerosLike(aff);
    const t = affinityLoss(aff, { bgPos: ones, fgPos: zero, neg: ones });
    expect(val(t.loss)).toBeCloseTo(Math.log(2) / 4 + Math.log(2) / 2, 5);
    expect(() => affinityLoss(aff, { bgPos: ones, fgPos: zero, neg: tf.zeros([3, 2, 2]) })).toThrow(/neg mask/);
    tf.dispose([aff, ones, zero, ...Object.values(t)]);
  });
});
