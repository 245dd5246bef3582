import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import {
  applyColorJitter,
  applyHorizontalFlip,
  colorJitter,
  cropAndResizeBatch,
  randomHorizontalFlip,
  randomResizedCrop,
  sampleResizedCrops,
} from '../../nn/augment.js';
import { Rng } from '../../nn/rng.js';

beforeAll(async () => {
  await initBackend();
  expect(tf.getBackend()).toBe('tensorflow');
});

const vals = (t: tf.Tensor) => Array.from(t.dataSync());
/** Images [2, 6, 8, 3] with distinct values 0..287 (kept in [0,255] where needed by callers). */
const ramp = () => tf.reshape(tf.range(0, 2 * 6 * 8 * 3, 1, 'float32'), [2, 6, 8, 3]) as tf.Tensor4D;

describe('random resized crop', () => {
  it('is deterministic given the seed, and the seed matters', () => {
    const x = ramp();
    const a = randomResizedCrop(x, new Rng(5), { size: [4, 4] });
    const b = randomResizedCrop(x, new Rng(5), { size: [4, 4] });
    const c = randomResizedCrop(x, new Rng(6), { size: [4, 4] });
    expect(a.boxes).toEqual(b.boxes);
    expect(vals(a.images)).toEqual(vals(b.images));
    expect(a.images.shape).toEqual([2, 4, 4, 3]);
    expect(c.boxes).not.toEqual(a.boxes);
    tf.dispose([x, a.images, b.images, c.images]);
  });

  it('samples boxes inside the image within the scale and ratio ranges', () => {
    const rng = new Rng(1);
    const boxes = sampleResizedCrops(rng, 500, 100, 150, { size: [32, 32], scale: [0.2, 0.9], ratio: [0.5, 2] });
    for (const b of boxes) {
      expect(b.top).toBeGreaterThanOrEqual(0);
      expect(b.left).toBeGreaterThanOrEqual(0);
      expect(b.top + b.height).toBeLessThanOrEqual(100);
      expect(b.left + b.width).toBeLessThanOrEqual(150);
      const area = (b.height * b.width) / (100 * 150);
      expect(area).toBeGreaterThan(0.2 * 0.9); // rounding slack
      expect(area).toBeLessThan(0.9 * 1.1);
      expect(b.width / b.height).toBeGreaterThan(0.5 * 0.9);
      expect(b.width / b.height).toBeLessThan(2 * 1.1);
    }
    // varied, not one fallback box
    expect(new Set(boxes.map((b) => `${b.top},${b.left},${b.height},${b.width}`)).size).toBeGreaterThan(400);
  });

  it('the full box at the input size is the identity; a box at its own size is a slice', () => {
    const x = ramp();
    const full = cropAndResizeBatch(x, [0, 1].map(() => ({ top: 0, left: 0, height: 6, width: 8 })), [6, 8]);
    expect(vals(full)).toEqual(vals(x));
    const box = { top: 1, left: 2, height: 4, width: 5 };
    const crop = cropAndResizeBatch(x, [box, box], [4, 5]);
    expect(vals(crop)).toEqual(vals(tf.slice(x, [0, 1, 2, 0], [2, 4, 5, 3])));
    tf.dispose([x, full, crop]);
  });

  it("crops label maps with 'nearest' keeping only existing labels", () => {
    const labels = tf.tensor4d([0, 1, 2, 255, 0, 1, 2, 255, 3, 3, 3, 3, 4, 4, 4, 4], [1, 4, 4, 1]);
    const out = cropAndResizeBatch(labels, [{ top: 0, left: 0, height: 4, width: 4 }], [7, 9], 'nearest', 255);
    const set = new Set(vals(out));
    for (const v of set) expect([0, 1, 2, 3, 4, 255]).toContain(v);
    expect(set.size).toBe(6);
    tf.dispose([labels, out]);
  });
});

describe('horizontal flip', () => {
  it('mirrors exactly the flagged images', () => {
    const x = ramp();
    const y = applyHorizontalFlip(x, [true, false]);
    const x0 = tf.slice(x, [0, 0, 0, 0], [1, 6, 8, 3]);
    const x1 = tf.slice(x, [1, 0, 0, 0], [1, 6, 8, 3]);
    expect(vals(tf.slice(y, [0, 0, 0, 0], [1, 6, 8, 3]))).toEqual(vals(tf.reverse(x0, 2)));
    expect(vals(tf.slice(y, [1, 0, 0, 0], [1, 6, 8, 3]))).toEqual(vals(x1));
    // pixel (r, c) of image 0 comes from (r, 7 - c)
    expect(vals(tf.slice(y, [0, 2, 1, 0], [1, 1, 1, 3]))).toEqual(vals(tf.slice(x, [0, 2, 6, 0], [1, 1, 1, 3])));
    const r1 = randomHorizontalFlip(x, new Rng(2));
    const r2 = randomHorizontalFlip(x, new Rng(2));
    expect(r1.flips).toEqual(r2.flips);
    expect(vals(r1.images)).toEqual(vals(r2.images));
    tf.dispose([x, y, x0, x1, r1.images, r2.images]);
  });
});

describe('colour jitter', () => {
  const img = () => tf.tensor4d([200, 100, 50, 10, 20, 30], [1, 1, 2, 3]);

  it('is the identity with unit factors', () => {
    const y = applyColorJitter(img(), [{ brightness: 1, contrast: 1, saturation: 1 }]);
    expect(vals(y)).toEqual([200, 100, 50, 10, 20, 30].map((v) => expect.closeTo(v, 3)));
  });

  it('brightness scales and clips; saturation 0 gives grey; contrast 0 gives the mean grey', () => {
    expect(vals(applyColorJitter(img(), [{ brightness: 1.5, contrast: 1, saturation: 1 }]))).toEqual(
      [255, 150, 75, 15, 30, 45].map((v) => expect.closeTo(v, 3)),
    );
    const g0 = 0.299 * 200 + 0.587 * 100 + 0.114 * 50; // 124.2
    const g1 = 0.299 * 10 + 0.587 * 20 + 0.114 * 30; // 18.11
    expect(vals(applyColorJitter(img(), [{ brightness: 1, contrast: 1, saturation: 0 }]))).toEqual(
      [g0, g0, g0, g1, g1, g1].map((v) => expect.closeTo(v, 3)),
    );
    const m = (g0 + g1) / 2;
    expect(vals(applyColorJitter(img(), [{ brightness: 1, contrast: 0, saturation: 1 }]))).toEqual(new Array(6).fill(expect.closeTo(m, 3)));
  });

  it('samples factors in range, deterministically', () => {
    const x = tf.tile(img(), [4, 1, 1, 1]) as tf.Tensor4D;
    const a = colorJitter(x, new Rng(3), { brightness: 0.3, contrast: 0.3, saturation: 0.3 });
    const b = colorJitter(x, new Rng(3), { brightness: 0.3, contrast: 0.3, saturation: 0.3 });
    expect(a.factors).toEqual(b.factors);
    expect(vals(a.images)).toEqual(vals(b.images));
    for (const f of a.factors) for (const v of Object.values(f)) expect(v >= 0.7 && v <= 1.3).toBe(true);
    expect(new Set(a.factors.map((f) => f.brightness)).size).toBe(4);
    tf.dispose([x, a.images, b.images]);
  });
});
