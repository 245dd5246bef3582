import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { createContrastLoss } from '../../nn/contrastive/index.js';
import { RecoContrast, activeSamplingProbs, recoGroups, sampleReco } from '../../nn/contrastive/reco.js';
import { Rng } from '../../nn/rng.js';
import { initBackend } from '../../pipeline/backend.js';

beforeAll(async () => {
  await initBackend();
});

describe('activeSamplingProbs', () => {
  it('is softmax over the other classes of cos(p_i, p_j) / T, zero for the query class', () => {
    const cos = [1, 0.5, -0.2, 0.5, 1, 0.1, -0.2, 0.1, 1];
    const p = activeSamplingProbs(cos, 3, 0, 0.5);
    const z = Math.exp(1) + Math.exp(-0.4);
    expect(p[0]).toBe(0);
    expect(p[1]).toBeCloseTo(Math.exp(1) / z, 10);
    expect(p[2]).toBeCloseTo(Math.exp(-0.4) / z, 10);
    const q = activeSamplingProbs(cos, 3, 2, 0.5);
    expect(q[0]).toBeCloseTo(Math.exp(-0.4) / (Math.exp(-0.4) + Math.exp(0.2)), 10);
    expect(q[2]).toBe(0);
  });

  it('sampleReco draws negative classes with those frequencies and queries among the hard pixels only', () => {
    // three classes, 2 valid pixels each; class 0's hard pixel is 1
    const g = { classes: [0, 1, 2], valid: [[0, 1], [2, 3], [4, 5]], hard: [[1], [], [5]] };
    const cos = [1, 0.5, -0.2, 0.5, 1, 0.1, -0.2, 0.1, 1];
    const s = sampleReco(g, cos, { temperature: 0.5, numQueries: 100, numNegatives: 200 }, new Rng(2));
    expect(s.slots).toEqual([0, 2]); // class 1 has no hard pixel
    expect(s.queries.slice(0, 100).every((q) => q === 1)).toBe(true);
    expect(s.queries.slice(100).every((q) => q === 5)).toBe(true);
    // keys index the concatenated valid lists: class j's pixels at 2j, 2j + 1
    const keys0 = s.keys.slice(0, 20000);
    const freq1 = keys0.filter((k) => k === 2 || k === 3).length / keys0.length;
    const p = activeSamplingProbs(cos, 3, 0, 0.5);
    expect(keys0.every((k) => k >= 2)).toBe(true); // never its own class
    expect(freq1).toBeCloseTo(p[1], 2);
    const keys2 = s.keys.slice(20000);
    expect(keys2.every((k) => k < 4)).toBe(true);
  });
});

describe('recoGroups', () => {
  it('keeps label != 255 with confidence >= 0.7, hard = own-class probability < 0.97', () => {
    const y = Int32Array.from([0, 0, 1, 255, 1]);
    const probs = Float32Array.from([0.8, 0.2, 0.98, 0.02, 0.1, 0.9, 0.5, 0.5, 0.6, 0.4]);
    const g = recoGroups(y, probs, 2, { strongThreshold: 0.97, weakThreshold: 0.7 });
    // pixel 4: label 1 but confidence 0.6 -> not valid
    expect(g).toEqual({ classes: [0, 1], valid: [[0, 1], [2]], hard: [[0], [2]] });
  });
});

describe('RecoContrast', () => {
  // B=1, 1 x 5, D=2: class 0 at 0 (hard) and 1 (easy), class 1 at 2 (hard), 255 at 3, low confidence at 4
  const E = [1, 0, 0.6, 0.8, -0.6, 0.8, 0.3, -0.9, 0, -1];
  const Pr = [0.8, 0.2, 0.98, 0.02, 0.1, 0.9, 0.5, 0.5, 0.6, 0.4];
  const batch = (e = E, p = Pr) => ({
    embeddings: tf.tensor4d(e, [1, 1, 5, 2]),
    labels: tf.tensor3d([0, 0, 1, 255, 0], [1, 1, 5], 'int32'),
    probs: tf.tensor4d(p, [1, 1, 5, 2]),
    tags: [[0, 1]],
    pixels: [new Uint8Array(15)],
  });
  const dispose = (b: ReturnType<typeof batch>) => tf.dispose([b.embeddings, b.labels, b.probs]);
  const o = { classes: 2, dim: 2, temperature: 0.5, numQueries: 2, numNegatives: 3, strongThreshold: 0.97, weakThreshold: 0.7 };

  it('matches the hand-computed cross-entropy for the sampled queries and keys', () => {
    const reco = new RecoContrast(o);
    const b = batch();
    const loss = reco.loss(b, new Rng(4));
    // replay the sampling with the same stream
    const unit = (v: number[]) => v.map((x) => x / Math.hypot(...v));
    const e = [0, 1, 2].map((i) => [E[2 * i], E[2 * i + 1]]);
    const p0 = unit([e[0][0] + e[1][0], e[0][1] + e[1][1]]);
    const p1 = unit(e[2]);
    const cos01 = p0[0] * p1[0] + p0[1] * p1[1];
    const s = sampleReco({ classes: [0, 1], valid: [[0, 1], [2]], hard: [[0], [2]] }, [1, cos01, cos01, 1], o, new Rng(4));
    const dot = (a: number[], c: number[]) => a[0] * c[0] + a[1] * c[1];
    const validPix = [0, 1, 2];
    let total = 0;
    s.slots.forEach((slot, si) => {
      const proto = slot === 0 ? p0 : p1;
      let sum = 0;
      for (let q = 0; q < o.numQueries; q++) {
        const qe = e[s.queries[si * o.numQueries + q]];
        const logits = [dot(qe, proto)];
        for (let t = 0; t < o.numNegatives; t++) logits.push(dot(qe, e[validPix[s.keys[(si * o.numQueries + q) * o.numNegatives + t]]]));
        const z = logits.map((l) => l / o.temperature);
        sum += Math.log(z.reduce((acc, v) => acc + Math.exp(v), 0)) - z[0];
      }
      total += sum / o.numQueries;
    });
    expect(s.slots).toEqual([0, 1]);
    expect(loss.dataSync()[0]).toBeCloseTo(total / 2, 5);
    tf.dispose(loss);
    dispose(b);
  });

  it('sends a gradient to the queries only; ignored and low-confidence pixels never contribute', () => {
    const reco = new RecoContrast(o);
    const b = batch();
    const g = tf.grad((x: tf.Tensor) => reco.loss({ ...b, embeddings: x as tf.Tensor4D }, new Rng(4)))(b.embeddings);
    const gv = Array.from(g.dataSync());
    // pixel 0 and 2 are the only hard queries; pixel 1 is a key / prototype member only (no gradient, as ReCo)
    expect(Math.hypot(gv[0], gv[1])).toBeGreaterThan(1e-4);
    expect(Math.hypot(gv[4], gv[5])).toBeGreaterThan(1e-4);
    expect(gv.slice(2, 4)).toEqual([0, 0]);
    expect(gv.slice(6)).toEqual([0, 0, 0, 0]);
    const l1 = reco.loss(b, new Rng(9));
    const b2 = batch([...E.slice(0, 6), 1, 0, 0.6, 0.8], [...Pr.slice(0, 6), 0.99, 0.01, 0.55, 0.45]);
    const l2 = reco.loss(b2, new Rng(9));
    expect(l2.dataSync()[0]).toBe(l1.dataSync()[0]);
    tf.dispose([g, l1, l2]);
    dispose(b);
    dispose(b2);
  });

  it('is zero with one class present, and leaks no tensors', () => {
    const reco = createContrastLoss('reco', { classes: 2, dim: 2, seed: 0, reco: { numQueries: 4, numNegatives: 4 } });
    const one = {
      embeddings: tf.tensor4d([1, 0, 0, 1], [1, 1, 2, 2]),
      labels: tf.tensor3d([1, 1], [1, 1, 2], 'int32'),
      probs: tf.tensor4d([0.1, 0.9, 0.2, 0.8], [1, 1, 2, 2]),
      tags: [[1]],
      pixels: [new Uint8Array(6)],
    };
    const z = reco.loss(one, new Rng(0));
    expect(z.dataSync()[0]).toBe(0);
    const b = batch();
    const ev = tf.variable(b.embeddings, true);
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => reco.loss({ ...b, embeddings: ev as tf.Tensor4D }, new Rng(1)), [ev]);
      expect(value.dataSync()[0]).toBeGreaterThan(0);
      tf.dispose([value, ...Object.values(grads)]);
    });
    expect(tf.memory().numTensors).toBe(before);
    expect(reco.variables().size).toBe(0);
    tf.dispose([z, one.embeddings, one.labels, one.probs, ev]);
    dispose(b);
  });
});
