import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { disposeFeatures, type Features } from '../../nn/backbone.js';
import { ResNet } from '../../nn/resnet.js';
import { AffinityHead, affinities, setAffinityEngine } from '../../nn/affinity_head.js';
import { pairWasmAvailable } from '../../ops/affinity_wasm.js';
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

/**
 * The WebAssembly engine (ops/affinity_wasm.ts, the default where D % 16 = 0) against the plain
 * formula's autodiff and against the TensorFlow engine (the tests above run that one: D < 16).
 */
describe('affinities, wasm engine', () => {
  afterEach(() => void setAffinityEngine('wasm'));
  const maxDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
  const offsets = neighbourOffsets(5); // PSA's radius: 34 offsets, rf = 4

  it('takes D = 32 and leaves D = 20 to TensorFlow', () => {
    const grid = { B: 1, gh: 9, gw: 12, ph: 5, pw: 4, rf: 4, offsets };
    expect(pairWasmAvailable({ ...grid, D: 32 })).toBe(true);
    expect(pairWasmAvailable({ ...grid, D: 20 })).toBe(false);
  });

  it('values match the plain formula and the tf engine, region and full layouts', () => {
    const f = tf.randomNormal([2, 9, 12, 32], 0, 1, 'float32', 21) as tf.Tensor4D;
    const before = tf.memory().numTensors;
    const a = affinities(f, offsets, 5);
    const full = affinities(f, offsets, 5, 'full');
    expect(tf.memory().numTensors).toBe(before + 2);
    expect(a.shape).toEqual([2, 34, 5, 4]);
    expect(maxDiff(a, affinitiesReference(f, offsets, 5))).toBeLessThan(1e-6);
    setAffinityEngine('tf');
    expect(maxDiff(full, affinities(f, offsets, 5, 'full'))).toBeLessThan(1e-6);
    // control: the tolerance sees one offset's maps moved to the next offset
    const shifted = tf.concat([tf.slice(a, [0, 1, 0, 0], [2, 33, 5, 4]), tf.slice(a, [0, 0, 0, 0], [2, 1, 5, 4])], 1);
    expect(maxDiff(shifted, a)).toBeGreaterThan(1e-2);
    tf.dispose([f, a, full, shifted]);
  });

  it('gradient matches autodiff of the plain formula (region, full through the pad); one offset missing is seen', () => {
    const f = tf.randomNormal([2, 9, 12, 16], 0, 1, 'float32', 22) as tf.Tensor4D;
    const wts = tf.randomUniform([2, offsets.length, 5, 4], -1, 1, 'float32', 23);
    const loss = (fn: (x: tf.Tensor4D) => tf.Tensor4D, w = wts) => (x: tf.Tensor) => tf.sum(tf.mul(fn(x as tf.Tensor4D), w));
    const before = tf.memory().numTensors;
    const g = tf.grad(loss((x) => affinities(x, offsets, 5)))(f);
    expect(tf.memory().numTensors).toBe(before + 1);
    const gRef = tf.grad(loss((x) => affinitiesReference(x, offsets, 5)))(f);
    expect(maxDiff(g, gRef)).toBeLessThan(1e-5); // 34 terms summed in another order
    expect(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0])).toBeGreaterThan(1e-3);
    const gFull = tf.grad((x: tf.Tensor) => tf.sum(affinities(x as tf.Tensor4D, offsets, 5, 'full')))(f);
    const gFullRef = tf.grad((x: tf.Tensor) => tf.sum(affinitiesReference(tf.pad(x as tf.Tensor4D, [[0, 0], [0, 4], [4, 4], [0, 0]]), offsets, 5)))(f);
    expect(maxDiff(gFull, gFullRef)).toBeLessThan(1e-5);
    // control: the reference without offset 7's term differs by more than the tolerance
    const mask = tf.tidy(() => tf.concat([tf.ones([2, 7, 5, 4]), tf.zeros([2, 1, 5, 4]), tf.ones([2, 26, 5, 4])], 1));
    const wMissing = tf.mul(wts, mask);
    const gMissing = tf.grad(loss((x) => affinitiesReference(x, offsets, 5), wMissing))(f);
    expect(maxDiff(g, gMissing)).toBeGreaterThan(1e-3);
    tf.dispose([f, wts, g, gRef, gFull, gFullRef, mask, wMissing, gMissing]);
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
