import { describe, expect, it } from 'vitest';
import { enforceConnectivity, rgbToLab, slic } from '../../ops/slic.js';

/** h x w RGB image from a colour function. */
function image(h: number, w: number, colour: (y: number, x: number) => [number, number, number]): Uint8Array {
  const out = new Uint8Array(h * w * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out.set(colour(y, x), 3 * (y * w + x));
  return out;
}

/** Every label 0..count-1 is used and its pixels form one 4-connected component. */
function expectConnectedContiguous(labels: Int32Array, count: number, h: number, w: number): void {
  const seen = new Set(labels);
  expect([...seen].sort((a, b) => a - b)).toEqual([...Array(count).keys()]);
  for (let l = 0; l < count; l++) {
    const first = labels.indexOf(l);
    const visited = new Uint8Array(h * w);
    const stack = [first];
    visited[first] = 1;
    let n = 0;
    while (stack.length) {
      const p = stack.pop()!;
      n++;
      const y = Math.floor(p / w);
      const x = p % w;
      for (const [yy, xx] of [[y, x - 1], [y, x + 1], [y - 1, x], [y + 1, x]]) {
        if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
        const q = yy * w + xx;
        if (!visited[q] && labels[q] === l) {
          visited[q] = 1;
          stack.push(q);
        }
      }
    }
    expect(n).toBe(labels.filter((v) => v === l).length);
  }
}

describe('rgbToLab', () => {
  it('maps white, black and pure red to their CIELAB values', () => {
    const { l, a, b } = rgbToLab(new Uint8Array([255, 255, 255, 0, 0, 0, 255, 0, 0]), 3);
    expect(l[0]).toBeCloseTo(100, 2);
    expect(a[0]).toBeCloseTo(0, 2);
    expect(b[0]).toBeCloseTo(0, 2);
    expect(l[1]).toBeCloseTo(0, 5);
    // sRGB red: L 53.24, a 80.09, b 67.20 (standard D65 conversion)
    expect(l[2]).toBeCloseTo(53.24, 1);
    expect(a[2]).toBeCloseTo(80.09, 1);
    expect(b[2]).toBeCloseTo(67.2, 1);
  });
});

describe('slic', () => {
  it('never lets a superpixel straddle a colour edge; labels are contiguous and connected', () => {
    const h = 24;
    const w = 30;
    // edge at x = 13, off the 6-pixel grid, so the grid alone would cut across it
    const img = image(h, w, (_y, x) => (x < 13 ? [200, 30, 30] : [30, 30, 200]));
    const { labels, count } = slic(img, h, w, { segments: 20, compactness: 10 });
    expect(labels.length).toBe(h * w);
    expectConnectedContiguous(labels, count, h, w);
    for (let l = 0; l < count; l++) {
      const sides = new Set<boolean>();
      labels.forEach((v, p) => {
        if (v === l) sides.add(p % w < 13);
      });
      expect(sides.size).toBe(1);
    }
    expect(count).toBeGreaterThanOrEqual(15);
    expect(count).toBeLessThanOrEqual(30);
  });

  it('splits a uniform image into the requested grid of similar, connected cells', () => {
    const { labels, count } = slic(image(30, 30, () => [120, 120, 120]), 30, 30, { segments: 9, compactness: 10 });
    expect(count).toBe(9);
    expectConnectedContiguous(labels, count, 30, 30);
    for (let l = 0; l < count; l++) {
      const size = labels.filter((v) => v === l).length;
      expect(size).toBeGreaterThanOrEqual(64);
      expect(size).toBeLessThanOrEqual(144);
    }
  });

  it('is deterministic', () => {
    let s = 7;
    const noise = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) % 256;
    const img = image(20, 20, () => [noise(), noise(), noise()]);
    const a = slic(img, 20, 20, { segments: 12, compactness: 5 });
    const b = slic(img, 20, 20, { segments: 12, compactness: 5 });
    expect(b.count).toBe(a.count);
    expect(Array.from(b.labels)).toEqual(Array.from(a.labels));
    expectConnectedContiguous(a.labels, a.count, 20, 20);
  });

  it('rejects a wrong buffer size and bad options', () => {
    expect(() => slic(new Uint8Array(10), 2, 2, { segments: 2, compactness: 10 })).toThrow(/expected 12 bytes/);
    expect(() => slic(new Uint8Array(12), 2, 2, { segments: 0, compactness: 10 })).toThrow(/segments/);
    expect(() => slic(new Uint8Array(12), 2, 2, { segments: 1, compactness: 0 })).toThrow(/compactness/);
  });
});

describe('enforceConnectivity', () => {
  it('relabels components in scan order and merges one smaller than minSize into its neighbour', () => {
    // 3 x 4:  0 0 1 1
    //         0 2 1 1      the lone 2 (size 1) joins the component left of it (0)
    //         0 0 1 0      the 0 at (2, 3) is cut off from the other 0s: its own component (size 1 -> merged into 1)
    const label = Int32Array.from([0, 0, 1, 1, 0, 2, 1, 1, 0, 0, 1, 0]);
    const merged = enforceConnectivity(label, 3, 4, 2);
    expect(merged.count).toBe(2);
    expect(Array.from(merged.labels)).toEqual([0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1]);
    const kept = enforceConnectivity(label, 3, 4, 1);
    expect(kept.count).toBe(4);
    expect(Array.from(kept.labels)).toEqual([0, 0, 1, 1, 0, 2, 1, 1, 0, 0, 1, 3]);
  });
});
