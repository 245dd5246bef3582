import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { CamHead } from '../../nn/heads.js';
import { multilabelSoftMarginLoss, softmaxCrossEntropy } from '../../nn/losses.js';
import { Rng } from '../../nn/rng.js';

beforeAll(async () => {
  await initBackend();
  expect(tf.getBackend()).toBe('tensorflow');
});

const val = (t: tf.Tensor) => t.dataSync()[0];

describe('CamHead', () => {
  it('logits equal the spatial mean of the CAMs; shapes', () => {
    const head = new CamHead(8, 5, { seed: 1 });
    const f = tf.randomNormal([2, 4, 6, 8], 0, 1, 'float32', 3) as tf.Tensor4D;
    const logits = head.classifierLogits(f);
    const cams = head.camMaps(f);
    expect(logits.shape).toEqual([2, 5]);
    expect(cams.shape).toEqual([2, 4, 6, 5]);
    const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(tf.mean(cams, [1, 2]), logits))).dataSync()[0]);
    expect(diff).toBeLessThan(1e-5);
    expect(tf.tidy(() => tf.max(tf.abs(logits)).dataSync()[0])).toBeGreaterThan(1e-3);
    // the CAM at a pixel is the kernel applied to that pixel's feature
    const px = tf.tidy(() => tf.matMul(tf.reshape(tf.slice(f, [1, 2, 3, 0], [1, 1, 1, 8]), [1, 8]), tf.reshape(head.kernel, [8, 5])));
    const cam = tf.slice(cams, [1, 2, 3, 0], [1, 1, 1, 5]);
    Array.from(cam.dataSync()).forEach((v, i) => expect(v).toBeCloseTo(px.dataSync()[i], 5));
    expect(() => head.camMaps(tf.zeros([1, 2, 2, 7]) as tf.Tensor4D)).toThrow(/expects \[B,h,w,8\]/);
    expect(head.params.named().size).toBe(1); // no bias
    head.dispose();
  });
});

describe('multilabelSoftMarginLoss', () => {
  it('matches hand-computed values', () => {
    // row 1: -log s(0) = log 2 = 0.693147; y=0, x=2: log(1+e^2) = 2.126928; y=1, x=-1: log(1+e) = 1.313262
    //        mean 1.377779
    // row 2: y=0, x=3: 3.048587; y=0, x=-4: 0.018150; y=1, x=0.5: log(1+e^-0.5) = 0.474077 -> mean 1.180271
    const logits = tf.tensor2d([
      [0, 2, -1],
      [3, -4, 0.5],
    ]);
    const y = tf.tensor2d([
      [1, 0, 1],
      [0, 0, 1],
    ]);
    expect(val(multilabelSoftMarginLoss(logits, y))).toBeCloseTo(1.2790251905, 5);
    expect(val(multilabelSoftMarginLoss(tf.tensor2d([[0, 2, -1]]), tf.tensor2d([[1, 0, 1]])))).toBeCloseTo(1.3777789597, 5);
  });

  it('is stable for large logits and has gradient (sigmoid(x) - y) / (B*C)', () => {
    expect(val(multilabelSoftMarginLoss(tf.tensor2d([[100, -100]]), tf.tensor2d([[1, 0]])))).toBeCloseTo(0, 6);
    expect(val(multilabelSoftMarginLoss(tf.tensor2d([[100, -100]]), tf.tensor2d([[0, 1]])))).toBeCloseTo(100, 3);
    const x = tf.tensor2d([[0, 2, -1]]);
    const y = tf.tensor2d([[1, 0, 1]]);
    const g = tf.grad((l: tf.Tensor) => multilabelSoftMarginLoss(l as tf.Tensor2D, y))(x);
    const sig = (v: number) => 1 / (1 + Math.exp(-v));
    const want = [(sig(0) - 1) / 3, sig(2) / 3, (sig(-1) - 1) / 3];
    Array.from(g.dataSync()).forEach((v, i) => expect(v).toBeCloseTo(want[i], 6));
  });

  it('rejects mismatched shapes', () => {
    expect(() => multilabelSoftMarginLoss(tf.zeros([2, 3]) as tf.Tensor2D, tf.zeros([2, 4]) as tf.Tensor2D)).toThrow(/\[B,C\]/);
  });
});

describe('softmaxCrossEntropy', () => {
  it('averages over valid pixels only (hand-computed)', () => {
    // pixel 0: logits [1,2,3], label 2 -> log(e+e^2+e^3) - 3 = 0.407606
    // pixel 1: logits [0,0,0], label 0 -> log 3 = 1.098612
    // pixel 2: label 255 -> ignored; mean = 0.753109
    const logits = tf.tensor4d([1, 2, 3, 0, 0, 0, 5, 0, 0], [1, 1, 3, 3]);
    const labels = tf.tensor3d([2, 0, 255], [1, 1, 3], 'int32');
    expect(val(softmaxCrossEntropy(logits, labels))).toBeCloseTo(0.7531091266, 5);
    // 2-D use: [N, K] logits, [N] labels
    expect(val(softmaxCrossEntropy(tf.tensor2d([[1, 2, 3]]), tf.tensor1d([2], 'int32')))).toBeCloseTo(0.4076059644, 5);
  });

  it('is zero with zero gradient (not NaN) when every pixel is ignored', () => {
    const logits = tf.tensor4d([1, 2, 3, 0, 0, 0], [1, 1, 2, 3]);
    const labels = tf.tensor3d([255, 255], [1, 1, 2], 'int32');
    expect(val(softmaxCrossEntropy(logits, labels))).toBe(0);
    const g = tf.grad((l: tf.Tensor) => softmaxCrossEntropy(l, labels))(logits);
    const gv = Array.from(g.dataSync());
    expect(gv).toHaveLength(6);
    expect(gv.every((v) => v === 0)).toBe(true); // +0 or -0, never NaN
  });

  /** The former autodiff formula: the independent reference for the written-out gradient. */
  function autodiffReference(logits: tf.Tensor, labels: tf.Tensor, perCount = true): tf.Scalar {
    return tf.tidy(() => {
      const lab = tf.cast(labels, 'int32');
      const valid = tf.notEqual(lab, 255);
      const picked = tf.sum(tf.mul(tf.logSoftmax(logits), tf.oneHot(tf.where(valid, lab, tf.zerosLike(lab)), logits.shape[logits.rank - 1])), -1);
      const validF = tf.cast(valid, 'float32');
      const total = tf.sum(tf.mul(tf.neg(picked), validF));
      return (perCount ? tf.div(total, tf.maximum(tf.sum(validF), 1)) : total) as tf.Scalar;
    });
  }

  it('matches autodiff of the plain formula in value and gradient (random logits, 20% ignore)', () => {
    const r = new Rng(7);
    const rng = () => r.next();
    const shape = [2, 5, 7, 6];
    const n = shape[0] * shape[1] * shape[2];
    const logits = tf.tensor4d(Array.from({ length: n * shape[3] }, () => 6 * rng() - 3), shape as [number, number, number, number]);
    const labels = tf.tensor3d(Array.from({ length: n }, () => (rng() < 0.2 ? 255 : Math.floor(rng() * shape[3]))), shape.slice(0, 3) as [number, number, number], 'int32');
    const before = tf.memory().numTensors;
    const { value, grad } = tf.tidy(() => {
      const vg = tf.valueAndGrad((l: tf.Tensor) => softmaxCrossEntropy(l, labels))(logits);
      return { value: vg.value.dataSync()[0], grad: Array.from(vg.grad.dataSync()) };
    });
    expect(tf.memory().numTensors).toBe(before);
    const maxDiff = (a: number[], b: number[]) => Math.max(...a.map((v, i) => Math.abs(v - b[i])));
    const ref = tf.valueAndGrad((l: tf.Tensor) => autodiffReference(l, labels))(logits);
    expect(value).toBeCloseTo(ref.value.dataSync()[0], 6);
    expect(maxDiff(grad, Array.from(ref.grad.dataSync()))).toBeLessThan(1e-7);
    // control: the reference without the division by the valid count is far off
    const off = tf.grad((l: tf.Tensor) => autodiffReference(l, labels, false))(logits);
    expect(maxDiff(grad, Array.from(off.dataSync()))).toBeGreaterThan(1e-2);
  });

  it('has gradient softmax - onehot over valid pixels / count', () => {
    const logits = tf.tensor2d([
      [0, 0],
      [1, -1],
    ]);
    const labels = tf.tensor1d([1, 255], 'int32');
    const g = tf.grad((l: tf.Tensor) => softmaxCrossEntropy(l, labels))(logits);
    expect(Array.from(g.dataSync())).toEqual([0.5, -0.5, 0, 0].map((v) => expect.closeTo(v, 6)));
  });
});
