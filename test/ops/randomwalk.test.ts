import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import {
  buildTransition,
  chebyshevPower,
  checkOffsets,
  denseTransition,
  disposeTransition,
  neighbourOffsets,
  pairLayoutOf,
  pairRegion,
  propagate,
  randomWalk,
  withBackground,
  type Offset,
} from '../../ops/randomwalk.js';

beforeAll(async () => {
  await initBackend();
  expect(tf.getBackend()).toBe('tensorflow');
});

/**
 * Dense reference, straight from the definition: A (N x N) with A_ij = A_ji = a for every pair,
 * A_ii = 1; T = A^beta / column sums; x <- x T (x as C row vectors), `steps` times. Float64.
 */
function denseReference(
  aff: Float32Array,
  offsets: Offset[],
  radius: number,
  h: number,
  w: number,
  layout: 'region' | 'full',
  beta: number,
): Float64Array {
  const n = h * w;
  const A = new Float64Array(n * n);
  for (let i = 0; i < n; i++) A[i * n + i] = 1;
  const rf = radius - 1;
  const [ph, pw, left] = layout === 'region' ? [h - rf, w - 2 * rf, rf] : [h, w, 0];
  offsets.forEach(({ dy, dx }, k) => {
    for (let y = 0; y < ph; y++) {
      for (let x = 0; x < pw; x++) {
        const sy = y;
        const sx = x + left;
        const ty = sy + dy;
        const tx = sx + dx;
        if (ty >= h || tx < 0 || tx >= w) continue; // only possible in the full layout
        const a = aff[(k * ph + y) * pw + x];
        const i = sy * w + sx;
        const j = ty * w + tx;
        A[i * n + j] = a;
        A[j * n + i] = a;
      }
    }
  });
  const T = A.map((v) => v ** beta);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += T[i * n + j];
    for (let i = 0; i < n; i++) T[i * n + j] /= s;
  }
  return T;
}

function denseWalk(T: Float64Array, x: Float32Array, c: number, n: number, steps: number): Float64Array {
  let cur = Float64Array.from(x);
  for (let s = 0; s < steps; s++) {
    const next = new Float64Array(c * n);
    for (let ch = 0; ch < c; ch++) {
      for (let j = 0; j < n; j++) {
        let acc = 0;
        for (let i = 0; i < n; i++) acc += cur[ch * n + i] * T[i * n + j];
        next[ch * n + j] = acc;
      }
    }
    cur = next;
  }
  return cur;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('pair geometry', () => {
  it('neighbourOffsets: PSA/IRN forward half-disc, |d|^2 < r^2', () => {
    expect(neighbourOffsets(1)).toEqual([]);
    expect(neighbourOffsets(2)).toEqual([
      { dy: 0, dx: 1 },
      { dy: 1, dx: -1 },
      { dy: 1, dx: 0 },
      { dy: 1, dx: 1 },
    ]);
    // radius 3: (0,1) (0,2); dy 1: dx -2..2 (dx^2 + 1 < 9); dy 2: dx^2 + 4 < 9 -> |dx| <= 2
    expect(neighbourOffsets(3).map(({ dy, dx }) => [dy, dx])).toEqual([
      [0, 1], [0, 2],
      [1, -2], [1, -1], [1, 0], [1, 1], [1, 2],
      [2, -2], [2, -1], [2, 0], [2, 1], [2, 2],
    ]);
    // PSA radius 5: 4 + 9 + 9 + 7 + 5 = 34; IRN radius 10: 152
    expect(neighbourOffsets(5)).toHaveLength(34);
    expect(neighbourOffsets(10)).toHaveLength(152);
    expect(() => neighbourOffsets(0)).toThrow(/radius/);
    expect(() => neighbourOffsets(2.5)).toThrow(/radius/);
  });

  it('pairRegion is the PSA crop; layouts are read from the shape', () => {
    expect(pairRegion(10, 12, 3)).toEqual({ top: 0, left: 2, height: 8, width: 8 });
    expect(pairRegion(3, 3, 2)).toEqual({ top: 0, left: 1, height: 2, width: 1 });
    expect(() => pairRegion(4, 4, 3)).toThrow(/too small/);
    expect(pairLayoutOf(8, 8, 10, 12, 3)).toBe('region');
    expect(pairLayoutOf(10, 12, 10, 12, 3)).toBe('full');
    expect(() => pairLayoutOf(9, 8, 10, 12, 3)).toThrow(/neither layout/);
  });

  it('checkOffsets rejects backward, out-of-radius and duplicate offsets', () => {
    expect(() => checkOffsets(neighbourOffsets(4), 4)).not.toThrow();
    expect(() => checkOffsets([{ dy: 0, dx: -1 }], 3)).toThrow(/forward/);
    expect(() => checkOffsets([{ dy: 0, dx: 0 }], 3)).toThrow(/forward/);
    expect(() => checkOffsets([{ dy: 3, dx: 0 }], 3)).toThrow(/outside radius/);
    expect(() => checkOffsets([{ dy: 1, dx: 1 }, { dy: 1, dx: 1 }], 3)).toThrow(/twice/);
  });
});

describe('random walk against a dense reference', () => {
  const cases: [string, number, number, number, 'region' | 'full', number, number][] = [
    // name, h, w, radius, layout, beta, steps
    ['3x3 radius 2 (8-neighbourhood), full', 3, 3, 2, 'full', 8, 5],
    ['3x3 radius 2, region (PSA crop)', 3, 3, 2, 'region', 8, 5],
    ['4x5 radius 3, full', 4, 5, 3, 'full', 10, 7],
    ['5x7 radius 3, region', 5, 7, 3, 'region', 2, 16],
    ['4x18 radius 3, full (weights padded to width 32)', 4, 18, 3, 'full', 8, 4],
  ];
  it.each(cases)('%s', (_name, h, w, radius, layout, beta, steps) => {
    const offsets = neighbourOffsets(radius);
    const rf = radius - 1;
    const [ph, pw] = layout === 'region' ? [h - rf, w - 2 * rf] : [h, w];
    const C = 3;
    const before = tf.memory().numTensors;
    // affinities in [0.5, 1] so that A^beta is not negligible; map in [0, 1]
    const aff = tf.randomUniform([offsets.length, ph, pw], 0.5, 1, 'float32', 7) as tf.Tensor3D;
    const x = tf.randomUniform([C, h, w], 0, 1, 'float32', 8) as tf.Tensor3D;
    const affData = aff.dataSync() as Float32Array;
    const xData = x.dataSync() as Float32Array;
    const Tref = denseReference(affData, offsets, radius, h, w, layout, beta);

    const T = buildTransition(aff, offsets, radius, h, w, beta);
    // the sparse transition is the reference matrix, and its columns sum to 1
    const Td = denseTransition(T);
    expect(maxAbsDiff(Td.dataSync(), Tref)).toBeLessThan(1e-6);
    const colSums = tf.sum(Td, 0);
    expect(maxAbsDiff(colSums.dataSync(), new Float32Array(h * w).fill(1))).toBeLessThan(1e-6);
    // ... and no weight points outside the grid: all stored weights of a pixel sum to 1 too
    // (0 in the padding columns beyond w; weights are [h, 1, 2 rx + 1, W])
    const stored = tf.tidy(() => tf.slice(tf.addN(T.groups.map((g) => tf.sum(g.weights, [1, 2]))), [0, 0], [h, T.paddedWidth]));
    const want1 = Array.from({ length: h * T.paddedWidth }, (_, i) => (i % T.paddedWidth < w ? 1 : 0));
    expect(maxAbsDiff(stored.dataSync(), want1)).toBeLessThan(1e-6);
    stored.dispose();
    // propagation: x T^steps
    const y = propagate(x, T, steps);
    expect(y.shape).toEqual([C, h, w]);
    const want = denseWalk(Tref, xData, C, h * w, steps);
    expect(maxAbsDiff(y.dataSync(), want)).toBeLessThan(1e-5);
    // the walk moved something (the test can fail)
    expect(maxAbsDiff(y.dataSync(), xData)).toBeGreaterThan(1e-3);
    // randomWalk with steps and with logt (2^3 = 8 steps) agree with the reference too
    const z = randomWalk(x, aff, offsets, radius, { beta, steps });
    expect(maxAbsDiff(z.dataSync(), want)).toBeLessThan(1e-5);
    const z8 = randomWalk(x, aff, offsets, radius, { beta, logt: 3 });
    expect(maxAbsDiff(z8.dataSync(), denseWalk(Tref, xData, C, h * w, 8))).toBeLessThan(1e-5);

    tf.dispose([aff, x, Td, colSums, y, z, z8]);
    disposeTransition(T);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('radius 1 has no pairs: T is the identity', () => {
    const x = tf.randomUniform([2, 3, 4], 0, 1, 'float32', 1) as tf.Tensor3D;
    const aff = tf.zeros([0, 3, 4]) as tf.Tensor3D;
    const y = randomWalk(x, aff, neighbourOffsets(1), 1, { beta: 8, steps: 4 });
    expect(maxAbsDiff(y.dataSync(), x.dataSync())).toBe(0);
    tf.dispose([x, aff, y]);
  });

  it('steps 0 returns the map; default logt is 8 (256 steps)', () => {
    const offsets = neighbourOffsets(2);
    const aff = tf.randomUniform([4, 3, 3], 0.8, 1, 'float32', 2) as tf.Tensor3D;
    const x = tf.randomUniform([1, 3, 3], 0, 1, 'float32', 3) as tf.Tensor3D;
    const y0 = randomWalk(x, aff, offsets, 2, { beta: 8, steps: 0 });
    expect(maxAbsDiff(y0.dataSync(), x.dataSync())).toBe(0);
    const T = denseReference(aff.dataSync() as Float32Array, offsets, 2, 3, 3, 'full', 8);
    const y = randomWalk(x, aff, offsets, 2, { beta: 8 });
    expect(maxAbsDiff(y.dataSync(), denseWalk(T, x.dataSync() as Float32Array, 1, 9, 256))).toBeLessThan(1e-5);
    tf.dispose([aff, x, y0, y]);
  });
});

describe('random walk properties', () => {
  it('a map constant over a region cut off from the rest stays constant; a constant map stays constant', () => {
    // 4x4 grid, radius 2, full layout; zero affinity for every pair that crosses between
    // columns {0,1} and {2,3}
    const h = 4;
    const w = 4;
    const offsets = neighbourOffsets(2);
    const K = offsets.length;
    const a = new Float32Array(K * h * w);
    offsets.forEach(({ dx }, k) => {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const tx = x + dx;
          a[(k * h + y) * w + x] = x < 2 === tx < 2 ? 0.9 : 0;
        }
      }
    });
    const aff = tf.tensor3d(a, [K, h, w]);
    const m = new Float32Array(h * w);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) m[y * w + x] = x < 2 ? 0.7 : (y * w + x) / 16;
    const x = tf.tensor3d(m, [1, h, w]);
    const y = randomWalk(x, aff, offsets, 2, { beta: 8, steps: 50 });
    const out = y.dataSync();
    // within float32 rounding of the walk (the tf engine: 4e-7 off, wasm: 5.5e-7; a leak across the cut is ~1e-2)
    for (let yy = 0; yy < h; yy++) for (let xx = 0; xx < 2; xx++) expect(Math.abs(out[yy * w + xx] - 0.7)).toBeLessThan(1e-6);
    // the other side did change
    expect(Math.abs(out[3] - m[3])).toBeGreaterThan(1e-3);
    const c = tf.fill([2, h, w], 0.25) as tf.Tensor3D;
    const yc = randomWalk(c, tf.randomUniform([K, h, w], 0, 1, 'float32', 5) as tf.Tensor3D, offsets, 2, { beta: 8, steps: 20 });
    expect(maxAbsDiff(yc.dataSync(), c.dataSync())).toBeLessThan(1e-6);
    tf.dispose([aff, x, y, c, yc]);
  });

  it('leaks no tensors', () => {
    const offsets = neighbourOffsets(3);
    const aff = tf.randomUniform([offsets.length, 6, 6], 0, 1, 'float32', 4) as tf.Tensor3D;
    const x = tf.randomUniform([2, 8, 10], 0, 1, 'float32', 5) as tf.Tensor3D;
    const before = tf.memory().numTensors;
    const y = randomWalk(x, aff, offsets, 3, { beta: 8, steps: 3 });
    expect(tf.memory().numTensors).toBe(before + 1);
    y.dispose();
    const T = buildTransition(aff, offsets, 3, 8, 10, 8);
    expect(tf.memory().numTensors).toBe(before + T.groups.length);
    disposeTransition(T);
    const b = withBackground(x, { alpha: 16 });
    b.dispose();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([aff, x]);
  });

  it('validates shapes and options', () => {
    const offsets = neighbourOffsets(2);
    const x = tf.zeros([1, 3, 3]) as tf.Tensor3D;
    expect(() => randomWalk(x, tf.zeros([3, 3, 3]) as tf.Tensor3D, offsets, 2, { beta: 8 })).toThrow(/K=4/);
    expect(() => randomWalk(x, tf.zeros([4, 2, 2]) as tf.Tensor3D, offsets, 2, { beta: 8 })).toThrow(/neither layout/);
    expect(() => randomWalk(x, tf.zeros([4, 3, 3]) as tf.Tensor3D, offsets, 2, { beta: 0 })).toThrow(/beta/);
    expect(() => randomWalk(x, tf.zeros([4, 3, 3]) as tf.Tensor3D, offsets, 2, { beta: 8, steps: -1 })).toThrow(/steps/);
  });
});

describe('withBackground', () => {
  it('prepends (1 - max cam)^alpha or a constant', () => {
    // pixel 0: max 0.5 -> 0.5^2 = 0.25; pixel 1: max 1 -> 0; pixel 2: max 0.2 -> 0.64
    const cams = tf.tensor3d([0.5, 1, 0.1, 0.2, 0.3, 0.2], [2, 1, 3]);
    const a = withBackground(cams, { alpha: 2 });
    expect(a.shape).toEqual([3, 1, 3]);
    Array.from(a.dataSync()).forEach((v, i) => expect(v).toBeCloseTo([0.25, 0, 0.64, 0.5, 1, 0.1, 0.2, 0.3, 0.2][i], 6));
    const t = withBackground(cams, { threshold: 0.15 });
    expect(Array.from(t.dataSync()).slice(0, 3)).toEqual([0.15, 0.15, 0.15].map((v) => Math.fround(v)));
    const none = withBackground(tf.zeros([0, 2, 2]) as tf.Tensor3D, { alpha: 16 });
    expect(Array.from(none.dataSync())).toEqual([1, 1, 1, 1]);
    tf.dispose([cams, a, t, none]);
  });
});

describe('Chebyshev propagation (the default) against step by step', () => {
  it('has the coefficients of u^s: they sum to 1, and the truncation drops less than the tolerance', () => {
    // u^3 = (3 T1(u) + T3(u)) / 4, u^4 = (3 T0 + 4 T2 + T4) / 8
    expect(maxAbsDiff(chebyshevPower(3, 1e-12), [0, 0.75, 0, 0.25])).toBeLessThan(1e-15);
    expect(maxAbsDiff(chebyshevPower(4, 1e-12), [0.375, 0, 0.5, 0, 0.125])).toBeLessThan(1e-15);
    const c = chebyshevPower(256, 1e-9);
    expect(c.length - 1).toBeLessThan(110);
    const kept = c.reduce((a, b) => a + b, 0);
    expect(1 - kept).toBeLessThan(1e-9);
    expect(1 - kept).toBeGreaterThan(0);
    // at u = -1 and u = 1 the truncated sum is u^s within the tolerance
    const at = (u: number) => Array.from(c).reduce((a, ck, k) => a + ck * Math.cos(k * Math.acos(u)), 0);
    expect(Math.abs(at(1) - 1)).toBeLessThan(1e-9);
    expect(Math.abs(at(-1) - 1)).toBeLessThan(1e-9);
    expect(Math.abs(at(0.9) - 0.9 ** 256)).toBeLessThan(1e-9);
  });

  it('gives the maps of 256 steps within float tolerance on a 30 x 40 grid at radius 5, with fewer applications', () => {
    const [h, w, radius] = [30, 40, 5];
    const offsets = neighbourOffsets(radius);
    const aff = tf.randomUniform([offsets.length, h, w], 0.5, 1, 'float32', 11) as tf.Tensor3D;
    const x = tf.randomUniform([3, h, w], 0, 1, 'float32', 12) as tf.Tensor3D;
    const T = buildTransition(aff, offsets, radius, h, w, 8);
    const slow = propagate(x, T, 256, { method: 'steps' });
    const fast = propagate(x, T, 256);
    expect(maxAbsDiff(fast.dataSync(), slow.dataSync())).toBeLessThan(2e-6);
    // control: the walk moved the map, and 6 steps less differ by far more than the fast path does
    expect(maxAbsDiff(slow.dataSync(), x.dataSync())).toBeGreaterThan(1e-2);
    const fewer = propagate(x, T, 250, { method: 'steps' });
    expect(maxAbsDiff(fewer.dataSync(), slow.dataSync())).toBeGreaterThan(1e-5);
    // control: a loose truncation (1e-2) is measurably off, so the tolerance is what holds the maps
    const loose = propagate(x, T, 256, { tolerance: 1e-2 });
    expect(maxAbsDiff(loose.dataSync(), slow.dataSync())).toBeGreaterThan(1e-4);
    tf.dispose([aff, x, slow, fast, fewer, loose]);
    disposeTransition(T);
  });
});
