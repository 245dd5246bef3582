/**
 * The refine worker pool (stages/refine/pool.ts): the same pseudo-masks as refineImage on the
 * main thread, whatever the thread count; a failing image rejects with its reason and the pool
 * keeps working.
 */
import { describe, expect, it } from 'vitest';
import { RefinePool } from '../../stages/refine/pool.js';
import { type RefineInput, type RefineSettings, refineImage } from '../../stages/refine/refine.js';

const settings: RefineSettings = {
  bg: { background: 0, mode: 'threshold', threshold: 0.25, power: 16 },
  crf: { iterations: 5, gaussian: { sxy: 3, compat: 3 }, bilateral: { sxy: 20, srgb: 10, compat: 10 }, normalization: 'symmetric' },
  ignore: { rule: 'either', margin: 0.1 },
  above: [],
};

/** A 24 x 32 image, left half dark and right half bright, and stride-4 maps of two tags leaning the same way. */
function input(seed: number): RefineInput {
  const H = 24;
  const W = 32;
  const rgb = new Uint8Array(H * W * 3);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) rgb.fill(x < W / 2 ? 30 + seed : 220 - seed, (y * W + x) * 3, (y * W + x) * 3 + 3);
  const h = 6;
  const w = 8;
  const maps = new Float32Array(2 * h * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      maps[y * w + x] = x < 4 ? 0.9 : 0.1 + 0.01 * seed;
      maps[h * w + y * w + x] = x < 4 ? 0.05 : 0.8;
    }
  }
  return { maps, tags: [1, 2], h, w, rgb, H, W };
}

describe('RefinePool', () => {
  it('gives refineImage results in the caller order with 1 and 2 threads', async () => {
    const inputs = Array.from({ length: 6 }, (_, i) => input(i));
    const expected = inputs.map((x) => refineImage(x, settings));
    for (const size of [1, 2]) {
      const pool = new RefinePool(size);
      try {
        expect(pool.size).toBeLessThanOrEqual(size);
        const got = await Promise.all(inputs.map((x) => pool.run(x, settings)));
        got.forEach((r, i) => {
          expect(Array.from(r.mask)).toEqual(Array.from(expected[i].mask));
          expect(Array.from(r.confidence)).toEqual(Array.from(expected[i].confidence));
          expect(r.ignored).toBe(expected[i].ignored);
        });
      } finally {
        await pool.close();
      }
    }
  });

  it('rejects a bad image with the reason and still serves the next one', async () => {
    const pool = new RefinePool(2);
    try {
      const bad = { ...input(0), rgb: new Uint8Array(5) };
      await expect(pool.run(bad, settings)).rejects.toThrow(/5 RGB bytes for 24 x 32/);
      const ok = await pool.run(input(1), settings);
      expect(ok.mask.length).toBe(24 * 32);
    } finally {
      await pool.close();
    }
    await expect(pool.run(input(2), settings)).rejects.toThrow(/closed/);
  });
});
