/**
 * The class re-activation loss (nn/recam.ts) on hand-computed cases.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { reactivationLoss } from '../../nn/recam.js';

beforeAll(async () => {
  await initBackend();
});

const softplus = (x: number) => Math.log1p(Math.exp(x));

describe('reactivationLoss', () => {
  it('separated classes: each masked pool classifies as its own class (hand-computed)', () => {
    const before = tf.memory().numTensors;
    // one image, 1 x 2 pixels: pixel 0 has feature [1, 0], pixel 1 [0, 1]; W = identity, so
    // CAM_0 = [1, 0], CAM_1 = [0, 1] (already max 1); pools z_0 = [0.5, 0], z_1 = [0, 0.5];
    // logits z_k W = z_k; -log softmax([0.5, 0])[0] = softplus(-0.5) for both tagged classes.
    const f = tf.tensor4d([1, 0, 0, 1], [1, 1, 2, 2]);
    const w = tf.eye(2) as tf.Tensor2D;
    const both = tf.tensor2d([[1, 1]]);
    const second = tf.tensor2d([[0, 1]]);
    const loss = reactivationLoss(f, w, both);
    expect(loss.dataSync()[0]).toBeCloseTo(softplus(-0.5), 4);
    // only tagged classes count: tag 1 alone gives the same value (the case is symmetric)
    const one = reactivationLoss(f, w, second);
    expect(one.dataSync()[0]).toBeCloseTo(softplus(-0.5), 4);
    tf.dispose([f, w, both, second, loss, one]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('co-occurring classes with one shared CAM cost log K; the loss falls as the CAMs part', () => {
    // both pixels have feature [1, 1]: CAM_0 = CAM_1 everywhere, pools equal, logits equal -> log 2
    const same = tf.tensor4d([1, 1, 1, 1], [1, 1, 2, 2]);
    const w = tf.eye(2) as tf.Tensor2D;
    const y = tf.tensor2d([[1, 1]]);
    const shared = reactivationLoss(same, w, y).dataSync()[0];
    expect(shared).toBeCloseTo(Math.LN2, 4);
    // pixel 1 leans to class 1 ([1, 1] and [0, 2]): CAM_0 = [1, 0] after ReLU/max, CAM_1 = [0.5, 1]
    // z_0 = [1, 1] / 2, logits [0.5, 0.5] -> log 2; z_1 = (0.5 [1, 1] + [0, 2]) / 2 = [0.25, 1.25],
    // -log softmax([0.25, 1.25])[1] = softplus(-1); mean = (log 2 + softplus(-1)) / 2
    const apart = tf.tensor4d([1, 1, 0, 2], [1, 1, 2, 2]);
    const got = reactivationLoss(apart, w, y).dataSync()[0];
    expect(got).toBeCloseTo((Math.LN2 + softplus(-1)) / 2, 4);
    expect(got).toBeLessThan(shared);
    tf.dispose([same, apart, w, y]);
  });

  it('is 0 with no tagged class, averages over images, and gives gradients to features and kernel', () => {
    const f = tf.tensor4d([1, 0, 0, 1, 1, 1, 1, 1], [2, 1, 2, 2]);
    const w = tf.variable(tf.eye(2));
    expect(reactivationLoss(f, w as unknown as tf.Tensor2D, tf.tensor2d([[0, 0], [0, 0]])).dataSync()[0]).toBe(0);
    // image 0 (separated, 2 tags) and image 1 (shared, 2 tags): mean of the four terms
    const both = reactivationLoss(f, w as unknown as tf.Tensor2D, tf.tensor2d([[1, 1], [1, 1]])).dataSync()[0];
    expect(both).toBeCloseTo((softplus(-0.5) + Math.LN2) / 2, 4);
    const { grads } = tf.variableGrads(() => reactivationLoss(f, w as unknown as tf.Tensor2D, tf.tensor2d([[1, 1], [1, 1]])));
    const g = grads[w.name].dataSync();
    expect(Array.from(g).some((v) => Math.abs(v) > 1e-4)).toBe(true);
    tf.dispose([f, w, ...Object.values(grads)]);
  });

  it('names the shapes when they disagree', () => {
    const f = tf.zeros([1, 2, 2, 3]) as tf.Tensor4D;
    expect(() => reactivationLoss(f, tf.zeros([2, 4]) as tf.Tensor2D, tf.zeros([1, 4]) as tf.Tensor2D)).toThrow(/must be \[B,h,w,C\], \[C,K\], \[B,K\]/);
    f.dispose();
  });
});
