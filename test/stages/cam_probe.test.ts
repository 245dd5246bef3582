/**
 * The linear probe of the CAM head (stages/cam/probe.ts): pooled features of an image and its
 * mirror, and the full-batch fit of the head on them.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { CamHead } from '../../nn/heads.js';
import { initBackend } from '../../pipeline/backend.js';
import { CAM_MODEL_FORMAT, buildCamNet } from '../../nn/cam_net.js';
import { fitHead, pooledFeatures, probeHead } from '../../stages/cam/probe.js';

beforeAll(async () => {
  await initBackend();
});

describe('cam head linear probe', () => {
  it('fitHead separates a hand-made two-class problem; the fit loss is MLSM of the final head', () => {
    const before = tf.memory().numTensors;
    // class 0 is on where feature 0 is large, class 1 where feature 1 is; image 3 has both
    const x = tf.tensor2d([[3, 0], [0, 3], [0, 0], [3, 3]]);
    const y = tf.tensor2d([[1, 0], [0, 1], [0, 0], [1, 1]]);
    const head = new CamHead(2, 2, { seed: 3 });
    const loss = fitHead(head, x, y, { iters: 300, lr: 0.05, weightDecay: 0 });
    const logits = tf.tidy(() => tf.matMul(x, tf.reshape(head.kernel, [2, 2]) as tf.Tensor2D));
    const p = Array.from(logits.dataSync()).map((v) => v > 0);
    // image 2 has all-zero features: a head without bias gives logits exactly 0 (not > 0)
    expect(p).toEqual([true, false, false, true, false, false, true, true]);
    // MLSM by hand on the final logits = the reported loss
    const l = Array.from(logits.dataSync());
    const t = Array.from(y.dataSync());
    const mlsm = l.reduce((s, v, i) => s + (t[i] ? Math.log1p(Math.exp(-v)) : Math.log1p(Math.exp(v))), 0) / l.length;
    expect(Math.abs(loss - mlsm)).toBeLessThan(0.01); // the last step moves the head a little after the loss is read
    // image 2's two entries stay at log 2 each (2 of 8 entries: 0.173); the six others go towards 0
    expect(loss).toBeGreaterThan((2 * Math.LN2) / 8);
    expect(loss).toBeLessThan(0.25);
    tf.dispose([x, y, logits]);
    head.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('pooledFeatures: rows 2i and 2i+1 are image i and its mirror, targets repeated; probeHead leaks nothing', async () => {
    const net = await buildCamNet({
      format: CAM_MODEL_FORMAT, version: 1, backbone: { kind: 'resnet', outputStride: 8, norm: 'batch', width: 4, depth: [1, 1, 1, 1] },
      classes: ['a', 'b', 'c'], background: null, outputs: [0, 1, 2],
    }, 0, true);
    const px = (seed: number) => Uint8Array.from({ length: 16 * 12 * 3 }, (_, i) => (i * 37 + seed * 101) % 256);
    const images = [
      { pixels: px(1), height: 16, width: 12, target: Float32Array.from([1, 0, 0]) },
      { pixels: px(2), height: 16, width: 12, target: Float32Array.from([0, 1, 1]) },
    ];
    const before = tf.memory().numTensors;
    const { x, y } = await pooledFeatures(net, images);
    expect(x.shape).toEqual([4, net.config.featureChannels]);
    expect(Array.from(y.dataSync())).toEqual([1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 1, 1]);
    // row 1 = the mirror of image 0: the same as pooling the flipped image directly
    const flipped = tf.tidy(() => {
      const img = tf.reverse(tf.cast(tf.tensor4d(images[0].pixels, [1, 16, 12, 3], 'int32'), 'float32'), 2) as tf.Tensor4D;
      return tf.mean(net.backbone.forward(net.backbone.preprocess(img), false).last, [1, 2]);
    });
    const row1 = tf.slice(x, [1, 0], [1, -1]);
    const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(row1, flipped))));
    expect(diff.dataSync()[0]).toBeLessThan(1e-5);
    tf.dispose([x, y, flipped, row1, diff]);
    const k0 = Array.from(net.head.kernel.dataSync());
    const loss = await probeHead(net, images, 20, 1e-4);
    expect(Number.isFinite(loss)).toBe(true);
    expect(Array.from(net.head.kernel.dataSync())).not.toEqual(k0);
    expect(tf.memory().numTensors).toBe(before);
    net.dispose();
  });
});
