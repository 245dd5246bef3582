/**
 * The affinity stage: its pure helpers (aligned crops, crop side, grid downsampling, CRF
 * refinement) and, on a tiny synthetic workspace (12 images, 32 px), a run whose tensor count
 * stays flat across epochs, frees everything, leaves no training state, and retrains on a change.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { repro } from '../../cli/dag.js';
import { setQuiet } from '../../pipeline/log.js';
import { loadParams } from '../../stages/params.js';
import { createWorkspace } from '../../cli/workspace.js';
import { runAffinity } from '../../stages/affinity/index.js';
import { runAffinityTrain } from '../../stages/affinity/train_stage.js';
import { crfRefiner, downsampleImage, imageAffinityLabels } from '../../stages/affinity/image_labels.js';
import { type AffinityTrainImage, cropPair, cropSide } from '../../stages/affinity/train.js';

describe('affinity helpers', () => {
  const im: AffinityTrainImage = {
    id: 'a', height: 12, width: 16,
    pixels: Uint8Array.from({ length: 12 * 16 * 3 }, (_, i) => i % 251),
    labels: Uint8Array.from({ length: 3 * 4 }, (_, i) => i),
  };

  it('cropPair crops image and labels on the same stride-4 lattice, and flips both', () => {
    const r = cropPair(im, 4, 8, 8, false);
    expect(Array.from(r.labels)).toEqual([6, 7, 10, 11]);
    expect(r.pixels[0]).toBe(im.pixels[(4 * 16 + 8) * 3]);
    const f = cropPair(im, 4, 8, 8, true);
    expect(Array.from(f.labels)).toEqual([7, 6, 11, 10]);
    expect(f.pixels[0]).toBe(im.pixels[(4 * 16 + 15) * 3]);
    expect(() => cropPair(im, 2, 0, 8, false)).toThrow(/lattice/);
    expect(() => cropPair(im, 8, 0, 8, false)).toThrow(/does not fit/);
  });

  it('cropSide clamps to the smallest image, floors to a multiple of 4, and rejects grids too small for the radius', () => {
    expect(cropSide(96, [{ height: 50, width: 70 }, { height: 66, width: 45 }], 3)).toBe(44);
    expect(() => cropSide(16, [{ height: 64, width: 64 }], 3)).toThrow(/too small for radius 3/);
  });

  it('downsampleImage box-averages to the grid', () => {
    const px = new Uint8Array(2 * 4 * 3);
    for (let x = 0; x < 4; x++) for (let y = 0; y < 2; y++) px[(y * 4 + x) * 3] = x < 2 ? 10 * (x + y) : 200;
    const d = downsampleImage(px, 2, 4, 1, 2);
    expect(Array.from(d)).toEqual([10, 0, 0, 200, 0, 0]);
  });

  it('the CRF refiner keeps dataset class indices and follows image edges', () => {
    // 8 x 8 grid: left half dark, right half bright; labels say class 3 on a 3-wide strip only
    const h = 8;
    const w = 8;
    const img = new Uint8Array(h * w * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) img.fill(x < 4 ? 0 : 255, (y * w + x) * 3, (y * w + x) * 3 + 3);
    const lab = new Uint8Array(h * w);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) lab[y * w + x] = x >= 5 ? 3 : 0;
    const out = crfRefiner(img, 0, [3], 1)(lab, { height: h, width: w, which: 'fg' });
    expect(new Set(out)).toEqual(new Set([0, 3]));
    for (let y = 0; y < h; y++) {
      expect(out[y * w + 4]).toBe(3); // the bright column the labels missed joins class 3
      expect(out[y * w + 1]).toBe(0);
    }
  });

  it('imageAffinityLabels: confident fg / bg / ignore from CAMs, with and without the CRF', () => {
    const cams = Float32Array.from([0.9, 0.9, 0.2, 0.0]); // one class, 1 x 4 grid
    const s = { background: 0, confFg: 0.3, confBg: 0.05, margin: 0.2, floor: 0.3, crf: false };
    expect(Array.from(imageAffinityLabels(cams, [2], 1, 4, null, s, 4))).toEqual([2, 2, 255, 0]);
    const image = { pixels: new Uint8Array(4 * 16 * 3).fill(128), height: 4, width: 16 };
    const withCrf = imageAffinityLabels(cams, [2], 1, 4, image, { ...s, crf: true }, 4);
    expect(withCrf).toHaveLength(4);
    expect(withCrf.every((v) => v === 0 || v === 2 || v === 255)).toBe(true);
  });
});

describe('affinity stage (tiny)', () => {
  let root: string;
  const TINY = [
    'synth.images=12', 'synth.size=32', 'ingest.size=32', 'cam.width=8', 'cam.epochs=1', 'cam.batch_size=4', 'cam.crop=32', 'cam.scales=[1.0]',
    'affinity.radius=3', 'affinity.batch_size=4', 'affinity.crop=32', 'affinity.dim=16', 'affinity.logt=3',
  ];
  beforeAll(async () => {
    setQuiet(true);
    await initBackend();
    const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-affinity-'));
    root = await createWorkspace(path.join(tmp, 'ws'), TINY);
    const r = await repro(root, { target: 'cam' });
    expect(r.ok).toBe(true);
  }, 60_000);
  afterAll(async () => {
    await fs.rm(path.dirname(root), { recursive: true, force: true });
  });
  /** affinity_train, then the affinity map stage: what `repro` runs. */
  const run = async (overrides: string[]) => {
    const o = { params: await loadParams(path.join(root, 'params.yaml'), overrides), path: (rel: string) => path.join(root, rel) };
    return { ...(await runAffinityTrain(o)), ...(await runAffinity(o)) };
  };

  it('trains without growing the tensor count across epochs, frees everything, and trains a changed epochs from scratch', async () => {
    const before = tf.memory().numTensors;
    const r = await run(['affinity.epochs=3']);
    expect(r.training.tensorsAfterEpoch).toHaveLength(3);
    expect(new Set(r.training.tensorsAfterEpoch).size).toBe(1);
    expect(tf.memory().numTensors).toBe(before);
    expect(r.training.losses.every(Number.isFinite)).toBe(true);
    expect(r.rows).toBe(12);
    await expect(fs.access(path.join(root, '.tagseg/checkpoints/affinity_train'))).rejects.toThrow(); // finished: no state left
    const fewer = await run(['affinity.epochs=2']);
    expect([fewer.training.resumedFrom, fewer.training.losses.length, fewer.epochs]).toEqual([0, 2, 2]);
    const changed = await run(['affinity.epochs=1', 'affinity.lr=0.002']);
    expect(changed.training.resumedFrom).toBe(0);
    expect(changed.training.restartReason).toBeUndefined(); // nothing unfinished to set aside
  }, 120_000);
});
