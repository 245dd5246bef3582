import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { AdamW, SGD, polyLr, stepLr, type Optimizer } from '../../nn/optim.js';

beforeAll(async () => {
  await initBackend();
  expect(tf.getBackend()).toBe('tensorflow');
});

const vals = (t: tf.Tensor) => Array.from(t.dataSync());
const close = (xs: number[], digits = 5) => xs.map((v) => expect.closeTo(v, digits));

/** Apply the given gradient sequence to a fresh variable p0 = [1, -2]. */
function run(make: (p: tf.Variable) => Optimizer, grads: number[][]): { p: tf.Variable; opt: Optimizer } {
  const p = tf.variable(tf.tensor1d([1, -2]));
  const opt = make(p);
  for (const g of grads) {
    const gt = tf.tensor1d(g);
    opt.applyGradients({ [p.name]: gt });
    gt.dispose();
  }
  return { p, opt };
}

const group = (p: tf.Variable, extra: object = {}) => [{ name: 'g', params: new Map([['w', p]]), ...extra }];
const G = [0.5, -1];

describe('SGD', () => {
  it('momentum + L2 weight decay, two steps (hand-computed)', () => {
    // lr 0.1, mu 0.9, wd 0.01. step 1: g' = g + 0.01 p = [0.51, -1.02]; buf = g'; p = [0.949, -1.898]
    // step 2: g' = [0.50949, -1.01898]; buf = 0.9 [0.51, -1.02] + g' = [0.96849, -1.93698];
    //         p = [0.949 - 0.096849, -1.898 + 0.193698] = [0.852151, -1.704302]
    const { p, opt } = run((v) => new SGD(group(v), { lr: 0.1, momentum: 0.9, weightDecay: 0.01 }), [G]);
    expect(vals(p)).toEqual(close([0.949, -1.898]));
    const g = tf.tensor1d(G);
    opt.applyGradients({ [p.name]: g });
    expect(vals(p)).toEqual(close([0.852151, -1.704302]));
    expect(opt.iterations).toBe(2);
    tf.dispose([p, g]);
    opt.dispose();
  });

  it('Nesterov: d = g + mu * buf', () => {
    // step 1: buf = [0.51, -1.02]; d = [0.51 + 0.459, -1.02 - 0.918] = [0.969, -1.938]; p = [0.9031, -1.8062]
    const { p, opt } = run((v) => new SGD(group(v), { lr: 0.1, momentum: 0.9, weightDecay: 0.01, nesterov: true }), [G]);
    expect(vals(p)).toEqual(close([0.9031, -1.8062]));
    tf.dispose(p);
    opt.dispose();
  });

  it('decoupled weight decay differs from L2 from step 2 on', () => {
    // step 1: p * (1 - 0.001) - 0.1 g = [0.949, -1.898] (same as L2 at step 1)
    // step 2: buf = 0.9 g + g = [0.95, -1.9]; p = 0.999 [0.949, -1.898] - 0.1 buf = [0.853051, -1.706102]
    const { p, opt } = run((v) => new SGD(group(v), { lr: 0.1, momentum: 0.9, weightDecay: 0.01, decoupledWeightDecay: true }), [G, G]);
    expect(vals(p)).toEqual(close([0.853051, -1.706102]));
    tf.dispose(p);
    opt.dispose();
  });

  it('per-group lr multipliers and weight decay; variables without gradient are untouched', () => {
    const a = tf.variable(tf.tensor1d([1]));
    const b = tf.variable(tf.tensor1d([1]));
    const c = tf.variable(tf.tensor1d([1]));
    const opt = new SGD(
      [
        { name: 'backbone', params: new Map([['a', a]]) },
        { name: 'new', params: new Map([['b', b]]), lrMult: 10, weightDecay: 0 },
        { name: 'other', params: new Map([['c', c]]) },
      ],
      { lr: 0.1, momentum: 0, weightDecay: 0.5 },
    );
    const ga = tf.tensor1d([2]);
    const gb = tf.tensor1d([2]);
    opt.applyGradients({ [a.name]: ga, [b.name]: gb, [c.name]: null });
    expect(vals(a)).toEqual(close([1 - 0.1 * (2 + 0.5)])); // 0.75
    expect(vals(b)).toEqual(close([1 - 1.0 * 2])); // -1
    expect(vals(c)).toEqual([1]);
    expect(opt.stateTensors().size).toBe(0); // no momentum buffers with momentum 0
    const stranger = tf.variable(tf.tensor1d([0]));
    expect(() => opt.applyGradients({ [stranger.name]: ga })).toThrow(/not managed/);
    tf.dispose([a, b, c, ga, gb, stranger]);
  });

  it('minimize computes gradients of a loss and applies them', () => {
    const w = tf.variable(tf.tensor1d([3]));
    const opt = new SGD(group(w), { lr: 0.25, momentum: 0 });
    const before = tf.memory().numTensors;
    const loss = opt.minimize(() => tf.sum(tf.square(w)) as tf.Scalar); // grad 2w = 6
    expect(loss.dataSync()[0]).toBe(9);
    loss.dispose();
    expect(vals(w)).toEqual([1.5]);
    expect(tf.memory().numTensors).toBe(before);
    w.dispose();
  });
});

describe('AdamW', () => {
  it('two steps match the torch.optim.AdamW rule (hand-computed)', () => {
    // lr 0.1, wd 0.01, betas (0.9, 0.999), eps 1e-8.
    // step 1 (g = [0.5, -1]): p*0.999 = [0.999, -1.998]; m_hat = g, v_hat = g^2 -> p -= 0.1 sign(g) -> [0.899, -1.898]
    // step 2 (g = [-0.2, 0.4]): p*0.999 = [0.898101, -1.896102]; m = [0.025, -0.05]; v = [0.00028975, 0.001159];
    //   m_hat = m / 0.19, v_hat = v / 0.001999 -> step 0.1 * [0.345607, -0.345607] -> [0.863540, -1.861541]
    const { p, opt } = run((v) => new AdamW(group(v), { lr: 0.1, weightDecay: 0.01 }), [G]);
    expect(vals(p)).toEqual(close([0.899, -1.898]));
    const g2 = tf.tensor1d([-0.2, 0.4]);
    opt.applyGradients({ [p.name]: g2 });
    expect(vals(p)).toEqual(close([0.863540418, -1.861541417]));
    expect(opt.stateJson().steps).toEqual({ w: 2 });
    tf.dispose([p, g2]);
    opt.dispose();
  });
});

describe('state save/restore', () => {
  it.each(['sgd', 'adamw'] as const)('%s: a restored optimizer continues exactly like the original', (kind) => {
    const make = (v: tf.Variable): Optimizer =>
      kind === 'sgd' ? new SGD(group(v), { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01 }) : new AdamW(group(v), { lr: 0.1 });
    const { p, opt } = run(make, [G]);
    // snapshot: copy variable and state (as a checkpoint would)
    const json = JSON.parse(JSON.stringify(opt.stateJson()));
    const tensors = new Map([...opt.stateTensors()].map(([k, t]) => [k, t.clone()]));
    const p2 = tf.variable(p.clone());
    const opt2 = make(p2);
    opt2.loadState(json, tensors);
    expect(opt2.iterations).toBe(1);
    const g = tf.tensor1d([-0.3, 0.7]);
    opt.applyGradients({ [p.name]: g });
    opt2.applyGradients({ [p2.name]: g });
    expect(vals(p2)).toEqual(vals(p));
    // a fresh optimizer (no state) would have diverged
    const p3 = tf.variable(tf.tensor1d([1, -2]));
    const opt3 = make(p3);
    opt3.applyGradients({ [p3.name]: tf.tensor1d(G) });
    opt3.applyGradients({ [p3.name]: g });
    expect(vals(p3)).toEqual(vals(p));
    const p4 = tf.variable(p2.clone());
    const fresh = make(p4);
    fresh.applyGradients({ [p4.name]: g });
    expect(vals(p4)).not.toEqual(vals(p)); // p4 started from the same point but without momentum/moments

    expect(() => opt2.loadState({ ...json, kind: kind === 'sgd' ? 'adamw' : 'sgd' }, tensors)).toThrow(/optimizer state is for/);
    const bad = new Map([[[...tensors.keys()][0], tf.zeros([3])]]);
    expect(() => opt2.loadState(json, bad)).toThrow(/shape/);
    const unknown = new Map([[`${[...tensors.keys()][0].split('/')[0]}/nope`, tf.zeros([2])]]);
    expect(() => opt2.loadState(json, unknown)).toThrow(/does not manage/);
    [opt, opt2, opt3, fresh].forEach((o) => o.dispose());
    tf.dispose([p, p2, p3, p4, g, ...tensors.values(), ...bad.values(), ...unknown.values()]);
  });
});

describe('schedules', () => {
  it('poly: base * (1 - iter / max)^0.9', () => {
    expect(polyLr(0.1, 0, 100)).toBe(0.1);
    expect(polyLr(0.1, 50, 100)).toBeCloseTo(0.0535886731, 9);
    expect(polyLr(0.1, 100, 100)).toBe(0);
    expect(polyLr(0.1, 150, 100)).toBe(0);
    expect(polyLr(1, 75, 100, 2)).toBeCloseTo(0.0625, 12);
  });

  it('step: /10 at each milestone', () => {
    expect(stepLr(1e-3, 4, [5, 10])).toBeCloseTo(1e-3, 12);
    expect(stepLr(1e-3, 5, [5, 10])).toBeCloseTo(1e-4, 12);
    expect(stepLr(1e-3, 12, [5, 10])).toBeCloseTo(1e-5, 12);
  });
});

describe('optimizer memory', () => {
  it.each([
    ['SGD', (p: tf.Variable) => new SGD(group(p), { lr: 0.1, momentum: 0.9 })],
    ['AdamW', (p: tf.Variable) => new AdamW(group(p), { lr: 0.1 })],
  ])('%s: creating slots and disposing the optimizer leaves no tensor behind', (_name, make) => {
    const p = tf.variable(tf.tensor1d([1, -2]));
    const before = tf.memory().numTensors;
    const opt = make(p);
    const g = tf.tensor1d(G);
    opt.applyGradients({ [p.name]: g });
    opt.applyGradients({ [p.name]: g });
    g.dispose();
    opt.dispose();
    expect(tf.memory().numTensors).toBe(before);
    p.dispose();
  });
});
