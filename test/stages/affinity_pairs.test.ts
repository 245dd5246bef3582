import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { disposePairLabels, neighbourOffsets, pairLabels } from '../../stages/affinity/pairs.js';

beforeAll(async () => {
  await initBackend();
  expect(tf.getBackend()).toBe('tensorflow');
});

// bg = 0, foreground classes 3 and 5, 255 = ignore
const MAP = [
  [0, 0, 3, 3],
  [0, 255, 3, 3],
  [0, 0, 5, 3],
  [0, 0, 5, 5],
];

const sum = (t: tf.Tensor) => tf.tidy(() => tf.sum(t).dataSync()[0]);
const perOffset = (t: tf.Tensor) => tf.tidy(() => Array.from(tf.sum(t, [1, 2]).dataSync()));

describe('pair offsets', () => {
  it('radius 1 has none, radius 2 is the forward 8-neighbourhood', () => {
    expect(neighbourOffsets(1)).toEqual([]);
    expect(neighbourOffsets(2)).toEqual([
      { dy: 0, dx: 1 },
      { dy: 1, dx: -1 },
      { dy: 1, dx: 0 },
      { dy: 1, dx: 1 },
    ]);
  });
});

describe('pairLabels', () => {
  it('classifies every pair of a hand-made 4x4 map (radius 2)', () => {
    const before = tf.memory().numTensors;
    const labels = tf.tensor2d(MAP, [4, 4], 'int32');
    const p = pairLabels(labels, neighbourOffsets(2), 2, 0);
    // sources: rows 0..2, columns 1..2 (rf = 1) -> [K=4, 3, 2], 24 pairs
    expect(p.bgPos.shape).toEqual([4, 3, 2]);
    // by hand, per offset (0,1) (1,-1) (1,0) (1,1):
    //   bg+ 0 2 1 0 = 3; fg+ 2 0 2 3 = 7; neg 3 2 1 2 = 8; none (ignored end) 1 2 2 1 = 6
    expect(perOffset(p.bgPos)).toEqual([0, 2, 1, 0]);
    expect(perOffset(p.fgPos)).toEqual([2, 0, 2, 3]);
    expect(perOffset(p.neg)).toEqual([3, 2, 1, 2]);
    expect(sum(p.bgPos) + sum(p.fgPos) + sum(p.neg)).toBe(24 - 6);
    // positions: the bg pairs (0,1)-(1,0), (2,1)-(3,0) [offset (1,-1)] and (2,1)-(3,1) [offset (1,0)]
    expect(Array.from(p.bgPos.dataSync())).toEqual([
      0, 0, 0, 0, 0, 0, // (0,1)
      1, 0, 0, 0, 1, 0, // (1,-1)
      0, 0, 0, 0, 1, 0, // (1,0)
      0, 0, 0, 0, 0, 0, // (1,1)
    ]);
    // the ignored source (1,1) (entry y=1, x=0) is in no mask
    for (const m of [p.bgPos, p.fgPos, p.neg]) expect(tf.tidy(() => Array.from(tf.slice(m, [0, 1, 0], [4, 1, 1]).dataSync()))).toEqual([0, 0, 0, 0]);
    disposePairLabels(p);
    labels.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('without a background class every positive is a fg positive; batches; empty maps', () => {
    const labels = tf.tensor3d([...MAP.flat(), ...new Array(16).fill(255)], [2, 4, 4], 'int32');
    const p = pairLabels(labels, neighbourOffsets(2), 2, null);
    expect(p.fgPos.shape).toEqual([2, 4, 3, 2]);
    expect(sum(p.bgPos)).toBe(0);
    expect(sum(p.fgPos)).toBe(10);
    expect(sum(p.neg)).toBe(8);
    // the all-ignored second image has no pair at all
    expect(tf.tidy(() => tf.sum(tf.slice(tf.add(tf.add(p.bgPos, p.fgPos), p.neg), [1, 0, 0, 0], [1, 4, 3, 2])).dataSync()[0])).toBe(0);
    disposePairLabels(p);
    labels.dispose();
  });

  it('radius 3 crop and validation', () => {
    const labels = tf.zeros([6, 7], 'int32');
    const p = pairLabels(labels, neighbourOffsets(3), 3, 0);
    expect(p.neg.shape).toEqual([12, 4, 3]);
    expect(sum(p.bgPos)).toBe(12 * 4 * 3);
    disposePairLabels(p);
    expect(() => pairLabels(labels, neighbourOffsets(5), 5, 0)).toThrow(/too small/); // needs 5 x 9
    expect(() => pairLabels(labels, [{ dy: 0, dx: -1 }], 3, 0)).toThrow(/forward/);
    expect(() => pairLabels(labels, neighbourOffsets(2), 2, 255)).toThrow(/background/);
    labels.dispose();
  });
});
