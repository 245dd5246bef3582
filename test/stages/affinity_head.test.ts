import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { disposeFeatures, type Features } from '../../nn/backbone.js';
import { ResNet } from '../../nn/resnet.js';
import { AffinityHead, affinities } from '../../nn/affinity_head.js';
import { affinityLoss } from '../../stages/affinity/loss.js';
import { disposePairLabels, neighbourOffsets, pairLabels, type Offset } from '../../stages/affinity/pairs.js';

beforeAll(async () => {
  await initBackend();
  expect(tf.getBackend()).toBe('tensorflow');
});

/** Plain autodiff formula of `affinities` ('region' layout), as the reference for the hand gradient. */
function affinitiesReference(f: tf.Tensor4D, offsets: Offset[], radius: number): tf.Tensor4D {
  const rf = radius - 1;
  const [b, h, w, d] = f.shape;
  const ph = h - rf;
  const pw = w - 2 * rf;
  const src = tf.slice(f, [0, 0, rf, 0], [b, ph, pw, d]);
  return tf.stack(
    offsets.map((o) => tf.exp(tf.neg(tf.mean(tf.abs(tf.sub(src, tf.slice(f, [0, o.dy, rf + o.dx, 0], [b, ph, pw, d]))), 3)))),
    1,
  ) as tf.Tensor4D;
}

describe('affinities', () => {
  // f [1, 2, 3, 2]:  (0,0) [0,0]  (0,1) [1,2]  (0,2) [1,0]
  //                  (1,0) [3,2]  (1,1) [1,2]  (1,2) [0,4]
  const F = [0, 0, 1, 2, 1, 0, 3, 2, 1, 2, 0, 4];

  it('exp(-mean |f_i - f_j|) by hand, region and full layouts', () => {
    const before = tf.memory().numTensors;
    const f = tf.tensor4d(F, [1, 2, 3, 2]);
    const offsets = neighbourOffsets(2); // (0,1) (1,-1) (1,0) (1,1)
    // region (rf = 1): one source, (0,1) = [1,2]; targets (0,2) [1,0]: mean 1; (1,0) [3,2]: 1;
    // (1,1) [1,2]: 0; (1,2) [0,4]: 1.5
    const a = affinities(f, offsets, 2);
    expect(a.shape).toEqual([1, 4, 1, 1]);
    const e1 = Math.exp(-1);
    Array.from(a.dataSync()).forEach((v, i) => expect(v).toBeCloseTo([e1, e1, 1, Math.exp(-1.5)][i], 6));
    // full: every pixel a source; source (0,0) = [0,0]: (0,1) -> 1.5, (1,0) -> 2.5, (1,1) -> 1.5
    const full = affinities(f, offsets, 2, 'full');
    expect(full.shape).toEqual([1, 4, 2, 3]);
    const at = (k: number, y: number, x: number) => full.dataSync()[(k * 2 + y) * 3 + x];
    expect(at(0, 0, 0)).toBeCloseTo(Math.exp(-1.5), 6);
    expect(at(2, 0, 0)).toBeCloseTo(Math.exp(-2.5), 6);
    expect(at(3, 0, 0)).toBeCloseTo(Math.exp(-1.5), 6);
    // the region entries reappear at their source (0, 1)
    for (let k = 0; k < 4; k++) expect(at(k, 0, 1)).toBeCloseTo(a.dataSync()[k], 6);
    tf.dispose([f, a, full]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('hand gradient equals autodiff of the plain formula', () => {
    const f = tf.randomNormal([2, 6, 7, 5], 0, 1, 'float32', 11) as tf.Tensor4D;
    const offsets = neighbourOffsets(3);
    const wts = tf.randomUniform([2, offsets.length, 4, 3], -1, 1, 'float32', 12);
    const loss = (fn: (x: tf.Tensor4D) => tf.Tensor4D) => (x: tf.Tensor) => tf.sum(tf.mul(fn(x as tf.Tensor4D), wts));
    const before = tf.memory().numTensors;
    const g = tf.grad(loss((x) => affinities(x, offsets, 3)))(f);
    expect(tf.memory().numTensors).toBe(before + 1);
    const gRef = tf.grad(loss((x) => affinitiesReference(x, offsets, 3)))(f);
    const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(g, gRef))).dataSync()[0]);
    expect(diff).toBeLessThan(1e-5);
    expect(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0])).toBeGreaterThan(1e-3);
    // full layout: autodiff through the pad, same check on f
    const gFull = tf.grad((x: tf.Tensor) => tf.sum(affinities(x as tf.Tensor4D, offsets, 3, 'full')))(f);
    const gFullRef = tf.grad((x: tf.Tensor) =>
      tf.sum(affinitiesReference(tf.pad(x as tf.Tensor4D, [[0, 0], [0, 2], [2, 2], [0, 0]]), offsets, 3)),
    )(f);
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(gFull, gFullRef))).dataSync()[0])).toBeLessThan(1e-5);
    tf.dispose([f, wts, g, gRef, gFull, gFullRef]);
  });
});

describe('AffinityHead', () => {
  function features(seed: number): { net: ResNet; feats: Features; x: tf.Tensor4D } {
    // strides [4, 8, 8, 8], channels [8, 16, 32, 64]; 32 x 40 input -> 8 x 10 and 4 x 5 maps
    const net = new ResNet({ width: 8, depth: [1, 1, 1, 1], outputStride: 8, seed });
    const x = tf.randomUniform([2, 32, 40, 3], -1, 1, 'float32', seed) as tf.Tensor4D;
    return { net, feats: net.forward(x, false), x };
  }

  it('PSA defaults: last three levels -> 64/128/256 -> 448; grid size default and explicit', () => {
    const { net, feats, x } = features(1);
    const head = new AffinityHead(net.channels);
    expect(head.levels).toEqual([1, 2, 3]);
    expect(head.params.get('reduce2.kernel').shape).toEqual([1, 1, 64, 256]);
    expect(head.embed.shape).toEqual([1, 1, 448, 448]);
    const before = tf.memory().numTensors;
    const f = head.forward(feats, false);
    expect(f.shape).toEqual([2, 4, 5, 448]);
    // stride-4 grid (IRN): the size of level 0
    const f4 = head.forward(feats, false, undefined, [8, 10]);
    expect(f4.shape).toEqual([2, 8, 10, 448]);
    tf.dispose([f, f4]);
    expect(tf.memory().numTensors).toBe(before);
    expect(() => new AffinityHead(net.channels, { levels: [0, 1] })).toThrow(/reduce/);
    expect(() => new AffinityHead(net.channels, { levels: [4] , reduce: [8] })).toThrow(/levels/);
    head.dispose();
    disposeFeatures(feats);
    x.dispose();
    net.dispose();
  });

  it('the loss has a non-zero gradient w.r.t. every head variable, and nothing leaks', () => {
    const { net, feats, x } = features(2);
    const head = new AffinityHead(net.channels, { levels: [0, 1, 3], reduce: [8, 8, 16], dim: 16, seed: 3 });
    const radius = 3;
    const offsets = neighbourOffsets(radius);
    // label grid 8 x 10 (stride 4): left half bg (0), right half class 4, an ignored stripe
    const lab = new Int32Array(2 * 8 * 10);
    for (let b = 0; b < 2; b++) for (let y = 0; y < 8; y++) for (let xx = 0; xx < 10; xx++) lab[(b * 8 + y) * 10 + xx] = xx === 5 ? 255 : xx < 5 ? 0 : 4;
    const labels = tf.tensor3d(lab, [2, 8, 10], 'int32');
    const pairs = pairLabels(labels, offsets, radius, 0);
    const before = tf.memory().numTensors;
    const { value, grads } = tf.variableGrads(() => {
      const f = head.forward(feats, true, undefined, [8, 10]);
      const t = affinityLoss(affinities(f, offsets, radius), pairs);
      tf.dispose([t.bgPos, t.fgPos, t.neg]);
      return t.loss;
    }, head.variables());
    expect(Number.isFinite(value.dataSync()[0])).toBe(true);
    expect(value.dataSync()[0]).toBeGreaterThan(0);
    expect(Object.keys(grads)).toHaveLength(head.variables().length);
    for (const [name, g] of Object.entries(grads)) {
      const norm = tf.tidy(() => tf.sum(tf.abs(g)).dataSync()[0]);
      expect(Number.isFinite(norm), name).toBe(true);
      expect(norm, name).toBeGreaterThan(0);
    }
    tf.dispose([value, ...Object.values(grads)]);
    expect(tf.memory().numTensors).toBe(before);
    disposePairLabels(pairs);
    labels.dispose();
    head.dispose();
    disposeFeatures(feats);
    x.dispose();
    net.dispose();
  });
});
