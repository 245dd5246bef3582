/**
 * The cam_train and cam stages on a tiny synthetic dataset (12 images, 32 px, ResNet width 8): training does
 * not leak tensors across epochs, resume after a kill (same model bytes), a changed `epochs` or
 * training param trains from scratch to exactly that, and cams.arrow's schema and contents.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TableReader, readAll } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { repro } from '../../cli/dag.js';
import { type Params, loadParams } from '../../stages/params.js';
import { setQuiet } from '../../pipeline/log.js';
import { createWorkspace } from '../../cli/workspace.js';
import { decodeFloat16, decodeFloat32 } from '../../maps/f16.js';
import { runCam } from '../../stages/cam/index.js';
import { runCamTrain } from '../../stages/cam/train_stage.js';
import { loadCamModel } from '../../nn/cam_net.js';

let root: string;
const TINY = [
  'synth.images=12', 'synth.size=32', 'ingest.size=32', 'cam.width=8', 'cam.epochs=1', 'cam.batch_size=4', 'cam.crop=32',
  'cam.scales=[1.0, 0.5]',
];

beforeAll(async () => {
  setQuiet(true);
  await initBackend();
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-cam-'));
  root = await createWorkspace(path.join(tmp, 'ws'), TINY);
  const r = await repro(root, { target: 'ingest' });
  expect(r.ok).toBe(true);
});
afterAll(async () => {
  await fs.rm(path.dirname(root), { recursive: true, force: true });
});

async function params(overrides: string[] = []): Promise<Params> {
  return loadParams(path.join(root, 'params.yaml'), overrides);
}
/** cam_train, then (when the training finished) the cam map stage: what `repro` runs. */
const run = async (overrides: string[] = [], stopAfter?: number) => {
  const p = await params(overrides);
  const at = (rel: string) => path.join(root, rel);
  const trained = await runCamTrain({ params: p, path: at, stopAfter });
  return { ...trained, ...(trained.epochs < p.cam.epochs ? {} : await runCam({ params: p, path: at })) };
};
const STORE = '.tagseg/checkpoints/cam_train';
/** Every file of models/cam, by relative path. */
async function modelBytes(): Promise<Record<string, Buffer>> {
  const dir = path.join(root, 'models/cam');
  const files = (await fs.readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile());
  return Object.fromEntries(await Promise.all(files.map(async (e) => {
    const f = path.join(e.parentPath, e.name);
    return [path.relative(dir, f), await fs.readFile(f)] as const;
  })));
}

describe('cam stage (tiny)', () => {
  it('trains without growing the tensor count across epochs, and frees everything', async () => {
    await fs.rm(path.join(root, 'models'), { recursive: true, force: true });
    const before = tf.memory().numTensors;
    const r = await run(['cam.epochs=3', 'cam.scales=[1.0]']);
    expect(r.training.tensorsAfterEpoch).toHaveLength(3);
    expect(new Set(r.training.tensorsAfterEpoch).size).toBe(1);
    expect(tf.memory().numTensors).toBe(before);
    expect(r.training.losses.every(Number.isFinite)).toBe(true);
  });

  it('cam.recam_weight adds the ReCAM term (a larger loss from the same start), is a training key, and does not leak', async () => {
    await fs.rm(path.join(root, 'models'), { recursive: true, force: true });
    const plain = await run(['cam.epochs=1', 'cam.scales=[1.0]']);
    const before = tf.memory().numTensors;
    const re = await run(['cam.epochs=1', 'cam.scales=[1.0]', 'cam.recam_weight=1']);
    expect(tf.memory().numTensors).toBe(before);
    expect(re.training.resumedFrom).toBe(0);
    expect(re.training.restartReason).toBeUndefined(); // the finished plain run left no state to resume
    // same seed, same batches: the softmax term (>= 0, about log K at the start) comes on top
    expect(re.training.losses[0]).toBeGreaterThan(plain.training.losses[0]);
    expect(Number.isFinite(re.training.losses[0])).toBe(true);
  });

  it('resumes after a kill and gives the same model as an uninterrupted run', async () => {
    await fs.rm(path.join(root, 'models'), { recursive: true, force: true });
    const full = await run(['cam.epochs=2']);
    expect(full.training.resumedFrom).toBe(0);
    const fullCams = await readAll(path.join(root, 'cache/cams.arrow'));
    const fullModel = await modelBytes();

    await fs.rm(path.join(root, 'models'), { recursive: true, force: true });
    const killed = await run(['cam.epochs=2'], 1); // "killed" after epoch 1
    expect(killed.training.epochs).toBe(1);
    expect(await fs.readdir(path.join(root, STORE))).toHaveLength(1); // the unfinished key
    const resumed = await run(['cam.epochs=2']);
    expect(resumed.training.resumedFrom).toBe(1);
    expect(await modelBytes()).toEqual(fullModel);
    await expect(fs.access(path.join(root, STORE))).rejects.toThrow(); // finished: no state left
    expect(resumed.training.losses).toHaveLength(2);
    expect(resumed.training.losses[0]).toBe(full.training.losses[0]);
    expect(resumed.training.losses[1]).toBeCloseTo(full.training.losses[1], 4);
    const resumedCams = await readAll(path.join(root, 'cache/cams.arrow'));
    const a = decodeFloat16(fullCams[0].cams as Uint8Array);
    const b = decodeFloat16(resumedCams[0].cams as Uint8Array);
    let maxDiff = 0;
    a.forEach((v, i) => { maxDiff = Math.max(maxDiff, Math.abs(v - b[i])); });
    expect(maxDiff).toBeLessThan(0.02);
  });

  it('a changed epochs trains from scratch to exactly that many epochs, never resuming another run', async () => {
    await fs.rm(path.join(root, 'models'), { recursive: true, force: true });
    // An unfinished 3-epoch run stopped after 2 epochs: a 2-epoch run must not pass it off as its own.
    const unfinished = await run(['cam.epochs=3'], 2);
    expect(unfinished.training.epochs).toBe(2);
    const two = await run(['cam.epochs=2']);
    expect(two.training.resumedFrom).toBe(0);
    expect(two.training.losses).toHaveLength(2);
    expect(two.training.restartReason).toMatch(/hash .* differs/);
    expect((await loadCamModel(path.join(root, 'models/cam')).then((n) => { const e = n.config.epochs; n.dispose(); return e; }))).toBe(2);
    // A finished run leaves no state: a longer run trains from scratch, and so does a shorter one.
    const three = await run(['cam.epochs=3']);
    expect(three.training.resumedFrom).toBe(0);
    expect(three.training.losses).toHaveLength(3);
    const one = await run(['cam.epochs=1']);
    expect([one.training.resumedFrom, one.training.losses.length, one.epochs]).toEqual([0, 1, 1]);
    // Only inference changed: the training is the same, trained again (DVC reruns the stage, its model is an output).
    const again = await run(['cam.epochs=1', 'cam.scales=[1.0]']);
    expect(again.training.losses).toEqual(one.training.losses);
    const killed = await run(['cam.epochs=2'], 1);
    expect(killed.training.epochs).toBe(1);
    const changed = await run(['cam.epochs=2', 'cam.lr=0.01']);
    expect(changed.training.resumedFrom).toBe(0);
    expect(changed.training.restartReason).toMatch(/hash/);
  });

  it('writes cams.arrow: tagged classes only, each max-normalised, at stride 4; and a loadable model', async () => {
    await fs.rm(path.join(root, 'models'), { recursive: true, force: true });
    for (const dtype of ['float32', 'float16'] as const) {
      const r = await run([`cam.dtype=${dtype}`]);
      const file = path.join(root, 'cache/cams.arrow');
      const reader = await TableReader.open(file, { stage: 'cam' });
      const info = reader.info;
      await reader.close();
      expect(info.columns.map((c) => c.name)).toEqual(['id', 'split', 'tags', 'height', 'width', 'image_height', 'image_width', 'cams']);
      expect(info.columns.find((c) => c.name === 'cams')!.tensor).toEqual({ dtype, shape: '[tags, height, width]' });
      expect(info.meta.extra).toMatchObject({ background: 0, stride: 4, dtype });
      const rows = await readAll(file);
      const images = await readAll(path.join(root, 'cache/images.arrow'));
      expect(rows.map((x) => x.id)).toEqual(images.map((x) => x.id)); // every image of every split, in order
      expect(new Set(rows.map((x) => x.split))).toEqual(new Set(['train', 'val']));
      for (const [i, row] of rows.entries()) {
        const fg = (images[i].tags as number[]).filter((t) => t !== 0);
        expect(row.tags).toEqual(fg);
        const [h, w] = [row.height as number, row.width as number];
        expect(h).toBe(Math.ceil((row.image_height as number) / 4));
        expect(w).toBe(Math.ceil((row.image_width as number) / 4));
        const maps = dtype === 'float16' ? decodeFloat16(row.cams as Uint8Array) : decodeFloat32(row.cams as Uint8Array);
        expect(maps.length).toBe(fg.length * h * w);
        for (let c = 0; c < fg.length; c++) {
          const ch = maps.subarray(c * h * w, (c + 1) * h * w);
          const mx = Math.max(...ch);
          expect(Math.min(...ch)).toBeGreaterThanOrEqual(0);
          expect([0, 1]).toContain(mx);
        }
      }
      expect(r.cam!.images).toBe(rows.filter((x) => x.split === 'train').length);
      expect(r.classification!.val!.images).toBe(rows.filter((x) => x.split === 'val').length);
      const metrics = JSON.parse(await fs.readFile(path.join(root, 'metrics/cam.json'), 'utf8').catch(() => '{}'));
      expect(metrics).toEqual({}); // runCam does not write metrics; the stage's run() does (e2e covers it)
    }
    const plot = JSON.parse(await fs.readFile(path.join(root, 'plots/cam_threshold.json'), 'utf8')) as { threshold: number }[];
    expect(plot.map((p) => p.threshold)).toEqual([0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6]);

    const net = await loadCamModel(path.join(root, 'models/cam'));
    try {
      expect(net.config.classes.length).toBe(5);
      expect(net.config.outputs).toEqual([1, 2, 3, 4]);
      const logits = tf.tidy(() => net.head.classifierLogits(net.backbone.forward(tf.zeros([1, 32, 32, 3]), false).last));
      expect(logits.shape).toEqual([1, 4]);
      logits.dispose();
    } finally {
      net.dispose();
    }
  });
});
