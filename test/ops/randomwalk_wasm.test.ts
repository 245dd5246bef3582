/**
 * The random walk's wasm engine (ops/randomwalk_wasm.ts) against the TensorFlow one it replaces
 * (`setRandomWalkEngine('tf')`), which test/ops/randomwalk.test.ts checks against a dense
 * reference (that file runs on the default, wasm, engine too): the same maps within float32
 * rounding for both methods, channel counts on either side of the 8-channel block, the radii the
 * stages use, both pair layouts; a changed weight is caught (control); no tensor leaks.
 */
import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { buildTransition, disposeTransition, neighbourOffsets, propagate, setRandomWalkEngine, type Transition } from '../../ops/randomwalk.js';

beforeAll(async () => {
  await initBackend();
});
afterEach(() => void setRandomWalkEngine('wasm'));

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** propagate on one engine, as data. */
function walk(engine: 'tf' | 'wasm', x: tf.Tensor3D, t: Transition, steps: number, method: 'chebyshev' | 'steps'): Float32Array {
  setRandomWalkEngine(engine);
  const y = propagate(x, t, steps, { method });
  const d = y.dataSync() as Float32Array;
  y.dispose();
  return d;
}

/** A random transition on an h x w grid (affinities in [0.5, 1], beta 8), in the given layout. */
function transition(h: number, w: number, radius: number, layout: 'full' | 'region', seed: number): Transition {
  const offsets = neighbourOffsets(radius);
  const rf = radius - 1;
  const [ph, pw] = layout === 'full' ? [h, w] : [h - rf, w - 2 * rf];
  const aff = tf.randomUniform([offsets.length, ph, pw], 0.5, 1, 'float32', seed) as tf.Tensor3D;
  const t = buildTransition(aff, offsets, radius, h, w, 8);
  aff.dispose();
  return t;
}

describe('random walk, wasm engine', () => {
  const cases: [number, number, number, 'full' | 'region', number][] = [
    // h, w, radius, layout, C
    [9, 11, 2, 'full', 1],
    [23, 37, 5, 'full', 3],
    [23, 37, 5, 'region', 8],
    [17, 21, 5, 'full', 9],
    [20, 30, 10, 'full', 17],
  ];
  for (const [h, w, radius, layout, C] of cases) {
    it(`matches the tf engine: ${h} x ${w}, radius ${radius}, ${layout}, C = ${C}, both methods`, () => {
      const t = transition(h, w, radius, layout, C);
      const x = tf.randomUniform([C, h, w], 0, 1, 'float32', 7) as tf.Tensor3D;
      for (const [steps, method] of [[256, 'chebyshev'], [64, 'steps'], [1, 'steps']] as const) {
        const a = walk('tf', x, t, steps, method);
        const b = walk('wasm', x, t, steps, method);
        expect(maxAbsDiff(a, b), `${method} ${steps}`).toBeLessThan(2e-6);
      }
      tf.dispose(x);
      disposeTransition(t);
    });
  }

  it('sees a changed weight (control) and leaks no tensors', () => {
    const t = transition(23, 37, 5, 'full', 3);
    const x = tf.randomUniform([3, 23, 37], 0, 1, 'float32', 7) as tf.Tensor3D;
    const n0 = tf.memory().numTensors;
    const a = walk('wasm', x, t, 8, 'steps');
    expect(tf.memory().numTensors).toBe(n0);
    // the first dy group (the neighbours ry rows up) zeroed: what a kernel that skipped a group would give
    const g = t.groups[0];
    const data = new Float32Array(g.weights.size);
    const moved = { ...t, groups: [{ dy: g.dy, weights: tf.tensor4d(data, g.weights.shape) }, ...t.groups.slice(1)] };
    const b = walk('wasm', x, moved, 8, 'steps');
    expect(maxAbsDiff(a, b)).toBeGreaterThan(1e-3);
    tf.dispose([x, moved.groups[0].weights]);
    disposeTransition(t);
  });

  it('walks no channel to no channel', () => {
    const t = transition(9, 11, 2, 'full', 1);
    expect(walk('wasm', tf.zeros([0, 9, 11]) as tf.Tensor3D, t, 256, 'chebyshev')).toHaveLength(0);
    disposeTransition(t);
  });
});
