import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import type { Backbone } from '../../nn/backbone.js';
import { CamHead } from '../../nn/heads.js';
import { multilabelSoftMarginLoss } from '../../nn/losses.js';
import { MobileNetV1 } from '../../nn/mobilenet.js';
import { NormUpdates } from '../../nn/norm.js';
import { SGD } from '../../nn/optim.js';
import { mergeNamed } from '../../nn/params.js';
import { ResNet } from '../../nn/resnet.js';
import { trainStep } from '../../nn/train.js';

beforeAll(async () => {
  await initBackend();
  expect(tf.getBackend()).toBe('tensorflow');
});

const NUM_CLASSES = 3;

function batch(seed: number): { x: tf.Tensor4D; y: tf.Tensor2D } {
  return {
    x: tf.randomNormal([2, 32, 32, 3], 0, 1, 'float32', seed) as tf.Tensor4D,
    y: tf.tensor2d([
      [1, 0, 1],
      [0, 1, 0],
    ]),
  };
}

function lossFn(net: Backbone, head: CamHead, x: tf.Tensor4D, y: tf.Tensor2D, updates?: NormUpdates): tf.Scalar {
  return multilabelSoftMarginLoss(head.classifierLogits(net.forward(x, true, updates).last), y);
}

/** Every trainable variable of backbone + head gets a finite, non-zero gradient. */
function expectGradientsEverywhere(net: Backbone, head: CamHead): void {
  const { x, y } = batch(1);
  const vars = [...net.variables(), ...head.variables()];
  const names = new Map<string, string>();
  for (const [k, v] of mergeNamed(net.params.named('backbone/'), head.params.named('head/'))) names.set(v.name, k);
  const { value, grads } = tf.variableGrads(() => lossFn(net, head, x, y), vars);
  const dead: string[] = [];
  for (const v of vars) {
    const g = grads[v.name];
    const maxAbs = g ? tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0]) : 0;
    if (!(maxAbs > 0 && Number.isFinite(maxAbs))) dead.push(names.get(v.name) ?? v.name);
  }
  expect(dead).toEqual([]);
  // moving statistics are never differentiated
  const trainableNames = new Set(vars.map((v) => v.name));
  for (const [k, v] of net.params.named()) if (k.endsWith('.moving_mean')) expect(trainableNames.has(v.name)).toBe(false);
  tf.dispose([value, x, y, ...Object.values(grads)]);
}

describe('gradient flow', () => {
  it.each(['batch', 'group'] as const)('reaches every trainable variable of ResNet + CAM head (%s norm)', (norm) => {
    const net = new ResNet({ width: 8, depth: [1, 1, 1, 1], outputStride: 8, norm });
    const head = new CamHead(net.channels[3], NUM_CLASSES);
    expect(net.variables().length).toBeGreaterThan(20);
    expectGradientsEverywhere(net, head);
    net.dispose();
    head.dispose();
  });

  it('reaches every trainable variable of MobileNet + CAM head', () => {
    const net = new MobileNetV1(null, { outputStride: 16, norm: 'batch' });
    const head = new CamHead(net.channels[3], NUM_CLASSES);
    expectGradientsEverywhere(net, head);
    net.dispose();
    head.dispose();
  });

  it('skips frozen variables', () => {
    const net = new ResNet({ width: 8, depth: [1, 1, 1, 1], outputStride: 16 });
    const frozen = net.params.setTrainable('stem.', false);
    expect(frozen).toBe(3); // conv kernel, gamma, beta (never the moving statistics)
    expect(net.params.get('stem.norm.moving_mean').trainable).toBe(false);
    expect(net.variables().some((v) => v === net.params.get('stem.conv.kernel'))).toBe(false);
    net.dispose();
  });
});

describe('freezeStages (segment.frozen_stages)', () => {
  /** One SGD step over the trainable variables; returns the names of the backbone variables it changed (moving statistics included). */
  function changedBy(net: Backbone): string[] {
    const head = new CamHead(net.channels[3], NUM_CLASSES, { seed: 2 });
    const opt = new SGD(
      [
        { name: 'backbone', params: net.params.namedTrainable('backbone/') },
        { name: 'head', params: head.params.namedTrainable('head/') },
      ],
      { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 },
    );
    const before = new Map([...net.params.named()].map(([k, v]) => [k, Array.from(v.dataSync())]));
    const { x, y } = batch(4);
    trainStep(opt, (u) => lossFn(net, head, x, y, u));
    const changed = [...net.params.named()].filter(([k, v]) => Array.from(v.dataSync()).some((a, i) => a !== before.get(k)![i])).map(([k]) => k);
    tf.dispose([x, y]);
    opt.dispose();
    head.dispose();
    return changed;
  }

  it.each([
    ['MobileNet', () => new MobileNetV1(null, { outputStride: 16, norm: 'batch', seed: 1 }), /^(conv1|conv_(dw|pw)_[123])(_bn)?\./, 21],
    ['ResNet', () => new ResNet({ width: 8, depth: [1, 1, 1, 1], outputStride: 16, seed: 1 }), /^(stem|stage1)\./, 9],
  ] as const)('%s: stage 1 keeps its weights and statistics, every later variable moves', (_, make, stage1, count) => {
    const net = make();
    expect(net.freezeStages(1)).toBe(count); // kernels, gamma and beta; statistics are never trainable
    const changed = changedBy(net);
    const names = [...net.params.named().keys()];
    expect(changed.filter((k) => stage1.test(k))).toEqual([]);
    expect(changed.sort()).toEqual(names.filter((k) => !stage1.test(k)).sort());
    net.dispose();
    // control: unfrozen, stage 1 moves too
    const free = make();
    expect(changedBy(free).filter((k) => stage1.test(k)).length).toBe(names.filter((k) => stage1.test(k)).length);
    free.dispose();
  });

  it('every stage frozen leaves nothing of the backbone trainable; out of range is an error', () => {
    const net = new MobileNetV1(null, { outputStride: 16, norm: 'frozen' });
    expect(() => net.freezeStages(5)).toThrow(/frozen stages must be an integer from 0 to 4/);
    expect(() => net.freezeStages(1.5)).toThrow(/got 1.5/);
    expect(net.freezeStages(0)).toBe(0);
    net.freezeStages(4);
    expect(net.variables()).toEqual([]);
    // one-way: a smaller count afterwards unfreezes nothing
    expect(net.freezeStages(1)).toBe(0);
    expect(net.variables()).toEqual([]);
    net.dispose();
  });
});

describe('trainStep', () => {
  function setup() {
    const net = new ResNet({ width: 8, depth: [1, 1, 1, 1], outputStride: 8, seed: 1 });
    const head = new CamHead(net.channels[3], NUM_CLASSES, { seed: 2 });
    const opt = new SGD(
      [
        { name: 'backbone', params: net.params.namedTrainable('backbone/') },
        { name: 'head', params: head.params.namedTrainable('head/'), lrMult: 10 },
      ],
      { lr: 0.01, momentum: 0.9, weightDecay: 1e-4 },
    );
    return { net, head, opt };
  }

  it('updates BN moving averages from the batch statistics, after the step', () => {
    const { net, head, opt } = setup();
    const { x, y } = batch(3);
    // Expected stem moving mean: 0.9 * 0 + 0.1 * mean of the stem conv output, computed with the
    // kernel as it was before the step (the statistics come from the forward pass).
    const expected = tf.tidy(() => tf.mul(tf.mean(tf.conv2d(x, net.params.get('stem.conv.kernel') as tf.Tensor4D, 2, 'same'), [0, 1, 2]), 0.1));
    const nBn = [...net.params.named().keys()].filter((k) => k.endsWith('.moving_mean')).length;
    const r = trainStep(opt, (u) => lossFn(net, head, x, y, u));
    expect(r.normUpdates).toBe(nBn);
    expect(Number.isFinite(r.loss)).toBe(true);
    const got = Array.from(net.params.get('stem.norm.moving_mean').dataSync());
    const want = Array.from(expected.dataSync());
    got.forEach((g, i) => expect(g).toBeCloseTo(want[i], 4));
    expect(want.some((v) => Math.abs(v) > 1e-3)).toBe(true);
    // every BN layer moved its variance away from the initial 1
    for (const [k, v] of net.params.named()) {
      if (k.endsWith('.moving_variance')) expect(Array.from(v.dataSync()).some((e) => Math.abs(e - 1) > 1e-6)).toBe(true);
    }
    tf.dispose([x, y, expected]);
    opt.dispose();
    net.dispose();
    head.dispose();
  });

  it('three steps of backbone + head + MLSM + SGD leave tf.memory().numTensors unchanged', () => {
    const { net, head, opt } = setup();
    const { x, y } = batch(4);
    const counts: number[] = [];
    const losses: number[] = [];
    for (let i = 0; i < 4; i++) {
      losses.push(trainStep(opt, (u) => lossFn(net, head, x, y, u)).loss);
      counts.push(tf.memory().numTensors);
    }
    // step 1 creates the momentum buffers; after that nothing may accumulate
    expect(counts.slice(1)).toEqual([counts[0], counts[0], counts[0]]);
    expect(opt.iterations).toBe(4);
    // and it learns something on a fixed batch
    expect(losses[3]).toBeLessThan(losses[0]);
    tf.dispose([x, y]);
    opt.dispose();
    net.dispose();
    head.dispose();
  });

  it('refuses a non-finite loss without changing weights or statistics', () => {
    const { net, head, opt } = setup();
    const { x, y } = batch(5);
    const k = net.params.get('stage1.block0.conv1.kernel');
    const before = Array.from(k.dataSync());
    const mm = Array.from(net.params.get('stem.norm.moving_mean').dataSync());
    const n0 = tf.memory().numTensors;
    expect(() => trainStep(opt, (u) => tf.mul(lossFn(net, head, x, y, u), NaN) as tf.Scalar)).toThrow(/training loss is NaN/);
    expect(Array.from(k.dataSync())).toEqual(before);
    expect(Array.from(net.params.get('stem.norm.moving_mean').dataSync())).toEqual(mm);
    expect(opt.iterations).toBe(0);
    expect(tf.memory().numTensors).toBe(n0);
    tf.dispose([x, y]);
    opt.dispose();
    net.dispose();
    head.dispose();
  });
});
