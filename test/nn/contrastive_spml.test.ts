import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { createContrastLoss } from '../../nn/contrastive/index.js';
import { SPML_DEFAULTS, SpmlContrast, type SpmlOptions, type SpmlSegments, intersectSegments, segsortNll } from '../../nn/contrastive/spml.js';
import { Rng } from '../../nn/rng.js';
import { kmeans } from '../../ops/kmeans.js';
import { slic } from '../../ops/slic.js';
import { initBackend } from '../../pipeline/backend.js';

beforeAll(async () => {
  await initBackend();
});

describe('segsortNll', () => {
  it('matches SegSort+ by hand: other same-label prototypes in the numerator, the own one when there is none', () => {
    const e = tf.tensor2d([[1, 0], [0, 1]]);
    const p = tf.tensor2d([[1, 0], [0.6, 0.8], [0, 1]]);
    // pixel 0: own segment 0, same = {0, 1}, other same exists (1); pixel 1: own 2, same = {2} only
    const nll = segsortNll(e, p, tf.tensor1d([0, 2], 'int32'), tf.tensor2d([[1, 1, 0], [0, 0, 1]]), tf.tensor1d([1, 0]), 2);
    const ex = (v: number) => Math.exp(2 * v);
    const n0 = ex(0.6);
    const l0 = -Math.log(n0 / (n0 + ex(0)));
    const n1 = ex(1);
    const l1 = -Math.log(n1 / (n1 + ex(0) + ex(0.8)));
    const v = nll.dataSync();
    expect(v[0]).toBeCloseTo(l0, 5);
    expect(v[1]).toBeCloseTo(l1, 5);
    tf.dispose([e, p, nll]);
  });
});

describe('intersectSegments', () => {
  it('numbers the distinct (image, cluster, label, superpixel) keys in order of appearance', () => {
    const r = intersectSegments(Int32Array.from([0, 0, 0, 0, 1]), Int32Array.from([0, 0, 1, 0, 0]), Int32Array.from([2, 2, 2, 3, 2]), Int32Array.from([5, 6, 5, 5, 5]));
    expect(Array.from(r.segment)).toEqual([0, 1, 2, 3, 4]);
    const s = intersectSegments(Int32Array.from([0, 0, 0, 1]), Int32Array.from([1, 1, 0, 1]), Int32Array.from([0, 0, 0, 0]), Int32Array.from([4, 4, 4, 4]));
    expect(Array.from(s.segment)).toEqual([0, 0, 1, 2]);
    expect(s.segImage).toEqual([0, 0, 1]);
    expect(s.segSuperpixel).toEqual([4, 4, 4]);
  });
});

/** A 2-image batch 4 x 6, D = 2: two embedding directions (left / right) and two colours (top / bottom). */
function makeBatch(over: { e?: number[]; labels?: number[] } = {}) {
  const B = 2;
  const h = 4;
  const w = 6;
  const e: number[] = [];
  const pixels: Uint8Array[] = [];
  for (let b = 0; b < B; b++) {
    const rgb = new Uint8Array(h * w * 3);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const t = 0.1 * (y + b);
        const v = x < 3 ? [Math.cos(t), Math.sin(t)] : [-Math.sin(t), Math.cos(t)];
        e.push(...v);
        rgb.set(y < 2 ? [220, 40, 40] : [40, 40, 220], 3 * (y * w + x));
      }
    }
    pixels.push(rgb);
  }
  // image 0: class 1 on the left, 2 on the right, two ignored pixels; image 1: class 1 and 0 (background)
  const labels = over.labels ?? [
    ...[1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 255, 1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 255],
    ...[1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0],
  ];
  return {
    embeddings: tf.tensor4d(over.e ?? e, [B, h, w, 2]),
    labels: tf.tensor3d(labels, [B, h, w], 'int32'),
    probs: tf.fill([B, h, w, 3], 1 / 3) as tf.Tensor4D,
    // disjoint tags (background aside), so the co-occurrence relation has both same and different prototypes
    tags: [[2], [0, 1]],
    pixels,
  };
}
type Batch = ReturnType<typeof makeBatch>;
const disposeBatch = (b: Batch) => tf.dispose([b.embeddings, b.labels, b.probs]);

const OPTS: SpmlOptions = { ...SPML_DEFAULTS, classes: 3, dim: 2, seed: 11, background: 0, clusters: 3, superpixels: 4, kmeansIters: 5 };

/** The SPML loss recomputed in plain JS from the segments (file comment of spml.ts). */
function referenceLoss(b: Batch, seg: SpmlSegments, o: SpmlOptions): number {
  const [B, h, w, d] = b.embeddings.shape;
  const E = b.embeddings.dataSync();
  const P = seg.pixels.length;
  const S = seg.segImage.length;
  const emb = (i: number, loc: boolean) => {
    const p = seg.pixels[i];
    const v = Array.from(E.slice(p * d, (p + 1) * d));
    if (!loc) return v;
    const q = p % (h * w);
    v.push(Math.floor(q / w) / (h - 1) - 0.5, (q % w) / (w - 1) - 0.5);
    const n = Math.hypot(...v);
    return v.map((x) => x / n);
  };
  const protos = (loc: boolean) => {
    const sums = Array.from({ length: S }, () => new Array<number>(d + (loc ? 2 : 0)).fill(0));
    for (let i = 0; i < P; i++) emb(i, loc).forEach((x, j) => (sums[seg.segment[i]][j] += x));
    return sums.map((s) => s.map((x) => x / Math.hypot(...s)));
  };
  const dot = (a: number[], c: number[]) => a.reduce((s, x, j) => s + x * c[j], 0);
  const nll = (i: number, loc: boolean, k: number, same: (s: number) => boolean, use: (s: number) => boolean, pr: number[][]) => {
    const e = emb(i, loc);
    const own = seg.segment[i];
    let others = 0;
    let hasOther = false;
    let diff = 0;
    for (let s = 0; s < S; s++) {
      if (!use(s)) continue;
      const v = Math.exp(k * dot(e, pr[s]));
      if (same(s)) {
        if (s !== own) {
          others += v;
          hasOther = true;
        }
      } else diff += v;
    }
    const num = hasOther ? others : Math.exp(k * dot(e, pr[own]));
    return -Math.log(num / (num + diff));
  };
  const pr = protos(false);
  const prLoc = protos(true);
  const tagSets = b.tags.map((t) => new Set(t.filter((c) => c !== o.background)));
  const share = (i: number, j: number) => [...tagSets[i]].some((c) => tagSets[j].has(c));
  let ann = 0;
  let occ = 0;
  for (let i = 0; i < P; i++) {
    ann += nll(i, false, o.annotationConcentration, (s) => seg.segLabel[s] === seg.label[i], () => true, pr);
    occ += nll(i, false, o.cooccurrenceConcentration, (s) => share(seg.image[i], seg.segImage[s]), () => true, pr);
  }
  let low = 0;
  let images = 0;
  for (let im = 0; im < B; im++) {
    let sum = 0;
    let n = 0;
    for (let i = 0; i < P; i++) {
      if (seg.image[i] !== im) continue;
      sum += nll(i, true, o.lowlevelConcentration, (s) => seg.segSuperpixel[s] === seg.superpixel[i], (s) => seg.segImage[s] === im, prLoc);
      n++;
    }
    if (n > 0) {
      low += sum / n;
      images++;
    }
  }
  return (o.annotationWeight * ann) / P + (o.cooccurrenceWeight * occ) / P + (o.lowlevelWeight * low) / images;
}

describe('SpmlContrast', () => {
  it('segments = k-means clusters (embedding + location) intersected with labels and SLIC superpixels', () => {
    const spml = new SpmlContrast(OPTS);
    const b = makeBatch();
    const seg = spml.segments(b, new Rng(3));
    expect(seg.counts).toEqual([22, 24]);
    // replay: the same seeds and inputs give the same clusters and superpixels
    const rng = new Rng(3);
    const E = b.embeddings.dataSync();
    const Y = b.labels.dataSync();
    let start = 0;
    for (let im = 0; im < 2; im++) {
      const rows: number[][] = [];
      for (let q = 0; q < 24; q++) {
        const p = im * 24 + q;
        if (Y[p] === 255) continue;
        const v = [E[2 * p], E[2 * p + 1], Math.floor(q / 6) / 3 - 0.5, (q % 6) / 5 - 0.5];
        rows.push(v.map((x) => x / Math.hypot(...v)));
      }
      const seed = (Math.imul(11, 0x9e3779b1) ^ rng.nextUint32()) >>> 0;
      const x = tf.tensor2d(rows);
      const km = kmeans(x, 3, { iters: 5, seed, spherical: true });
      expect(Array.from(seg.cluster.subarray(start, start + rows.length))).toEqual(Array.from(km.assign.dataSync()));
      tf.dispose([x, km.centroids, km.assign]);
      const sp = slic(b.pixels[im], 4, 6, { segments: 4, compactness: 10 }).labels;
      seg.pixels.subarray(start, start + rows.length).forEach((p, r) => expect(seg.superpixel[start + r]).toBe(sp[p - im * 24]));
      start += rows.length;
    }
    // same segment <=> same image, cluster, label and superpixel
    for (let i = 0; i < seg.pixels.length; i++) {
      for (let j = 0; j < seg.pixels.length; j++) {
        const key = (k: number) => [seg.image[k], seg.cluster[k], seg.label[k], seg.superpixel[k]].join();
        expect(seg.segment[i] === seg.segment[j]).toBe(key(i) === key(j));
      }
    }
    // the colours split top from bottom, so no segment spans both halves
    for (let s = 0; s < seg.segImage.length; s++) {
      const rows = new Set([...seg.pixels].filter((_, i) => seg.segment[i] === s).map((p) => Math.floor((p % 24) / 6) < 2));
      expect(rows.size).toBe(1);
    }
    disposeBatch(b);
  });

  it('equals the plain-JS SegSort+ of the three relations on the same segments', () => {
    const spml = new SpmlContrast(OPTS);
    const b = makeBatch();
    const seg = spml.segments(b, new Rng(5));
    const loss = spml.loss(b, new Rng(5));
    expect(loss.dataSync()[0]).toBeCloseTo(referenceLoss(b, seg, OPTS), 4);
    // each relation on its own
    for (const only of ['annotationWeight', 'cooccurrenceWeight', 'lowlevelWeight'] as const) {
      const o = { ...OPTS, annotationWeight: 0, cooccurrenceWeight: 0, lowlevelWeight: 0, [only]: 1 };
      const l = new SpmlContrast(o).loss(b, new Rng(5));
      const ref = referenceLoss(b, seg, o);
      expect(ref).toBeGreaterThan(0);
      expect(l.dataSync()[0]).toBeCloseTo(ref, 4);
      l.dispose();
    }
    loss.dispose();
    disposeBatch(b);
  });

  it('sends a non-zero gradient to valid pixels, none to ignored ones, whose values do not matter', () => {
    const spml = new SpmlContrast(OPTS);
    const b = makeBatch();
    const g = tf.grad((x: tf.Tensor) => spml.loss({ ...b, embeddings: x as tf.Tensor4D }, new Rng(5)))(b.embeddings);
    const gv = g.dataSync();
    const Y = b.labels.dataSync();
    let nonzero = 0;
    Y.forEach((y, p) => {
      const n = Math.hypot(gv[2 * p], gv[2 * p + 1]);
      if (y === 255) expect(n).toBe(0);
      else if (n > 1e-6) nonzero++;
    });
    expect(nonzero).toBeGreaterThan(30);
    const e2 = Array.from(b.embeddings.dataSync());
    Y.forEach((y, p) => {
      if (y === 255) e2.splice(2 * p, 2, 0.6, -0.8);
    });
    const b2 = makeBatch({ e: e2 });
    const l1 = spml.loss(b, new Rng(7));
    const l2 = spml.loss(b2, new Rng(7));
    expect(l2.dataSync()[0]).toBe(l1.dataSync()[0]);
    tf.dispose([g, l1, l2]);
    disposeBatch(b);
    disposeBatch(b2);
  });

  it('leaks no tensors and checks its inputs', () => {
    const spml = createContrastLoss('spml', { classes: 3, dim: 2, seed: 1, background: 0, spml: { clusters: 3, superpixels: 4 } });
    const b = makeBatch();
    const ev = tf.variable(b.embeddings, true);
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => spml.loss({ ...b, embeddings: ev as tf.Tensor4D }, new Rng(1)), [ev]);
      expect(value.dataSync()[0]).toBeGreaterThan(0);
      tf.dispose([value, ...Object.values(grads)]);
    });
    expect(tf.memory().numTensors).toBe(before);
    expect(() => spml.loss({ ...b, pixels: [b.pixels[0]] }, new Rng(1))).toThrow(/pixel arrays/);
    expect(() => spml.loss({ ...b, tags: [[1]] }, new Rng(1))).toThrow(/tag lists/);
    const bad = makeBatch({ labels: new Array<number>(48).fill(7) });
    expect(() => spml.loss(bad, new Rng(1))).toThrow(/label 7/);
    disposeBatch(bad);
    ev.dispose();
    disposeBatch(b);
  });
});
