import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../nn/rng.js';
import { kmeans, kmeansPlusPlus, relocateEmpty } from '../../ops/kmeans.js';
import { initBackend } from '../../pipeline/backend.js';

beforeAll(async () => {
  await initBackend();
});

/** Centroid rows sorted lexicographically (cluster order depends on the init). */
function sortedRows(t: tf.Tensor2D): number[][] {
  const a = t.arraySync().map((r) => r.map((v) => Math.round(v * 1e4) / 1e4));
  return a.sort((p, q) => p[0] - q[0] || p[1] - q[1]);
}

describe('kmeans', () => {
  it('finds two well separated groups: centroids are the group means, assign follows them', () => {
    const x = tf.tensor2d([[0, 0], [0, 2], [2, 0], [10, 10], [10, 12], [12, 10]]);
    const before = tf.memory().numTensors;
    const { centroids, assign } = kmeans(x, 2, { iters: 10, seed: 3 });
    expect(tf.memory().numTensors).toBe(before + 2);
    expect(centroids.shape).toEqual([2, 2]);
    expect(assign.dtype).toBe('int32');
    expect(sortedRows(centroids)).toEqual([[2 / 3, 2 / 3].map((v) => Math.round(v * 1e4) / 1e4), [32 / 3, 32 / 3].map((v) => Math.round(v * 1e4) / 1e4)]);
    const a = Array.from(assign.dataSync());
    expect(a[0]).toBe(a[1]);
    expect(a[1]).toBe(a[2]);
    expect(a[3]).toBe(a[4]);
    expect(a[4]).toBe(a[5]);
    expect(a[0]).not.toBe(a[3]);
    // assign is consistent with the returned centroids
    const c = centroids.arraySync();
    expect(c[a[0]][0]).toBeCloseTo(2 / 3, 5);
    tf.dispose([x, centroids, assign]);
  });

  it('is deterministic for a seed', () => {
    const rng = new Rng(1);
    const x = tf.tensor2d(Float32Array.from({ length: 200 * 4 }, () => rng.normal()), [200, 4]);
    const r1 = kmeans(x, 5, { iters: 8, seed: 11 });
    const r2 = kmeans(x, 5, { iters: 8, seed: 11 });
    expect(Array.from(r1.centroids.dataSync())).toEqual(Array.from(r2.centroids.dataSync()));
    expect(Array.from(r1.assign.dataSync())).toEqual(Array.from(r2.assign.dataSync()));
    // Lloyd never increases the inertia: 8 iterations beat the bare init
    const r0 = kmeans(x, 5, { iters: 0, seed: 11 });
    const inertia = (r: { centroids: tf.Tensor2D; assign: tf.Tensor1D }) => tf.tidy(() => tf.sum(tf.square(tf.sub(x, tf.gather(r.centroids, r.assign)))).dataSync()[0]);
    expect(inertia(r1)).toBeLessThan(inertia(r0));
    tf.dispose([x, r0.centroids, r0.assign, r1.centroids, r1.assign, r2.centroids, r2.assign]);
  });

  it('k-means++ seeding picks rows, never a duplicate while a distinct row is left', () => {
    const rows = Float32Array.from([0, 0, 5, 5, 0, 0, 9, 1]);
    for (let seed = 0; seed < 20; seed++) {
      const c = kmeansPlusPlus(rows, 4, 2, 3, new Rng(seed));
      const picked = [0, 1, 2].map((j) => `${c[2 * j]},${c[2 * j + 1]}`);
      expect(new Set(picked).size).toBe(3);
      for (const p of picked) expect(['0,0', '5,5', '9,1']).toContain(p);
    }
  });

  it('handles more clusters than distinct rows deterministically (duplicates stay empty, no NaN)', () => {
    const x = tf.tensor2d([[1, 1], [1, 1], [1, 1], [4, 4]]);
    const r = kmeans(x, 3, { iters: 5, seed: 0 });
    const c = r.centroids.arraySync();
    expect(c.flat().every(Number.isFinite)).toBe(true);
    for (const row of c) expect(['1,1', '4,4']).toContain(row.join(','));
    const a = Array.from(r.assign.dataSync());
    expect(c[a[0]]).toEqual([1, 1]);
    expect(c[a[3]]).toEqual([4, 4]);
    const again = kmeans(x, 3, { iters: 5, seed: 0 });
    expect(again.centroids.arraySync()).toEqual(c);
    tf.dispose([x, r.centroids, r.assign, again.centroids, again.assign]);
  });

  it('relocateEmpty moves empty centres, in index order, to the farthest untaken rows', () => {
    // rows 0..3 on a line; centres 0 and 2 own them, centres 1 and 3 are empty
    const rows = Float32Array.from([0, 0, 1, 0, 5, 0, 9, 0]);
    const assign = Int32Array.from([0, 0, 2, 2]);
    const dist = Float32Array.from([0.25, 0.25, 4, 4]); // row 2 and 3 tie: the lower index wins
    const counts = Int32Array.from([2, 0, 2, 0]);
    const c = tf.tensor2d([[0.5, 0], [-1, -1], [7, 0], [-2, -2]]);
    const out = relocateEmpty(c, rows, counts, assign, dist, 2);
    expect(out.arraySync()).toEqual([[0.5, 0], [5, 0], [7, 0], [9, 0]]);
    expect(Array.from(counts)).toEqual([2, 1, 0, 1]);
    // every row on its centre (distance 0): nothing to move to, the empty centre stays
    const still = relocateEmpty(c, rows, Int32Array.from([2, 0, 2, 0]), assign, new Float32Array(4), 2);
    expect(still.arraySync()).toEqual(c.arraySync());
    tf.dispose([c, out, still]);
  });

  it('three distinct rows and k = 3 end with one centre per row for every seed', () => {
    const x = tf.tensor2d([[0, 0], [1, 0], [100, 0]]);
    for (let seed = 0; seed < 10; seed++) {
      const r = kmeans(x, 3, { iters: 4, seed });
      expect(sortedRows(r.centroids)).toEqual([[0, 0], [1, 0], [100, 0]]);
      expect(new Set(r.assign.dataSync()).size).toBe(3);
      tf.dispose([r.centroids, r.assign]);
    }
    x.dispose();
  });

  it('spherical: unit centroids, clusters by direction not length', () => {
    const x = tf.tensor2d([[1, 0], [10, 0.5], [0.2, 0], [0, 1], [0.3, 5], [0, 0.1]]);
    const r = kmeans(x, 2, { iters: 10, seed: 2, spherical: true });
    const c = r.centroids.arraySync();
    for (const row of c) expect(Math.hypot(row[0], row[1])).toBeCloseTo(1, 5);
    const a = Array.from(r.assign.dataSync());
    expect(a.slice(0, 3).every((v) => v === a[0])).toBe(true);
    expect(a.slice(3).every((v) => v === a[3])).toBe(true);
    expect(a[0]).not.toBe(a[3]);
    // Euclidean k-means groups the long rows [10, .5], [.3, 5] apart from the short ones instead
    const e = kmeans(x, 2, { iters: 10, seed: 2 });
    const ea = Array.from(e.assign.dataSync());
    expect(ea[0]).toBe(ea[3]);
    tf.dispose([x, r.centroids, r.assign, e.centroids, e.assign]);
  });

  it('rejects bad arguments', () => {
    const x = tf.tensor2d([[1, 2]]);
    expect(() => kmeans(x, 0, { iters: 1, seed: 0 })).toThrow(/positive integer/);
    expect(() => kmeans(x, 1, { iters: -1, seed: 0 })).toThrow(/iters/);
    expect(() => kmeans(tf.zeros([0, 2]) as tf.Tensor2D, 1, { iters: 1, seed: 0 })).toThrow(/N, D >= 1/);
    x.dispose();
  });
});
