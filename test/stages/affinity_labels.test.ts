import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { affinityLabels, combineAgreement, combineConfidence, confidenceMaps, noBackgroundLabels } from '../../stages/affinity/labels.js';

beforeAll(async () => {
  await initBackend();
  expect(tf.getBackend()).toBe('tensorflow');
});

describe('affinity labels with a background class (IRN rule)', () => {
  // 2 x 3 grid, tagged classes 7 and 2 (dataset indices), background 0
  const A = [0.9, 0.2, 0.04, 0.3, 0.1, 0.5]; // class 7
  const B = [0.1, 0.25, 0.01, 0.0, 0.6, 0.5]; // class 2
  // pixel 0: 0.9 > 0.30 -> 7. pixel 1: 0.25 is in (0.05, 0.30] -> fg map bg, bg map 2 -> 255.
  // pixel 2: 0.04 <= 0.05 -> both bg -> 0. pixel 3: 0.30 is not > 0.30 (tie goes to bg) -> 255.
  // pixel 4: 0.6 -> 2. pixel 5: tie 0.5 / 0.5 -> the first channel, 7.

  it('confidence maps and the combined label map by hand', () => {
    const before = tf.memory().numTensors;
    const cams = tf.tensor3d([...A, ...B], [2, 2, 3]);
    const m = confidenceMaps(cams, [7, 2], 0);
    expect(m.fg.dtype).toBe('int32');
    expect(Array.from(m.fg.dataSync())).toEqual([7, 0, 0, 0, 2, 7]);
    expect(Array.from(m.bg.dataSync())).toEqual([7, 2, 0, 7, 2, 7]);
    tf.dispose([m.fg, m.bg]);
    const labels = affinityLabels(cams, [7, 2], { background: 0 });
    expect(labels).toBeInstanceOf(Uint8Array);
    expect(Array.from(labels)).toEqual([7, 255, 0, 255, 2, 7]);
    // other thresholds: fg 0.2 makes pixel 1 (0.25) and 3 (0.3) foreground
    expect(Array.from(affinityLabels(cams, [7, 2], { background: 0, confFgThres: 0.2 }))).toEqual([7, 2, 0, 7, 2, 7]);
    cams.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('refine sees each map (dataset indices) and its output is what gets combined', () => {
    const cams = tf.tensor3d([...A, ...B], [2, 2, 3]);
    const seen: string[] = [];
    const labels = affinityLabels(cams, [7, 2], {
      background: 0,
      refine: (map, info) => {
        seen.push(`${info.which}:${info.height}x${info.width}:${Array.from(map).join(',')}`);
        const out = Uint8Array.from(map);
        if (info.which === 'fg') out[1] = 2; // the "CRF" grows class 2 into pixel 1
        else out[3] = 0; // and calls pixel 3 background in the low-threshold map
        return out;
      },
    });
    expect(seen).toEqual(['fg:2x3:7,0,0,0,2,7', 'bg:2x3:7,2,0,7,2,7']);
    expect(Array.from(labels)).toEqual([7, 2, 0, 0, 2, 7]);
    expect(() => affinityLabels(cams, [7, 2], { background: 0, refine: () => new Uint8Array(2) })).toThrow(/refinement/);
    cams.dispose();
  });

  it('combineConfidence: fg where the fg map says so, bg only where both agree', () => {
    const fg = Uint8Array.from([0, 3, 0, 3]);
    const bg = Uint8Array.from([0, 0, 3, 3]);
    expect(Array.from(combineConfidence(fg, bg, 0))).toEqual([0, 3, 255, 3]);
  });

  it('an image without foreground tags is all background; inputs are validated', () => {
    const empty = tf.zeros([0, 1, 2]) as tf.Tensor3D;
    expect(Array.from(affinityLabels(empty, [], { background: 0 }))).toEqual([0, 0]);
    empty.dispose();
    const cams = tf.zeros([2, 2, 2]) as tf.Tensor3D;
    expect(() => affinityLabels(cams, [1], { background: 0 })).toThrow(/2 CAM channels but 1/);
    expect(() => affinityLabels(cams, [0, 1], { background: 0 })).toThrow(/background class/);
    expect(() => affinityLabels(cams, [1, 1], { background: 0 })).toThrow(/twice/);
    expect(() => affinityLabels(cams, [1, 300], { background: 0 })).toThrow(/not in \[0, 255\)/);
    cams.dispose();
  });
});

describe('affinity labels without a background class (margin / floor rule)', () => {
  it('two tags by hand', () => {
    const before = tf.memory().numTensors;
    // classes 4 and 9; pixel 0: 0.9 vs 0.1 -> 4; 1: 0.5 vs 0.4 (margin 0.1 < 0.2) -> 255;
    // 2: top 0.25 < floor 0.3 -> 255; 3: 0.6 vs 0.35 -> 4; 4: 0.8 (class 9) vs 0 -> 9
    const cams = tf.tensor3d([0.9, 0.5, 0.25, 0.6, 0.0, 0.1, 0.4, 0.0, 0.35, 0.8], [2, 1, 5]);
    expect(Array.from(affinityLabels(cams, [4, 9], { background: null }))).toEqual([4, 255, 255, 4, 9]);
    // margin 0.05 makes pixel 1 confident
    expect(Array.from(affinityLabels(cams, [4, 9], { background: null, margin: 0.05 }))).toEqual([4, 4, 255, 4, 9]);
    cams.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('three tags use the top two; one tag uses the floor only; no tag ignores all', () => {
    // pixel 0: [0.2, 0.9, 0.65] -> class 2 (0.9 - 0.65 = 0.25); pixel 1: [0.7, 0.6, 0.1] -> 255
    const three = tf.tensor3d([0.2, 0.7, 0.9, 0.6, 0.65, 0.1], [3, 1, 2]);
    const t = noBackgroundLabels(three, [1, 2, 3]);
    expect(Array.from(t.dataSync())).toEqual([2, 255]);
    const one = tf.tensor3d([0.3, 0.29, 1], [1, 1, 3]);
    expect(Array.from(affinityLabels(one, [6], { background: null }))).toEqual([6, 255, 6]);
    const empty = tf.zeros([0, 1, 2]) as tf.Tensor3D;
    expect(Array.from(affinityLabels(empty, [], { background: null }))).toEqual([255, 255]);
    tf.dispose([three, t, one, empty]);
  });

  it('refine sees the confident map (255 = unsure) and the argmax map; cells keep the class both refined maps agree on', () => {
    const before = tf.memory().numTensors;
    // the two-tag case above: confident [4, 255, 255, 4, 9], argmax [4, 4, 4, 4, 9]
    const cams = tf.tensor3d([0.9, 0.5, 0.25, 0.6, 0.0, 0.1, 0.4, 0.0, 0.35, 0.8], [2, 1, 5]);
    const seen: string[] = [];
    const labels = affinityLabels(cams, [4, 9], {
      background: null,
      refine: (map, info) => {
        seen.push(`${info.which}:${info.height}x${info.width}:${Array.from(map).join(',')}`);
        const out = Uint8Array.from(map);
        if (info.which === 'confident') {
          out[1] = 4; // the "CRF" fills unsure cell 1 with class 4 ...
          out[2] = 9; // ... and cell 2 with class 9, which the refined argmax map does not confirm
        } else out[3] = 9; // and moves cell 3 to class 9 in the argmax map: disagreement -> 255
        return out;
      },
    });
    expect(seen).toEqual(['confident:1x5:4,255,255,4,9', 'argmax:1x5:4,4,4,4,9']);
    expect(Array.from(labels)).toEqual([4, 4, 255, 255, 9]);
    // one tag: nothing to refine (every cell is that class or unsure)
    const one = tf.tensor3d([0.3, 0.29, 1], [1, 1, 3]);
    let called = false;
    expect(Array.from(affinityLabels(one, [6], { background: null, refine: (m) => ((called = true), m) }))).toEqual([6, 255, 6]);
    expect(called).toBe(false);
    tf.dispose([cams, one]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('combineAgreement: the class where both maps agree, 255 elsewhere and where both are 255', () => {
    expect(Array.from(combineAgreement(Uint8Array.from([1, 2, 255, 3]), Uint8Array.from([1, 3, 255, 3])))).toEqual([1, 255, 255, 3]);
    expect(() => combineAgreement(new Uint8Array(2), new Uint8Array(3))).toThrow(/2 and 3/);
  });
});
