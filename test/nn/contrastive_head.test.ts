import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ProjectionHead } from '../../nn/contrastive/head.js';
import { NormUpdates } from '../../nn/norm.js';
import { Rng } from '../../nn/rng.js';
import { initBackend } from '../../pipeline/backend.js';

beforeAll(async () => {
  await initBackend();
});

describe('ProjectionHead', () => {
  it('maps [B, h, w, Cin] to unit-length [B, h, w, dim] through conv -> BN -> ReLU -> conv', () => {
    const head = new ProjectionHead(6, { dim: 4, seed: 1 });
    expect([...head.params.named().keys()]).toEqual([
      'proj1.kernel', 'proj1.norm.gamma', 'proj1.norm.beta', 'proj1.norm.moving_mean', 'proj1.norm.moving_variance', 'proj2.kernel', 'proj2.bias',
    ]);
    const rng = new Rng(2);
    const x = tf.tensor4d(Array.from({ length: 2 * 3 * 3 * 6 }, () => rng.normal()), [2, 3, 3, 6]);
    // a non-zero bias: a pixel whose hidden units are all cut by the ReLU then still has a direction
    const bias = tf.tensor1d([0.1, -0.2, 0.3, 0.4]);
    head.params.get('proj2.bias').assign(bias);
    bias.dispose();
    const before = tf.memory().numTensors;
    const y = head.forward(x, false);
    expect(tf.memory().numTensors).toBe(before + 1);
    expect(y.shape).toEqual([2, 3, 3, 4]);
    const norms = tf.tidy(() => tf.sqrt(tf.sum(tf.square(y), 3)).dataSync().slice());
    for (const n of norms) expect(n).toBeCloseTo(1, 5);
    // eval mode with fresh statistics (mean 0, var 1): relu(x W1 / sqrt(1 + eps)) W2 + b2, normalised
    const ref = tf.tidy(() => {
      const k1 = tf.reshape(head.params.get('proj1.kernel'), [6, 6]) as tf.Tensor2D;
      const k2 = tf.reshape(head.params.get('proj2.kernel'), [6, 4]) as tf.Tensor2D;
      const h = tf.relu(tf.div(tf.matMul(tf.reshape(x, [18, 6]) as tf.Tensor2D, k1), Math.sqrt(1 + 1e-5))) as tf.Tensor2D;
      const z = tf.add(tf.matMul(h, k2), head.params.get('proj2.bias'));
      return tf.div(z, tf.norm(z, 2, 1, true)).dataSync().slice();
    });
    const got = y.dataSync();
    ref.forEach((v, i) => expect(got[i]).toBeCloseTo(v, 5));
    tf.dispose([x, y]);
    head.dispose();
  });

  it('trains: gradients reach both convs, BatchNorm statistics go to the collector', () => {
    const head = new ProjectionHead(3, { dim: 2, hidden: 5, seed: 0 });
    const rng = new Rng(3);
    const x = tf.tensor4d(Array.from({ length: 2 * 2 * 2 * 3 }, () => rng.normal()), [2, 2, 2, 3]);
    const updates = new NormUpdates();
    const target = tf.tensor4d(Array.from({ length: 16 }, (_, i) => (i % 2 ? 1 : 0)), [2, 2, 2, 2]);
    const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(head.forward(x, true, updates), target)) as tf.Scalar, head.variables());
    expect(updates.size).toBe(1);
    for (const g of Object.values(grads)) expect(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0])).toBeGreaterThan(0);
    expect(Object.keys(grads)).toHaveLength(5); // proj1.kernel, gamma, beta, proj2.kernel, proj2.bias
    updates.dispose();
    tf.dispose([x, target, value, ...Object.values(grads)]);
    head.dispose();
  });

  it('rejects a wrong input width', () => {
    const head = new ProjectionHead(3, { dim: 2, seed: 0 });
    const x = tf.zeros([1, 2, 2, 4]) as tf.Tensor4D;
    expect(() => head.forward(x, false)).toThrow(/expects \[B, h, w, 3\]/);
    x.dispose();
    head.dispose();
  });
});
