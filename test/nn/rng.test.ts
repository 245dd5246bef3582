import { describe, expect, it } from 'vitest';
import { Rng } from '../../nn/rng.js';

describe('Rng', () => {
  it('is deterministic per seed and differs across seeds', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const c = new Rng(43);
    const xa = Array.from({ length: 8 }, () => a.nextUint32());
    const xb = Array.from({ length: 8 }, () => b.nextUint32());
    const xc = Array.from({ length: 8 }, () => c.nextUint32());
    expect(xa).toEqual(xb);
    expect(xa).not.toEqual(xc);
    expect(new Rng('cam').next()).toBe(new Rng('cam').next());
    expect(new Rng('cam').next()).not.toBe(new Rng('aff').next());
  });

  it('continues the same stream after a JSON state round trip', () => {
    const r = new Rng(7);
    for (let i = 0; i < 5; i++) r.next();
    const saved = JSON.parse(JSON.stringify(r.state()));
    const expected = [r.next(), r.normal(), r.int(0, 10), r.uniform(-1, 1)];
    const restored = Rng.fromState(saved);
    expect([restored.next(), restored.normal(), restored.int(0, 10), restored.uniform(-1, 1)]).toEqual(expected);
  });

  it('rejects invalid states', () => {
    expect(() => Rng.fromState({ algo: 'xoshiro128**', s: [0, 0, 0, 0] })).toThrow(/invalid Rng state/);
    expect(() => Rng.fromState({ algo: 'mt' as 'xoshiro128**', s: [1, 2, 3, 4] })).toThrow(/invalid Rng state/);
  });

  it('draws in range with plausible moments', () => {
    const r = new Rng(1);
    let sum = 0;
    let sq = 0;
    const n = 20000;
    const counts = new Array(5).fill(0);
    for (let i = 0; i < n; i++) {
      const u = r.next();
      expect(u >= 0 && u < 1).toBe(true);
      counts[r.int(0, 5)]++;
      const z = r.normal();
      sum += z;
      sq += z * z;
    }
    expect(Math.abs(sum / n)).toBeLessThan(0.05);
    expect(Math.abs(sq / n - 1)).toBeLessThan(0.05);
    for (const c of counts) expect(Math.abs(c / n - 0.2)).toBeLessThan(0.02);
  });

  it('shuffles to a permutation and forks independent children', () => {
    const r = new Rng(3);
    const arr = r.shuffle([0, 1, 2, 3, 4, 5, 6, 7]);
    expect([...arr].sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    const parent = new Rng(5);
    const child = parent.fork();
    expect(child.next()).not.toBe(parent.next());
  });
});
