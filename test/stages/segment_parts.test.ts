/**
 * The segment stage's parts on hand-computed cases: the validation carve, label resizing, the
 * context head (shapes, gradients, no leaks), crop sampling and batch augmentation, multi-scale
 * + flip inference (mirror symmetry) and the model directory round trip.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../nn/rng.js';
import { initBackend } from '../../pipeline/backend.js';
import { defaultParams } from '../../stages/params.js';
import { CAM_MODEL_FORMAT, buildCamNet, saveCamModel } from '../../nn/cam_net.js';
import { createSegAux } from '../../stages/segment/contrast.js';
import { ContextHead, upsampleLogits } from '../../nn/seg_heads/deeplab.js';
import { segProbs, segmentBatch } from '../../stages/segment/infer.js';
import { type DenseCrfOptions, argmaxLabels, denseCrf, unaryFromProbs } from '../../ops/crf.js';
import { carveVal, idHash, isValId, labelledFraction, labelsAtWorkingSize } from '../../stages/segment/labels.js';
import { type SegNet, loadSegModel, saveSegModel, segNetFromCam } from '../../stages/segment/net.js';
import { type SegTrainImage, makeSegBatch, sampleScaledCrop } from '../../stages/segment/train.js';

beforeAll(async () => {
  await initBackend();
});

describe('validation carve', () => {
  const ids = Array.from({ length: 2000 }, (_, i) => `img_${i}`);

  it('is a deterministic hash: same ids, same seed -> same carve; independent of the other ids', () => {
    const a = carveVal(ids, 0.2, 0);
    expect(carveVal(ids, 0.2, 0)).toEqual(a);
    // adding or removing images never moves an existing id
    const sub = carveVal(ids.slice(0, 500), 0.2, 0);
    expect(sub.val).toEqual(a.val.filter((id) => ids.indexOf(id) < 500));
    expect(a.val.length / ids.length).toBeGreaterThan(0.17);
    expect(a.val.length / ids.length).toBeLessThan(0.23);
    // another seed carves other ids
    const b = carveVal(ids, 0.2, 1);
    expect(b.val).not.toEqual(a.val);
    expect(idHash('x', 0)).toBeGreaterThanOrEqual(0);
    expect(idHash('x', 0)).toBeLessThan(1);
    expect(isValId('img_3', 0.2, 0)).toBe(a.val.includes('img_3'));
  });

  it('gives a tiny split one image on each side, refuses one image, and fractions outside (0, 1)', () => {
    const few = ['a', 'b', 'c'];
    const lowest = [...few].sort((x, y) => idHash(x, 0) - idHash(y, 0));
    expect(carveVal(few, 0.0001, 0)).toEqual({ train: few.filter((x) => x !== lowest[0]), val: [lowest[0]] });
    expect(carveVal(few, 0.9999, 0)).toEqual({ train: [lowest[2]], val: few.filter((x) => x !== lowest[2]) });
    expect(() => carveVal(['a'], 0.5, 0)).toThrow(/needs two/);
    expect(() => isValId('a', 0, 0)).toThrow(/val_fraction/);
  });
});

describe('labels at the working size', () => {
  it('resizes by nearest neighbour and validates class indices', () => {
    const m = Uint8Array.from([0, 1, 255, 2]); // 2 x 2
    expect(Array.from(labelsAtWorkingSize(m, 2, 2, 4, 4, 3, { file: 'f', id: 'a' }))).toEqual([
      0, 0, 1, 1,
      0, 0, 1, 1,
      255, 255, 2, 2,
      255, 255, 2, 2,
    ]);
    expect(() => labelsAtWorkingSize(Uint8Array.from([0, 3, 0, 0]), 2, 2, 2, 2, 3, { file: 'f.arrow', id: 'a' })).toThrow(/f\.arrow: row 'a': label 3/);
    expect(() => labelsAtWorkingSize(m, 3, 2, 2, 2, 3, { file: 'f', id: 'a' })).toThrow(/expected 3 x 2/);
    expect(labelledFraction(m)).toBe(0.75);
  });
});

/** Fake backbone features at strides 4, 8, 8, 8 of a [B, 64, 64] input. */
function fakeFeatures(b: number, channels: number[]): { levels: tf.Tensor4D[]; last: tf.Tensor4D; stride: number; strides: number[]; channels: number[] } {
  const sizes = [16, 8, 8, 8];
  const levels = channels.map((c, i) => tf.randomNormal([b, sizes[i], sizes[i], c], 0, 1, 'float32', i) as tf.Tensor4D);
  return { levels, last: levels[3], stride: 8, strides: [4, 8, 8, 8], channels };
}

describe('ContextHead', () => {
  it('maps features to logits at the last level (no decoder) or the stride-4 level (decoder), with gradients for every variable', () => {
    const channels = [8, 16, 16, 32];
    for (const decoder of [false, true]) {
      const before = tf.memory().numTensors;
      const head = new ContextHead(channels, { dim: 16, classes: 5, decoder, seed: 1 });
      const f = fakeFeatures(2, channels);
      const out = head.forward(f);
      expect(out.shape).toEqual(decoder ? [2, 16, 16, 5] : [2, 8, 8, 5]);
      expect(head.outputStride(f.strides)).toBe(decoder ? 4 : 8);
      const vars = head.params.trainable();
      const { value, grads } = tf.variableGrads(() => tf.mean(tf.square(head.forward(f))) as tf.Scalar, vars);
      for (const v of vars) {
        const g = grads[v.name];
        expect(g, v.name).toBeDefined();
        expect(Math.max(...Array.from(g.dataSync(), Math.abs)), v.name).toBeGreaterThan(0);
      }
      tf.dispose([value, ...Object.values(grads), out, ...f.levels]);
      head.dispose();
      expect(tf.memory().numTensors).toBe(before);
    }
  });

  it('upsampleLogits keeps the size when it already matches and resizes otherwise', () => {
    const x = tf.ones([1, 2, 2, 3]) as tf.Tensor4D;
    const same = upsampleLogits(x, [2, 2]);
    const up = upsampleLogits(x, [4, 6]);
    expect(same.shape).toEqual([1, 2, 2, 3]);
    expect(up.shape).toEqual([1, 4, 6, 3]);
    expect(Array.from(up.dataSync()).every((v) => Math.abs(v - 1) < 1e-6)).toBe(true);
    tf.dispose([x, same, up]);
  });
});

describe('training crops and batches', () => {
  it('sampleScaledCrop keeps the box inside an image that is larger, and around an image that is smaller', () => {
    const rng = new Rng(3);
    for (let i = 0; i < 50; i++) {
      const b = sampleScaledCrop(rng, 100, 80, 40, [0.75, 1.25]);
      expect(b.height).toBeCloseTo(b.width);
      expect(b.height).toBeGreaterThanOrEqual(40 / 1.25 - 1e-9);
      expect(b.height).toBeLessThanOrEqual(40 / 0.75 + 1e-9);
      expect(b.top).toBeGreaterThanOrEqual(0);
      expect(b.top + b.height).toBeLessThanOrEqual(100 + 1e-9);
      expect(b.left + b.width).toBeLessThanOrEqual(80 + 1e-9);
      const big = sampleScaledCrop(rng, 20, 30, 40, [1, 1]);
      expect(big.top).toBeLessThanOrEqual(0);
      expect(big.top + big.height).toBeGreaterThanOrEqual(20);
      expect(big.left + big.width).toBeGreaterThanOrEqual(30);
    }
    expect(() => sampleScaledCrop(rng, 10, 10, 8, [1.2, 1])).toThrow(/scale_range/);
  });

  it('makeSegBatch crops image and labels identically, flips both, and pads labels with 255', () => {
    const H = 4;
    const W = 4;
    const im: SegTrainImage = {
      id: 'a', height: H, width: W, tags: [1],
      pixels: Uint8Array.from({ length: H * W * 3 }, (_, i) => (Math.floor(i / 3) % W) * 10), // R = G = B = 10 * column
      labels: Uint8Array.from({ length: H * W }, (_, i) => i % W), // label = column
    };
    const s = { ...defaultParams().segment, crop: 4, scale_range: [1, 1], jitter: 0 };
    const before = tf.memory().numTensors;
    for (let seed = 0; seed < 6; seed++) {
      const { x, y } = makeSegBatch([im], [0], new Rng(seed), s);
      const xs = Array.from(x.dataSync());
      const ys = Array.from(y.dataSync());
      // crop = image at scale 1: every label is its column (maybe mirrored), and the image follows it
      for (let p = 0; p < H * W; p++) expect(xs[p * 3]).toBeCloseTo(ys[p] * 10, 4);
      const row = ys.slice(0, W);
      expect([[0, 1, 2, 3], [3, 2, 1, 0]]).toContainEqual(row);
      tf.dispose([x, y]);
    }
    // a crop twice the image: the image sits inside a 255 border (its last row / column may be
    // lost to float rounding at the box edge: tf.image.cropAndResize extrapolates past H - 1)
    for (let seed = 0; seed < 4; seed++) {
      const { x, y } = makeSegBatch([im], [0], new Rng(seed), { ...s, crop: 8 });
      const xs = Array.from(x.dataSync());
      const ys = Array.from(y.dataSync());
      expect(y.shape).toEqual([1, 8, 8]);
      const valid = ys.map((v, p) => [v, p]).filter(([v]) => v !== 255);
      expect(valid.length).toBeGreaterThanOrEqual(9);
      expect(valid.length).toBeLessThanOrEqual(16);
      for (const [v, p] of valid) expect(xs[p * 3]).toBeCloseTo(v * 10, 4);
      tf.dispose([x, y]);
    }
    expect(tf.memory().numTensors).toBe(before);
  });
});

const CRF: DenseCrfOptions = { iterations: 5, gaussian: { sxy: 3, compat: 3 }, bilateral: { sxy: 10, srgb: 20, compat: 10 }, normalization: 'symmetric' };

describe('SegNet inference and model directory', () => {
  let tmp: string;
  let net: SegNet;
  beforeAll(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-segparts-'));
    const cam = await buildCamNet({
      format: CAM_MODEL_FORMAT, version: 1, backbone: { kind: 'resnet', outputStride: 8, norm: 'batch', width: 4, depth: [1, 1, 1, 1] },
      classes: ['bg', 'a', 'b'], background: 0, outputs: [1, 2],
    }, 5, true);
    await saveCamModel(path.join(tmp, 'cam'), cam);
    cam.dispose();
    net = await segNetFromCam(path.join(tmp, 'cam'), { classes: ['bg', 'a', 'b'], background: 0, dim: 8, decoder: true, workingSize: 24, scales: [1, 0.5], flip: true, crf: CRF, seed: 2 });
  });
  afterAll(async () => {
    net.dispose();
    await fs.rm(tmp, { recursive: true, force: true });
  });

  const image = (H: number, W: number, seed: number) => {
    const rng = new Rng(seed);
    return Uint8Array.from({ length: H * W * 3 }, () => rng.int(0, 256));
  };

  it('averages probabilities over scales and flips (they sum to 1) and is mirror-symmetric with flip', async () => {
    const H = 20;
    const W = 24;
    const px = image(H, W, 1);
    const mirrored = new Uint8Array(px.length);
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) mirrored.set(px.subarray((y * W + x) * 3, (y * W + x) * 3 + 3), (y * W + (W - 1 - x)) * 3);
    const before = tf.memory().numTensors;
    const sums = tf.tidy(() => {
      const p = segProbs(net, tf.cast(tf.tensor4d(px, [1, H, W, 3], 'int32'), 'float32') as tf.Tensor4D, { scales: [1, 0.5], flip: true });
      expect(p.shape).toEqual([1, H, W, 3]);
      return tf.sum(p, 3);
    });
    expect(Array.from(sums.dataSync()).every((v) => Math.abs(v - 1) < 1e-5)).toBe(true);
    sums.dispose();
    const opts = { scales: [1, 0.5], flip: true };
    const [a, b] = await Promise.all([segmentBatch(net, [px], H, W, [H, W], opts), segmentBatch(net, [mirrored], H, W, [H, W], opts)]);
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) expect(b[0][y * W + (W - 1 - x)]).toBe(a[0][y * W + x]);
    // batched = one by one, and labels at another output size
    const both = await segmentBatch(net, [px, mirrored], H, W, [H, W], opts);
    expect(both[0]).toEqual(a[0]);
    expect(both[1]).toEqual(b[0]);
    const big = await segmentBatch(net, [px], H, W, [40, 48], opts);
    expect(big[0]).toHaveLength(40 * 48);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('with a CRF, labels are the argmax of the dense CRF of the averaged probabilities, then resized', async () => {
    const H = 18;
    const W = 22;
    const px = image(H, W, 3);
    const opts = { scales: [1, 0.5], flip: true };
    const before = tf.memory().numTensors;
    const probs = tf.tidy(() => segProbs(net, tf.cast(tf.tensor4d(px, [1, H, W, 3], 'int32'), 'float32') as tf.Tensor4D, opts));
    const q = denseCrf(unaryFromProbs(probs.dataSync() as Float32Array, 3), px, H, W, 3, CRF);
    probs.dispose();
    const [withCrf] = await segmentBatch(net, [px], H, W, [H, W], { ...opts, crf: CRF });
    expect(withCrf).toEqual(argmaxLabels(q, H * W, 3));
    // at another output size: the marginals are resized bilinearly before the argmax
    const up = tf.tidy(() => tf.argMax(tf.image.resizeBilinear(tf.tensor4d(q, [1, H, W, 3]), [36, 44], false, true), 3).dataSync());
    const [big] = await segmentBatch(net, [px], H, W, [36, 44], { ...opts, crf: CRF });
    expect(Array.from(big)).toEqual(Array.from(up));
    // a strong CRF changes some labels of a random-noise image (the test would pass vacuously otherwise)
    const [plain] = await segmentBatch(net, [px], H, W, [H, W], opts);
    const strong = { ...CRF, bilateral: { sxy: 50, srgb: 60, compat: 30 } };
    const [smoothed] = await segmentBatch(net, [px], H, W, [H, W], { ...opts, crf: strong });
    expect(Array.from(smoothed).some((v, i) => v !== plain[i])).toBe(true);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('saves a self-contained model directory that loads back to the same predictions', async () => {
    const dir = path.join(tmp, 'seg');
    await saveSegModel(dir, net);
    const classes = JSON.parse(await fs.readFile(path.join(dir, 'classes.json'), 'utf8'));
    expect(classes).toEqual({ classes: ['bg', 'a', 'b'], background: 0, void: 255 });
    await fs.rm(path.join(tmp, 'cam'), { recursive: true }); // not needed to load
    const loaded = await loadSegModel(dir);
    try {
      expect(loaded.config).toEqual(net.config);
      const px = image(16, 12, 2);
      const opts = { scales: [1], flip: false };
      expect(await segmentBatch(loaded, [px], 16, 12, [16, 12], opts)).toEqual(await segmentBatch(net, [px], 16, 12, [16, 12], opts));
    } finally {
      loaded.dispose();
    }
    await fs.writeFile(path.join(dir, 'config.json'), '{"format": "other"}');
    await expect(loadSegModel(dir)).rejects.toThrow(/config\.json: not a tagseg-segment-model config/);
  });
});

describe('segment.contrast loss options', () => {
  it('sizes the pixel contrast queues from segment.pixel_memory (slots per class, two queues)', () => {
    const s = { ...defaultParams().segment, contrast: 'pixel' as const, contrast_dim: 8, pixel_memory: 7 };
    const aux = createSegAux(s, { classes: 3, background: null, inChannels: 16, seed: 0, startIter: 0 })!;
    try {
      const memory = new Map([...aux.variables()].filter(([k]) => k.startsWith('contrast/memory/')));
      // the pixel and the region queue: classes x pixel_memory slots of contrast_dim each
      expect(memory.get('contrast/memory/pixel_queue')?.shape).toEqual([3 * 7, 8]);
      expect(memory.get('contrast/memory/region_queue')?.shape).toEqual([3 * 7, 8]);
    } finally {
      aux.dispose();
    }
  });
});
