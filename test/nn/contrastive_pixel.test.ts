import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { createContrastLoss } from '../../nn/contrastive/index.js';
import { PixelContrast, contrastLoss, sampleAnchors } from '../../nn/contrastive/pixel.js';
import { Rng } from '../../nn/rng.js';
import { initBackend } from '../../pipeline/backend.js';

beforeAll(async () => {
  await initBackend();
});

const opts = { classes: 2, dim: 2, memorySize: 4, pixelsPerImage: 2, temperature: 1, baseTemperature: 1, maxSamples: 2, maxViews: 1 };

/** Plain JS InfoNCE of one anchor (see pixel.ts): -mean_{m in P} [l_m - log(exp(l_m) + sum_N exp(l_n))]. */
function anchorLoss(a: number[], mem: number[][], memCls: number[], cls: number, T: number): number {
  const l = mem.map((m) => (a[0] * m[0] + a[1] * m[1]) / T);
  const neg = l.reduce((s, v, j) => s + (memCls[j] !== cls ? Math.exp(v) : 0), 0);
  const pos = l.map((v, j) => (memCls[j] === cls ? v - Math.log(Math.exp(v) + neg) : null)).filter((v): v is number => v !== null);
  return -pos.reduce((s, v) => s + v, 0) / pos.length;
}

describe('contrastLoss', () => {
  it('matches the formula by hand on 2 anchors and 3 memory entries', () => {
    const a = tf.tensor2d([[1, 0], [0, 1]]);
    const m = tf.tensor2d([[1, 0], [0, 1], [0.6, 0.8]]);
    const loss = contrastLoss(a, [0, 1], m, [0, 1, 0], 0.5, 0.5);
    // anchor 0 (class 0): logits 2, 0, 1.2; positives m0, m2; negative m1: sum e^0 = 1
    const l0 = -((2 - Math.log(Math.exp(2) + 1)) + (1.2 - Math.log(Math.exp(1.2) + 1))) / 2;
    // anchor 1 (class 1): logits 0, 2, 1.6; positive m1; negatives m0, m2
    const l1 = -(2 - Math.log(Math.exp(2) + 1 + Math.exp(1.6)));
    expect(loss.dataSync()[0]).toBeCloseTo((l0 + l1) / 2, 5);
    // temperature / baseTemperature scales the loss
    const scaled = contrastLoss(a, [0, 1], m, [0, 1, 0], 0.5, 1);
    expect(scaled.dataSync()[0]).toBeCloseTo(0.5 * (l0 + l1) / 2, 5);
    tf.dispose([a, m, loss, scaled]);
  });

  it('within the batch (no memory) leaves each anchor out of its own positives; anchors without positives drop out', () => {
    const a = tf.tensor2d([[1, 0], [0.8, 0.6], [0, 1]]);
    const loss = contrastLoss(a, [0, 0, 1], a, [0, 0, 1], 1, 1, true);
    const rows = [[1, 0], [0.8, 0.6], [0, 1]];
    // anchor 2 (class 1) has no other class-1 entry: dropped; anchors 0 and 1 are each other's positive
    const lp = (i: number, j: number) => {
      const l = rows.map((r) => rows[i][0] * r[0] + rows[i][1] * r[1]);
      return l[j] - Math.log(Math.exp(l[j]) + Math.exp(l[2]));
    };
    expect(loss.dataSync()[0]).toBeCloseTo(-(lp(0, 1) + lp(1, 0)) / 2, 5);
    tf.dispose([a, loss]);
  });
});

describe('sampleAnchors', () => {
  it('takes half hard and half easy per (image, class), skipping classes with <= maxViews pixels and 255', () => {
    // one image of 8 pixels: class 0 at 0..3 (predicted 0, 0, 1, 1: 2 easy, 2 hard), class 1 at 4..5, 255 at 6..7
    const y = Int32Array.from([0, 0, 0, 0, 1, 1, 255, 255]);
    const pred = Int32Array.from([0, 0, 1, 1, 0, 1, 0, 0]);
    const a = sampleAnchors(y, pred, 1, 8, { maxSamples: 100, maxViews: 2 }, new Rng(1));
    // class 1 has 2 pixels (not > maxViews 2): skipped; class 0: nView = min(100 / 1, 2) = 2 -> 1 hard + 1 easy
    expect(a.cls).toEqual([0, 0]);
    expect([2, 3]).toContain(a.index[0]);
    expect([0, 1]).toContain(a.index[1]);
    // too few hard pixels (1 < nView / 2 = 1.5): the easy ones fill in, 1 hard + 2 easy
    const b = sampleAnchors(y, Int32Array.from([0, 0, 0, 1, 1, 1, 0, 0]), 1, 8, { maxSamples: 100, maxViews: 3 }, new Rng(1));
    expect(b.cls).toEqual([0, 0, 0]);
    expect(b.index[0]).toBe(3);
    expect(b.index.slice(1).every((i) => [0, 1, 2].includes(i))).toBe(true);
    expect(new Set(b.index).size).toBe(3);
  });
});

describe('PixelContrast memory', () => {
  it('enqueue of K items moves the pointer by K modulo the size and writes the right slots', () => {
    const pc = new PixelContrast(opts);
    const rows = (vals: number[]) => tf.tensor2d(vals.flatMap((v) => [v, -v]), [vals.length, 2]);
    const r1 = rows([1, 2, 3]);
    pc.enqueue('pixel', r1, [0, 0, 0]);
    expect(pc.state().pixelPtr).toEqual([3, 0]);
    expect(pc.state().pixelCount).toEqual([3, 0]);
    const r2 = rows([4, 5, 6]);
    pc.enqueue('pixel', r2, [0, 0, 0]);
    // slots 3, 0, 1 of class 0 take 4, 5, 6; pointer 6 mod 4 = 2 (the official code would say 2 after both calls: +1 each)
    expect(pc.state().pixelPtr).toEqual([2, 0]);
    expect(pc.state().pixelCount).toEqual([4, 0]);
    const r3 = rows([7]);
    pc.enqueue('pixel', r3, [1]);
    expect(pc.state().pixelPtr).toEqual([2, 1]);
    const q = pc.pixelQueue!.arraySync() as number[][];
    expect(q.map((r) => r[0])).toEqual([5, 6, 3, 4, 7, 0, 0, 0]);
    expect(q[0][1]).toBe(-5);
    // the region queue is separate
    expect(pc.state().regionPtr).toEqual([0, 0]);
    // more than `size` rows of a class in one call: as if written one by one
    const r4 = rows([10, 11, 12, 13, 14]);
    pc.enqueue('region', r4, [1, 1, 1, 1, 1]);
    expect(pc.state().regionPtr).toEqual([0, 1]);
    expect((pc.regionQueue!.arraySync() as number[][]).slice(4).map((r) => r[0])).toEqual([14, 11, 12, 13]);
    tf.dispose([r1, r2, r3, r4]);
    pc.dispose();
  });

  it('update enqueues min(n, pixelsPerImage) normalised pixels and one normalised class mean per (image, class)', () => {
    const pc = new PixelContrast(opts);
    // B=1, 1 x 5: class 0 at 0..2, class 1 at 3, 255 at 4
    const emb = tf.tensor4d([3, 4, 3, 4, 0, 2, 1, 0, 9, 9], [1, 1, 5, 2]);
    const labels = tf.tensor3d([0, 0, 0, 1, 255], [1, 1, 5], 'int32');
    const probs = tf.tensor4d([1, 0, 1, 0, 1, 0, 0, 1, 1, 0], [1, 1, 5, 2]);
    const before = tf.memory().numTensors;
    pc.update({ embeddings: emb, labels, probs }, new Rng(3));
    expect(tf.memory().numTensors).toBe(before);
    const s = pc.state();
    expect(s.pixelPtr).toEqual([2, 1]);
    expect(s.regionPtr).toEqual([1, 1]);
    const region = pc.regionQueue!.arraySync() as number[][];
    // class 0 mean (2, 10/3) normalised; class 1: (1, 0)
    const n0 = Math.hypot(2, 10 / 3);
    expect(region[0][0]).toBeCloseTo(2 / n0, 5);
    expect(region[0][1]).toBeCloseTo(10 / 3 / n0, 5);
    expect(region[4]).toEqual([1, 0]);
    const pix = pc.pixelQueue!.arraySync() as number[][];
    for (const r of pix.slice(0, 2)) {
      expect(Math.hypot(r[0], r[1])).toBeCloseTo(1, 5);
      expect([[0.6, 0.8].join(), [0, 1].join()]).toContain(r.map((v) => Math.round(v * 1e5) / 1e5).join());
    }
    expect(pix[4]).toEqual([1, 0]);
    tf.dispose([emb, labels, probs]);
    pc.dispose();
  });
});

describe('PixelContrast loss', () => {
  // B=1, 1 x 6, D=2: class 0 at 0..1 (pixel 1 predicted 1: hard), class 1 at 2..3 (equal embeddings), 255 at 4..5
  const E = [1, 0, 0.6, 0.8, 0, 1, 0, 1, 0.8, -0.6, -1, 0];
  const Y = [0, 0, 1, 1, 255, 255];
  const Pr = [0.9, 0.1, 0.2, 0.8, 0.1, 0.9, 0.1, 0.9, 0.5, 0.5, 0.5, 0.5];
  const batch = (e = E, p = Pr) => ({
    embeddings: tf.tensor4d(e, [1, 1, 6, 2]),
    labels: tf.tensor3d(Y, [1, 1, 6], 'int32'),
    probs: tf.tensor4d(p, [1, 1, 6, 2]),
    tags: [[0, 1]],
    pixels: [new Uint8Array(18)],
  });
  const dispose = (b: ReturnType<typeof batch>) => tf.dispose([b.embeddings, b.labels, b.probs]);

  function withMemory(): PixelContrast {
    const pc = new PixelContrast(opts);
    const px = tf.tensor2d([[1, 0], [0, 1], [0.6, 0.8]]);
    const rg = tf.tensor2d([[0.8, 0.6]]);
    pc.enqueue('pixel', px, [0, 1, 0]);
    pc.enqueue('region', rg, [1]);
    tf.dispose([px, rg]);
    return pc;
  }

  it('is zero with an empty memory and matches the hand-computed value with one', () => {
    const b = batch();
    const empty = new PixelContrast(opts);
    const z = empty.loss(b, new Rng(0));
    expect(z.dataSync()[0]).toBe(0);
    const pc = withMemory();
    const loss = pc.loss(b, new Rng(0));
    // maxViews 1, maxSamples 2 -> one anchor per class: class 0 -> nView 1: 0 hard + 1 easy (pixel 0 = [1, 0]);
    // class 1 -> pixel 2 or 3 (both [0, 1]). Memory: pixel rows [1,0] c0, [0,1] c1, [0.6,0.8] c0; region [0.8,0.6] c1
    const mem = [[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6]];
    const memCls = [0, 1, 0, 1];
    const expected = (anchorLoss([1, 0], mem, memCls, 0, 1) + anchorLoss([0, 1], mem, memCls, 1, 1)) / 2;
    expect(loss.dataSync()[0]).toBeCloseTo(expected, 5);
    tf.dispose([z, loss]);
    dispose(b);
    empty.dispose();
    pc.dispose();
  });

  it('sends a non-zero gradient to the embeddings and none to ignored pixels', () => {
    const pc = withMemory();
    const b = batch();
    const g = tf.grad((e: tf.Tensor) => pc.loss({ ...b, embeddings: e as tf.Tensor4D }, new Rng(0)))(b.embeddings);
    const gv = Array.from(g.dataSync());
    expect(gv.slice(0, 8).some((v) => Math.abs(v) > 1e-4)).toBe(true);
    expect(gv.slice(8)).toEqual([0, 0, 0, 0]);
    tf.dispose(g);
    dispose(b);
    pc.dispose();
  });

  it('ignored pixels never contribute: changing their embeddings and probabilities leaves the loss unchanged', () => {
    const pc = withMemory();
    const b1 = batch();
    const b2 = batch([...E.slice(0, 8), 0, 1, 1, 0], [...Pr.slice(0, 8), 0.99, 0.01, 0.01, 0.99]);
    const l1 = pc.loss(b1, new Rng(5));
    const l2 = pc.loss(b2, new Rng(5));
    expect(l2.dataSync()[0]).toBe(l1.dataSync()[0]);
    tf.dispose([l1, l2]);
    dispose(b1);
    dispose(b2);
    pc.dispose();
  });

  it('leaks no tensors (loss inside tidy, update outside) and exposes its memory under stable names', () => {
    const n0 = tf.memory().numTensors;
    const tmp = new PixelContrast(opts);
    expect(tf.memory().numTensors).toBe(n0 + 6);
    tmp.dispose();
    expect(tf.memory().numTensors).toBe(n0);
    const pc = createContrastLoss('pixel', { classes: 2, dim: 2, seed: 0, pixel: { memorySize: 4, maxViews: 1, maxSamples: 2, pixelsPerImage: 2 } }) as PixelContrast;
    expect([...pc.variables().keys()]).toEqual(['pixel_queue', 'pixel_ptr', 'pixel_count', 'region_queue', 'region_ptr', 'region_count']);
    const b = batch();
    const ev = tf.variable(b.embeddings, true);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) {
      tf.tidy(() => {
        const { value, grads } = tf.variableGrads(() => pc.loss({ ...b, embeddings: ev as tf.Tensor4D }, new Rng(i)), [ev]);
        expect(value.dataSync()[0]).toBeGreaterThanOrEqual(0);
        tf.dispose([value, ...Object.values(grads)]);
      });
      pc.update!({ embeddings: b.embeddings, labels: b.labels, probs: b.probs }, new Rng(i));
    }
    expect(pc.state().regionCount).toEqual([3, 3]);
    expect(tf.memory().numTensors).toBe(before);
    dispose(b);
    ev.dispose();
    pc.dispose();
  });

  it('without memory contrasts the anchors among themselves (temperature 0.1 path)', () => {
    const pc = new PixelContrast({ ...opts, memorySize: 0, maxViews: 1, maxSamples: 4 });
    expect(pc.variables().size).toBe(0);
    // two images: each class has 2 pixels per image -> 4 anchors, 2 per class
    const e = [1, 0, 1, 0, 0, 1, 0, 1, 0.6, 0.8, 0.6, 0.8, 0.8, 0.6, 0.8, 0.6];
    const b = {
      embeddings: tf.tensor4d(e, [2, 1, 4, 2]),
      labels: tf.tensor3d([0, 0, 1, 1, 0, 0, 1, 1], [2, 1, 4], 'int32'),
      probs: tf.tensor4d(Array.from({ length: 8 }, (_, i) => (i % 4 < 2 ? [1, 0] : [0, 1])).flat(), [2, 1, 4, 2]),
      tags: [[0, 1], [0, 1]],
      pixels: [new Uint8Array(12), new Uint8Array(12)],
    };
    const loss = pc.loss(b, new Rng(0));
    // anchors: [1,0] c0, [0,1] c1, [0.6,0.8] c0, [0.8,0.6] c1 (one pixel per (image, class); equal pixels within a pair)
    const A = [[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6]];
    const C = [0, 1, 0, 1];
    const one = (i: number) => anchorLoss(A[i], A.filter((_, j) => j !== i), C.filter((_, j) => j !== i), C[i], 1);
    // self excluded from positives but kept in the normaliser only via the positives: recompute exactly
    const exact = (i: number) => {
      const l = A.map((r) => A[i][0] * r[0] + A[i][1] * r[1]);
      const neg = l.reduce((s, v, j) => s + (C[j] !== C[i] ? Math.exp(v) : 0), 0);
      const pos = l.map((v, j) => (C[j] === C[i] && j !== i ? v - Math.log(Math.exp(v) + neg) : null)).filter((v): v is number => v !== null);
      return -pos.reduce((s, v) => s + v, 0) / pos.length;
    };
    expect(one(0)).toBeCloseTo(exact(0), 10);
    expect(loss.dataSync()[0]).toBeCloseTo((exact(0) + exact(1) + exact(2) + exact(3)) / 4, 5);
    tf.dispose([loss, b.embeddings, b.labels, b.probs]);
  });
});
