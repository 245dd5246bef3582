/**
 * Pure parts of the cam stage: class bookkeeping, float16 storage, and the evaluation functions
 * every later stage reuses (threshold sweep with a bg class, argmax over tags without).
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_THRESHOLDS, ThresholdSweep, camLabels, resizeBilinear } from '../../maps/evaluate.js';
import { decodeFloat16, encodeFloat16, fromHalf, toHalf } from '../../maps/f16.js';
import { classMap, foregroundTags, tagTarget } from '../../maps/labels.js';

describe('cam labels', () => {
  it('background is never an output; targets are multi-hot over the outputs', () => {
    const m = classMap(['background', 'cow', 'grass', 'sky'], 0);
    expect(m.outputs).toEqual([1, 2, 3]);
    expect(Array.from(tagTarget(m, [3, 1]))).toEqual([1, 0, 1]);
    expect(Array.from(tagTarget(m, [0, 2]))).toEqual([0, 1, 0]); // a bg tag is dropped
    expect(foregroundTags(m, [3, 0, 1, 3])).toEqual([1, 3]);
    expect(() => tagTarget(m, [4], 'img7')).toThrow(/img7.*tag 4/);
  });

  it('without background every class is an output', () => {
    const m = classMap(['building', 'grass', 'tree'], null);
    expect(m.outputs).toEqual([0, 1, 2]);
    expect(Array.from(tagTarget(m, [0, 2]))).toEqual([1, 0, 1]);
    expect(foregroundTags(m, [2, 0])).toEqual([0, 2]);
    expect(() => classMap(['a'], 3)).toThrow(/background/);
    expect(() => classMap(['background'], 0)).toThrow(/no foreground/);
  });
});

describe('float16 storage', () => {
  it('round-trips exactly representable values and is within half an ulp otherwise', () => {
    const v = Float32Array.from([0, 1, 0.5, 0.25, 2 ** -14, 2 ** -24, 65504, -3.5]);
    expect(Array.from(decodeFloat16(encodeFloat16(v)))).toEqual(Array.from(v));
    for (let i = 0; i < 1000; i++) {
      const x = i / 999;
      const y = fromHalf(toHalf(x));
      expect(Math.abs(y - x)).toBeLessThanOrEqual(2 ** -12 + 1e-9); // half ulp in [0.5, 1]
    }
    expect(toHalf(1)).toBe(0x3c00);
    expect(toHalf(70000)).toBe(0x7c00); // overflow -> inf
  });
});

describe('cam evaluation', () => {
  it('resizeBilinear matches half-pixel-centre interpolation', () => {
    // 1x2 -> 1x4: centres at -0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped 1)
    const out = resizeBilinear(Float32Array.from([0, 1]), 1, 1, 2, 1, 4);
    expect(Array.from(out)).toEqual([0, 0.25, 0.75, 1]);
    const same = Float32Array.from([1, 2, 3, 4, 5, 6]);
    expect(Array.from(resizeBilinear(same, 2, 1, 3, 1, 3))).toEqual(Array.from(same));
  });

  it('camLabels: argmax over [bg = threshold, maps] with bg; argmax over tags without', () => {
    // two maps (classes 2 and 5) over 4 pixels
    const maps = Float32Array.from([0.9, 0.3, 0.1, 0.0, 0.2, 0.6, 0.15, 0.0]);
    expect(Array.from(camLabels(maps, [2, 5], 1, 4, 0, 0.25))).toEqual([2, 5, 0, 0]);
    expect(Array.from(camLabels(maps, [2, 5], 1, 4, 0, 0.12))).toEqual([2, 5, 5, 0]);
    expect(Array.from(camLabels(maps, [2, 5], 1, 4, null))).toEqual([2, 5, 5, 2]); // ties -> first tag
    expect(Array.from(camLabels(new Float32Array(0), [], 1, 2, null))).toEqual([255, 255]);
  });

  it('the sweep picks the threshold that separates object from background', () => {
    // 1 class (1) + bg (0). Object pixels score 0.5..0.9, background pixels 0.1..0.28:
    // any threshold in [0.28, 0.5) is perfect, 0.30 is the first such one in the sweep.
    const obj = [0.9, 0.7, 0.5];
    const bg = [0.28, 0.2, 0.1];
    const maps = Float32Array.from([...obj, ...bg]);
    const mask = Uint8Array.from([1, 1, 1, 0, 0, 0]);
    const sweep = new ThresholdSweep(2, 0);
    sweep.add(maps, [1], mask, 1, 6);
    const r = sweep.result();
    expect(DEFAULT_THRESHOLDS).toHaveLength(12);
    expect(DEFAULT_THRESHOLDS[0]).toBe(0.05);
    expect(DEFAULT_THRESHOLDS[11]).toBe(0.6);
    expect(r.curve).toHaveLength(12);
    expect(r.best.threshold).toBe(0.3);
    expect(r.best.miou).toBe(1);
    expect(r.curve.find((p) => p.threshold === 0.05)!.miou).toBeCloseTo(0.5 * (0 + 3 / 6), 6); // all fg: bg IoU 0, fg 3/6
    expect(r.curve.find((p) => p.threshold === 0.6)!.miou).toBeLessThan(1);
  });

  it('without bg the sweep is one argmax labelling and ignores void pixels', () => {
    const maps = Float32Array.from([1, 0.2, 0.5, 0.1, 0.9, 0.4]); // classes 0 and 2, 3 pixels
    const mask = Uint8Array.from([0, 2, 255]);
    const sweep = new ThresholdSweep(3, null);
    sweep.add(maps, [0, 2], mask, 1, 3);
    const r = sweep.result();
    expect(r.curve).toEqual([{ threshold: null, miou: 1 }]);
    expect(r.best.threshold).toBeNull();
    const wrong = new ThresholdSweep(3, null);
    wrong.add(maps, [2, 0], mask, 1, 3); // channels swapped: every pixel wrong
    expect(wrong.result().best.miou).toBe(0);
  });

  it('addStrided upsamples stride maps to the mask size', () => {
    const sweep = new ThresholdSweep(2, 0);
    // a 1x2 map (left hot) upsampled to 1x8; mask: left half class 1
    sweep.addStrided(Float32Array.from([1, 0]), [1], 1, 2, Uint8Array.from([1, 1, 1, 1, 0, 0, 0, 0]), 1, 8);
    expect(sweep.result().best.miou).toBe(1);
  });
});
