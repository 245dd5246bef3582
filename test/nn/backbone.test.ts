import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { disposeFeatures, type Backbone } from '../../nn/backbone.js';
import { MobileNetV1 } from '../../nn/mobilenet.js';
import { ResNet } from '../../nn/resnet.js';

beforeAll(async () => {
  await initBackend();
  expect(tf.getBackend()).toBe('tensorflow');
});

function levelShapes(net: Backbone, h: number, w: number): number[][] {
  const x = tf.randomUniform([2, h, w, 3]) as tf.Tensor4D;
  const f = net.forward(x, false);
  const shapes = f.levels.map((l) => [...l.shape]);
  expect(f.last).toBe(f.levels[f.levels.length - 1]);
  expect(f.stride).toBe(net.outputStride);
  expect(f.strides).toEqual(net.strides);
  expect(f.channels).toEqual(net.channels);
  disposeFeatures(f);
  x.dispose();
  return shapes;
}

describe('ResNet', () => {
  it.each([
    [8, [4, 8, 8, 8]],
    [16, [4, 8, 16, 16]],
    [32, [4, 8, 16, 32]],
  ] as const)('output stride %i gives level strides %j', (os, strides) => {
    const net = new ResNet({ width: 8, depth: [1, 1, 2, 1], outputStride: os });
    expect(net.strides).toEqual(strides);
    expect(net.channels).toEqual([8, 16, 32, 64]);
    // 33 x 40 input: 'same' padding gives ceil(n / stride) at every level
    expect(levelShapes(net, 33, 40)).toEqual(strides.map((s, i) => [2, Math.ceil(33 / s), Math.ceil(40 / s), net.channels[i]]));
    net.dispose();
  });

  it('is deterministic per seed, registers named variables, and leaks nothing', () => {
    const before = tf.memory().numTensors;
    const a = new ResNet({ width: 8, depth: [1, 1, 1, 1], outputStride: 8, seed: 3 });
    const b = new ResNet({ width: 8, depth: [1, 1, 1, 1], outputStride: 8, seed: 3 });
    const k = 'stage2.block0.conv1.kernel';
    expect(Array.from(a.params.get(k).dataSync())).toEqual(Array.from(b.params.get(k).dataSync()));
    // stage 2 downsamples and widens: a projection shortcut; stage 1 (8 -> 8, stride 1) has none
    expect(a.params.has('stage2.block0.down.kernel')).toBe(true);
    expect(a.params.has('stage1.block0.down.kernel')).toBe(false);
    // moving statistics exist but are not trainable
    expect(a.params.get('stem.norm.moving_mean').trainable).toBe(false);
    expect(a.variables().every((v) => v.trainable)).toBe(true);
    expect(a.variables().length).toBeLessThan(a.params.named().size);
    levelShapes(a, 32, 32);
    a.dispose();
    b.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('validates its options', () => {
    expect(() => new ResNet({ depth: [1, 1, 1] })).toThrow(/depth/);
    expect(() => new ResNet({ outputStride: 4 as 8 })).toThrow(/outputStride/);
  });

  it('preprocesses RGB [0,255] with the ImageNet mean/std', () => {
    const net = new ResNet({ width: 4, depth: [1, 1, 1, 1] });
    const y = net.preprocess(tf.tensor4d([255, 0, 127.5], [1, 1, 1, 3]));
    const v = Array.from(y.dataSync());
    expect(v[0]).toBeCloseTo((1 - 0.485) / 0.229, 5);
    expect(v[1]).toBeCloseTo((0 - 0.456) / 0.224, 5);
    expect(v[2]).toBeCloseTo((0.5 - 0.406) / 0.225, 5);
    net.dispose();
  });
});

describe('MobileNetV1 (random init)', () => {
  it.each([
    [8, [4, 8, 8, 8]],
    [16, [4, 8, 16, 16]],
    [32, [4, 8, 16, 32]],
  ] as const)('output stride %i gives level strides %j', (os, strides) => {
    const net = new MobileNetV1(null, { outputStride: os });
    expect(net.strides).toEqual(strides);
    expect(net.channels).toEqual([128, 256, 512, 1024]);
    expect(levelShapes(net, 33, 40)).toEqual(strides.map((s, i) => [2, Math.ceil(33 / s), Math.ceil(40 / s), net.channels[i]]));
    net.dispose();
  });

  it("ends at conv_dw_13 when asked, without conv_pw_13", () => {
    const net = new MobileNetV1(null, { outputStride: 16, last: 'conv_dw_13' });
    expect(net.params.has('conv_dw_13.depthwise_kernel')).toBe(true);
    expect(net.params.has('conv_pw_13.kernel')).toBe(false);
    expect(levelShapes(net, 32, 32)[3]).toEqual([2, 2, 2, 1024]);
    net.dispose();
    const short = new MobileNetV1(null, {});
    expect(short.params.has('conv_dw_13.depthwise_kernel')).toBe(false);
    short.dispose();
  });

  it('preprocesses to [-1, 1]', () => {
    const net = new MobileNetV1(null);
    expect(Array.from(net.preprocess(tf.tensor4d([0, 127.5, 255], [1, 1, 1, 3])).dataSync())).toEqual([-1, 0, 1]);
    net.dispose();
  });
});
