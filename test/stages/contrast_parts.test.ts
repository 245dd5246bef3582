/**
 * The pieces of the contrast (RCA) stage: InfoNCE against hand-computed values, memory queue
 * semantics (pointer, fill, replace vs blend, k-means summary), masked / weighted region pooling,
 * the aggregation's shapes, and gradient flow to every trainable weight; model save/load with its
 * memory reproduces the refined maps.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { defaultParams } from '../../stages/params.js';
import { CAM_MODEL_FORMAT, buildCamNet, saveCamModel } from '../../nn/cam_net.js';
import { Aggregation } from '../../stages/contrast/aggregate.js';
import { infoNCE } from '../../stages/contrast/contrastive.js';
import { MemoryBank } from '../../stages/contrast/memory.js';
import { type ContrastNet, contrastNetFromCam, loadContrastModel, saveContrastModel } from '../../stages/contrast/net.js';
import { detach, regionPool, regionWeights } from '../../stages/contrast/regions.js';
import { contrastObjective, taggedRegions } from '../../stages/contrast/train.js';
import { reactivationLoss } from '../../nn/recam.js';
import { toOutputMaps } from '../../stages/contrast/train_stage.js';
import { classMap } from '../../maps/labels.js';

beforeAll(async () => {
  await initBackend();
});

describe('infoNCE', () => {
  it('equals the hand-computed RCA loss (each positive against all negatives, invalid entries ignored)', () => {
    const anchors = tf.tensor2d([[1, 0], [0, 1], [1, 0]]);
    const aCls = tf.tensor1d([0, 1, 2], 'int32');
    const mem = tf.tensor2d([[1, 0], [0, 1], [-1, 0], [0.6, 0.8]]);
    const mCls = tf.tensor1d([0, 0, 1, 1], 'int32');
    const valid = tf.tensor1d([1, 1, 1, 0]);
    const before = tf.memory().numTensors;
    const loss = infoNCE(anchors, aCls, mem, mCls, valid, 0.5);
    expect(tf.memory().numTensors).toBe(before + 1);
    // anchor 0 (class 0): logits 2, 0 (positives), -2 (negative); entry 3 invalid
    const a0 = (Math.log(Math.exp(2) + Math.exp(-2)) - 2 + Math.log(1 + Math.exp(-2))) / 2;
    // anchor 1 (class 1): positive logit 0 (entry 2), negatives 0 and 2
    const a1 = Math.log(1 + 1 + Math.exp(2));
    // anchor 2 (class 2) has no positive: left out of the mean
    expect(loss.dataSync()[0]).toBeCloseTo((a0 + a1) / 2, 5);
    expect((a0 + a1) / 2).toBeCloseTo(1.1560388, 5);
    tf.dispose([anchors, aCls, mem, mCls, valid, loss]);
  });

  it('is 0 without anchors or positives, and rejects a bad temperature', () => {
    const e = infoNCE(tf.zeros([1, 2]) as tf.Tensor2D, tf.tensor1d([5], 'int32'), tf.ones([2, 2]) as tf.Tensor2D, tf.tensor1d([0, 1], 'int32'), tf.ones([2]) as tf.Tensor1D, 0.1);
    expect(e.dataSync()[0]).toBe(0);
    expect(() => infoNCE(tf.zeros([1, 2]) as tf.Tensor2D, tf.tensor1d([0], 'int32'), tf.ones([2, 2]) as tf.Tensor2D, tf.tensor1d([0, 1], 'int32'), tf.ones([2]) as tf.Tensor1D, 0)).toThrow(/temperature/);
  });

  it('an empty memory (no valid entry: the first steps with contrast_from 0) gives 0 and a finite, zero gradient', () => {
    const a = tf.tensor2d([[0.6, 0.8], [1, 0]]);
    const mem = tf.zeros([3, 2]) as tf.Tensor2D;
    const f = (x: tf.Tensor) => infoNCE(x as tf.Tensor2D, tf.tensor1d([0, 1], 'int32'), mem, tf.tensor1d([0, 0, 1], 'int32'), tf.zeros([3]) as tf.Tensor1D, 0.07);
    expect(f(a).dataSync()[0]).toBe(0);
    const g = tf.grad(f)(a);
    expect(Array.from(g.dataSync())).toEqual([0, 0, 0, 0]);
    // one valid entry of class 1 only: anchor 1 has a positive and no negative -> -log(1) = 0, finite
    const one = infoNCE(a, tf.tensor1d([0, 1], 'int32'), tf.tensor2d([[0, 0], [0, 0], [1, 0]]), tf.tensor1d([0, 0, 1], 'int32'), tf.tensor1d([0, 0, 1]), 0.07);
    expect(one.dataSync()[0]).toBeCloseTo(0, 6);
    tf.dispose([a, mem, g, one]);
  });

  it('pulls the anchor toward its class: the gradient step lowers the loss', () => {
    const a = tf.variable(tf.tensor2d([[0.6, 0.8]]));
    const f = () => infoNCE(a as unknown as tf.Tensor2D, tf.tensor1d([0], 'int32'), tf.tensor2d([[1, 0], [0, 1]]), tf.tensor1d([0, 1], 'int32'), tf.ones([2]) as tf.Tensor1D, 0.2);
    const l0 = f().dataSync()[0];
    const g = tf.grad((x: tf.Tensor) => infoNCE(x as tf.Tensor2D, tf.tensor1d([0], 'int32'), tf.tensor2d([[1, 0], [0, 1]]), tf.tensor1d([0, 1], 'int32'), tf.ones([2]) as tf.Tensor1D, 0.2))(a);
    const gv = g.dataSync();
    expect(gv[0]).toBeLessThan(0); // increase the class-0 component
    expect(gv[1]).toBeGreaterThan(0);
    a.assign(tf.sub(a, tf.mul(g, 0.1)));
    expect(f().dataSync()[0]).toBeLessThan(l0);
  });
});

describe('MemoryBank', () => {
  const rows = (t: tf.Variable) => (t as unknown as tf.Tensor2D).arraySync();

  it('replace: FIFO per class, the pointer advances by one per enqueued row and wraps, skipped rows do not move it', () => {
    const m = new MemoryBank({ classes: 2, size: 3, dim: 2, centroids: 2 });
    const e = tf.tensor2d([[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]]);
    const n = m.enqueue(e, [0, 1, 0, 0, 0], [true, true, true, false, true], 'replace', 0.99);
    expect(n).toBe(4);
    expect(Array.from(m.ptr.dataSync())).toEqual([0, 1]); // class 0: 3 rows -> wrapped to 0
    expect(Array.from(m.counts())).toEqual([3, 1]);
    expect(rows(m.queue)).toEqual([[1, 1], [3, 3], [5, 5], [2, 2], [0, 0], [0, 0]]);
    m.enqueue(tf.tensor2d([[7, 7]]), [0], [true], 'replace', 0.99);
    expect(rows(m.queue)[0]).toEqual([7, 7]); // the oldest slot goes first
    expect(Array.from(m.ptr.dataSync())).toEqual([1, 1]);
    expect(Array.from(m.slotValid().dataSync())).toEqual([1, 1, 1, 1, 0, 0]);
    expect(Array.from(m.slotClasses().dataSync())).toEqual([0, 0, 0, 1, 1, 1]);
    m.dispose();
  });

  it('blend: a filled slot becomes m * old + (1 - m) * new (RCA), a never-filled slot takes the new row', () => {
    const m = new MemoryBank({ classes: 1, size: 2, dim: 1, centroids: 1 });
    m.enqueue(tf.tensor2d([[10], [20]]), [0, 0], [true, true], 'blend', 0.9);
    expect(rows(m.queue)).toEqual([[10], [20]]);
    m.enqueue(tf.tensor2d([[0], [100]]), [0, 0], [true, true], 'blend', 0.9);
    const q = rows(m.queue);
    expect(q[0][0]).toBeCloseTo(9, 5);
    expect(q[1][0]).toBeCloseTo(28, 5);
    m.dispose();
  });

  it('summarize: k-means centres of the filled slots per class, fewer centres (and valid flags) for a short queue', () => {
    const m = new MemoryBank({ classes: 2, size: 4, dim: 2, centroids: 2 });
    m.enqueue(tf.tensor2d([[0, 0], [0, 0.2], [10, 10], [10, 10.2], [5, 5]]), [0, 0, 0, 0, 1], [true, true, true, true, true], 'replace', 0.99);
    const before = tf.memory().numTensors;
    m.summarize({ iters: 10, seed: 1 });
    expect(tf.memory().numTensors).toBe(before);
    const c = rows(m.centroids).map((r) => r.map((v) => Math.round(v * 100) / 100));
    expect(c.slice(0, 2).sort((a, b) => a[0] - b[0])).toEqual([[0, 0.1], [10, 10.1]]);
    expect(c.slice(2)).toEqual([[5, 5], [0, 0]]);
    expect(Array.from(m.valid.dataSync())).toEqual([1, 1, 1, 0]);
    m.dispose();
  });
});

describe('region pooling', () => {
  // one image, 1 x 4 grid, 2 classes; features are 1 channel = the pixel index + 1
  const f = tf.tensor4d([1, 2, 3, 4], [1, 1, 4, 1]);
  const src = tf.tensor4d([0.9, 0.1, 0.7, 0.3, 0.2, 0.8, 0.0, 0.0], [1, 1, 4, 2]);

  it('mask: pixels above the class mean, weight 1', () => {
    const w = regionWeights(src, 'mask');
    // class 0 = [.9, .7, .2, 0], mean .45 -> pixels 0, 1; class 1 = [.1, .3, .8, 0], mean .3 -> pixel 2 (not >)
    expect(Array.from(w.dataSync())).toEqual([1, 0, 1, 0, 0, 1, 0, 0]);
    const e = regionPool(f, w, [{ b: 0, k: 0 }, { b: 0, k: 1 }]);
    expect(Array.from(e.dataSync())).toEqual([1.5, 3]);
  });

  it('weighted: the source as weights', () => {
    const e = regionPool(f, regionWeights(src, 'weighted'), [{ b: 0, k: 1 }, { b: 0, k: 0 }]);
    const v = e.dataSync();
    expect(v[0]).toBeCloseTo((0.1 * 1 + 0.3 * 2 + 0.8 * 3) / 1.2, 5);
    expect(v[1]).toBeCloseTo((0.9 * 1 + 0.7 * 2 + 0.2 * 3) / 1.8, 5);
  });

  it('a region with no mass is a zero row; out-of-range regions are rejected; weights carry no gradient', () => {
    const e = regionPool(f, tf.zeros([1, 1, 4, 2]) as tf.Tensor4D, [{ b: 0, k: 1 }]);
    expect(Array.from(e.dataSync())).toEqual([0]);
    expect(() => regionPool(f, regionWeights(src, 'mask'), [{ b: 1, k: 0 }])).toThrow(/outside/);
    const g = tf.grad((s: tf.Tensor) => tf.sum(regionPool(f, regionWeights(s as tf.Tensor4D, 'weighted'), [{ b: 0, k: 0 }])))(src);
    expect(Array.from(g.dataSync()).every((v) => v === 0)).toBe(true);
    const gd = tf.grad((s: tf.Tensor) => tf.sum(tf.mul(detach(s), 3)))(src);
    expect(Array.from(gd.dataSync()).every((v) => v === 0)).toBe(true);
  });

  it('taggedRegions lists (b, k) of the multi-hot targets; toOutputMaps places stored maps at their output', () => {
    expect(taggedRegions([0, 1, 1, 1, 0, 0], 2, 3)).toEqual([{ b: 0, k: 1 }, { b: 0, k: 2 }, { b: 1, k: 0 }]);
    const map = classMap(['bg', 'a', 'b'], 0);
    // tags [2] (output 1), 1 x 2 grid
    expect(Array.from(toOutputMaps(Float32Array.from([0.5, 1]), [2], 1, 2, map))).toEqual([0, 0.5, 0, 1]);
  });
});

describe('aggregation and gradient flow', () => {
  let dir: string;
  let net: ContrastNet;
  const params = defaultParams();

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-contrast-parts-'));
    const cam = await buildCamNet({
      format: CAM_MODEL_FORMAT, version: 1, classes: ['bg', 'a', 'b'], background: 0, outputs: [1, 2],
      backbone: { kind: 'resnet', outputStride: 8, norm: 'batch', width: 4, depth: [1, 1, 1, 1] },
    }, 3, true);
    await saveCamModel(path.join(dir, 'cam'), cam);
    cam.dispose();
    net = await contrastNetFromCam(path.join(dir, 'cam'), { memorySize: 6, centroids: 2, dim: 8, similarity: 'softmax', aggregation: true, seed: 1 });
    // fill the memory of both classes and summarise it, as after the first epoch
    const e = tf.randomNormal([8, net.config.cam.featureChannels], 0, 1, 'float32', 5) as tf.Tensor2D;
    net.memory.enqueue(tf.abs(e) as tf.Tensor2D, [0, 0, 0, 0, 1, 1, 1, 1], Array(8).fill(true), 'replace', 0.99);
    net.memory.summarize({ iters: 5, seed: 0 });
  });
  afterAll(async () => {
    net.dispose();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('Aggregation keeps [B, h, w, C]; an invalid memory gives the fused features of a zero context', () => {
    const agg = new Aggregation(4, 3, 0);
    const f = tf.randomUniform([2, 3, 5, 4]) as tf.Tensor4D;
    const cents = tf.randomUniform([6, 4]) as tf.Tensor2D;
    for (const sim of ['raw', 'softmax'] as const) {
      expect(agg.forward(f, cents, tf.ones([6]) as tf.Tensor1D, sim, 2).shape).toEqual([2, 3, 5, 4]);
      const none = agg.forward(f, cents, tf.zeros([6]) as tf.Tensor1D, sim, 2);
      const zeroCtx = agg.forward(f, tf.zeros([6, 4]) as tf.Tensor2D, tf.zeros([6]) as tf.Tensor1D, sim, 2);
      expect(Array.from(none.dataSync())).toEqual(Array.from(zeroCtx.dataSync()));
    }
    // the fuse conv starts as identity on f (+ a small context part)
    const fresh = agg.forward(f, cents, tf.zeros([6]) as tf.Tensor1D, 'softmax', 2);
    expect(tf.max(tf.abs(tf.sub(fresh, f))).dataSync()[0]).toBeLessThan(0.01);
    agg.dispose();
  });

  for (const similarity of ['softmax', 'raw'] as const) {
    it(`every trainable weight gets a non-zero gradient (${similarity} similarity, contrast on)`, () => {
      net.config.aggregation.similarity = similarity;
      const x = tf.randomUniform([2, 32, 32, 3], 0, 255, 'float32', 2) as tf.Tensor4D;
      const y = tf.tensor2d([[1, 0], [1, 1]]);
      const regions = taggedRegions([1, 0, 1, 1], 2, 2);
      const trainable = [...net.backbone.params.namedTrainable('backbone/'), ...net.namedHeads()];
      const objective = () => {
        const t = contrastObjective(net, x, y, null, regions, { c: { ...params.contrast, contrast_weight: 1 }, contrastOn: true, training: true });
        tf.dispose([t.contrast, t.embeddings, t.probs]);
        return t.loss;
      };
      const before = tf.memory().numTensors;
      const { value, grads } = tf.variableGrads(objective, trainable.map(([, v]) => v));
      const zero = trainable.filter(([, v]) => {
        const g = grads[v.name];
        if (!g) return true;
        const norm = tf.tidy(() => tf.sum(tf.abs(g)));
        const isZero = norm.dataSync()[0] === 0;
        norm.dispose();
        return isZero;
      }).map(([n]) => n);
      expect(zero).toEqual([]);
      expect(Number.isFinite(value.dataSync()[0])).toBe(true);
      tf.dispose([value, ...Object.values(grads)]);
      expect(tf.memory().numTensors).toBe(before);
      tf.dispose([x, y]);
    });
  }

  it('recam_weight adds the ReCAM terms of both heads, weighted as their MLSM terms', () => {
    net.config.aggregation.similarity = 'softmax';
    const x = tf.randomUniform([2, 32, 32, 3], 0, 255, 'float32', 5) as tf.Tensor4D;
    const y = tf.tensor2d([[1, 1], [0, 1]]);
    const regions = taggedRegions([1, 1, 0, 1], 2, 2);
    const before = tf.memory().numTensors;
    const value = (w: number) => {
      const t = contrastObjective(net, x, y, null, regions, { c: { ...params.contrast, recam_weight: w }, contrastOn: false, training: false });
      const v = t.loss.dataSync()[0];
      tf.dispose([t.loss, t.contrast, t.embeddings, t.probs]);
      return v;
    };
    const expected = tf.tidy(() => {
      const f = net.backbone.forward(net.backbone.preprocess(x), false).last;
      const refined = reactivationLoss(net.refinedFeatures(f), net.refined.weightMatrix(), y);
      const coarse = reactivationLoss(f, net.coarse.weightMatrix(), y);
      return refined.dataSync()[0] + params.contrast.coarse_weight * coarse.dataSync()[0];
    });
    expect(expected).toBeGreaterThan(0);
    expect(value(0.5) - value(0)).toBeCloseTo(0.5 * expected, 4);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([x, y]);
  });

  it('save + load keeps weights and memory: the refined maps are identical', async () => {
    net.config.aggregation.similarity = 'softmax';
    await saveContrastModel(path.join(dir, 'contrast'), net);
    const back = await loadContrastModel(path.join(dir, 'contrast'));
    const f = tf.randomUniform([1, 4, 4, net.config.cam.featureChannels]) as tf.Tensor4D;
    expect(Array.from(back.refinedMaps(f).dataSync())).toEqual(Array.from(net.refinedMaps(f).dataSync()));
    expect(Array.from(back.memory.counts())).toEqual([4, 4]);
    expect(Array.from(back.memory.centroids.dataSync())).toEqual(Array.from(net.memory.centroids.dataSync()));
    back.dispose();
  });
});
