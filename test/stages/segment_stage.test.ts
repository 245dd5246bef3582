/**
 * The segment stage on a tiny synthetic workspace (12 images, 32 px; cam trained by repro) with
 * a hand-made pseudo_masks.arrow: validation carve written and excluded from training, scores of
 * the network and of the validation pseudo-masks, the chain table, flat tensor count, resume,
 * oracle mode, and errors naming the file.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeIndexedPng } from '../../data/palette.js';
import { writeDecisions } from '../../data/review.js';
import { readAll } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { setQuiet } from '../../pipeline/log.js';
import { registerSegHead } from '../../nn/seg_heads/index.js';
import { loadParams } from '../../stages/params.js';
import { refineChain, runSegment } from '../../stages/segment/index.js';
import { carveVal } from '../../stages/segment/labels.js';
import { writePseudoMasks, segmentWorkspace } from './segment_fixtures.js';

const TINY = [
  'synth.images=12', 'synth.size=32', 'ingest.size=32', 'cam.width=8', 'cam.epochs=1', 'cam.batch_size=4', 'cam.crop=32', 'cam.scales=[1.0]',
  'segment.epochs=2', 'segment.batch_size=4', 'segment.crop=32', 'segment.head_dim=16', 'segment.val_fraction=0.4',
];

let root: string;
beforeAll(async () => {
  setQuiet(true);
  await initBackend();
  root = await segmentWorkspace('segment', TINY, { ignoreRows: 4, wrong: 6, wrongClass: 1 });
}, 300_000);
afterAll(async () => {
  await fs.rm(path.dirname(root), { recursive: true, force: true });
});

const run = async (overrides: string[], stopAfter?: number) =>
  runSegment({ params: await loadParams(path.join(root, 'params.yaml'), overrides), path: (rel) => path.join(root, rel), stopAfter });

describe('segment stage (tiny)', () => {
  it('trains on the pseudo-masks of the train carve, scores the validation carve, and writes a loadable model', async () => {
    const before = tf.memory().numTensors;
    const r = await run(['segment.epochs=3']);
    expect(tf.memory().numTensors).toBe(before);
    expect(r.training.tensorsAfterEpoch).toHaveLength(3);
    expect(new Set(r.training.tensorsAfterEpoch).size).toBe(1);
    const images = await readAll(path.join(root, 'cache/dataset.arrow'));
    const trainIds = images.filter((x) => x.split === 'train').map((x) => x.id as string);
    const carve = carveVal(trainIds, 0.4, 0);
    expect(r.trainImages).toBe(carve.train.length);
    expect(r.valImages).toBe(carve.val.length);
    expect((await fs.readFile(path.join(root, 'models/segment/val_ids.txt'), 'utf8')).trim().split('\n')).toEqual(carve.val);
    // 4 of 32 rows ignored, but for the 6 x 6 wrong corner (synthetic masks have no void)
    const labelled = (28 * 32 + 4 * 6) / (32 * 32);
    expect(r.labelledFraction).toBeCloseTo(labelled, 5);
    expect(r.val.images).toBe(carve.val.length);
    expect(typeof r.val.miou).toBe('number');
    expect(r.val.coverage).toBe(1);
    // the validation pseudo-masks: the same coverage; a wrong corner -> mIoU < 1
    expect(r.pseudo_val?.coverage).toBeCloseTo(labelled, 3);
    expect(r.pseudo_val!.miou!).toBeLessThan(1);
    expect(r.chain.map((c) => [c.step, c.split])).toEqual([
      ['cam', 'train'], ['random_walk', 'train'], ['rca', 'train'], ['rca_random_walk', 'train'], ['pseudo_masks', 'train'],
      ['pseudo_masks', 'val'], ['segmentation', 'val'],
    ]);
    expect(r.chain.at(-1)!.miou).toBe(r.val.miou);
    for (const f of ['config.json', 'classes.json', 'weights/manifest.json']) {
      await expect(fs.access(path.join(root, 'models/segment', f))).resolves.toBeUndefined();
    }
    expect((await fs.readdir(path.join(root, 'models/segment'))).sort()).toEqual(['classes.json', 'config.json', 'val_ids.txt', 'weights']);
    await expect(fs.access(path.join(root, '.tagseg/checkpoints/segment'))).rejects.toThrow(); // finished: no state left
  }, 120_000);

  it('resumes a killed run at its last epoch and restarts when a training key changes', async () => {
    await fs.rm(path.join(root, 'models/segment'), { recursive: true, force: true });
    const killed = await run(['segment.epochs=3'], 1);
    expect(killed.epochs).toBe(1);
    expect(killed.val.miou).toBeNull();
    const resumed = await run(['segment.epochs=3']);
    expect(resumed.training.resumedFrom).toBe(1);
    expect(resumed.training.losses[0]).toBe(killed.training.losses[0]);
    // segment.crf is inference only: a change rescores the trained model, and the model keeps it for predict
    const modelCrf = async () => JSON.parse(await fs.readFile(path.join(root, 'models/segment/config.json'), 'utf8')).crf;
    expect(await modelCrf()).toEqual({ iterations: 10, gaussian: { sxy: 3, compat: 3 }, bilateral: { sxy: 50, srgb: 5, compat: 10 }, normalization: 'symmetric' });
    // a finished training leaves no state: the same training again, from scratch, to the same losses
    const noCrf = await run(['segment.epochs=3', 'segment.crf.iterations=0']);
    expect(noCrf.training.resumedFrom).toBe(0);
    expect(noCrf.training.losses).toEqual(resumed.training.losses);
    expect(await modelCrf()).toBeNull();
    const uninterrupted = await run(['segment.epochs=3', 'segment.lr=0.0021']);
    expect(uninterrupted.training.resumedFrom).toBe(0);
    expect(uninterrupted.training.restartReason).toBeUndefined(); // nothing unfinished to set aside
  }, 120_000);

  it('oracle mode trains on the ground truth of the same train carve and does not read pseudo_masks.arrow', async () => {
    const saved = path.join(root, 'cache/pseudo_masks.keep');
    await fs.rename(path.join(root, 'cache/pseudo_masks.arrow'), saved);
    try {
      const r = await run(['segment.labels=gt', 'segment.epochs=1']);
      expect(r.labels).toBe('gt');
      expect(r.labelledFraction).toBe(1);
      expect(r.pseudo_val).toBeUndefined();
      expect(r.chain.at(-1)!.step).toBe('segmentation (gt oracle)');
      await expect(run(['segment.epochs=1'])).rejects.toThrow(/pseudo_masks\.arrow: table not found/);
    } finally {
      await fs.rename(saved, path.join(root, 'cache/pseudo_masks.arrow'));
    }
  }, 120_000);

  it('names the table when a training image has no pseudo-mask, or a label is not a class', async () => {
    const keep = await fs.readFile(path.join(root, 'cache/pseudo_masks.arrow'));
    try {
      await writePseudoMasks(root, { wrong: 3, wrongClass: 9 });
      await expect(run(['segment.epochs=1'])).rejects.toThrow(/pseudo_masks\.arrow: row '.*': label 9 at pixel 0 is not a class index/);
    } finally {
      await fs.writeFile(path.join(root, 'cache/pseudo_masks.arrow'), keep);
    }
  }, 60_000);

  it('trains with each contrastive loss: on after one warm-up epoch, its variables checkpointed, no leak', async () => {
    for (const kind of ['reco', 'spml', 'pixel']) {
      await fs.rm(path.join(root, 'models/segment'), { recursive: true, force: true });
      const before = tf.memory().numTensors;
      const o = ['segment.epochs=2', `segment.contrast=${kind}`, 'segment.contrast_dim=8'];
      await run(o, 1); // stopped after epoch 1: its state stays in the checkpoint store
      const store = path.join(root, '.tagseg/checkpoints/segment');
      const [key] = await fs.readdir(store);
      const manifest = JSON.parse(await fs.readFile(path.join(store, key!, 'epoch-0001/manifest.json'), 'utf8')) as { tensors: { name: string }[] };
      const r = await run(o);
      expect(r.training.resumedFrom, kind).toBe(1);
      expect(tf.memory().numTensors, kind).toBe(before);
      expect(r.contrast).toBe(kind);
      expect(r.training.losses.every(Number.isFinite), kind).toBe(true);
      const names = manifest.tensors.map((t) => t.name);
      expect(names.some((n) => n.startsWith('model/contrast/proj/')), kind).toBe(true);
      if (kind === 'pixel') expect(names.some((n) => n.startsWith('model/contrast/memory/')), kind).toBe(true);
      // the shipped model has no projection head: predict never needs it
      const shipped = JSON.parse(await fs.readFile(path.join(root, 'models/segment/weights/manifest.json'), 'utf8')) as { tensors: { name: string }[] };
      expect(shipped.tensors.some((t) => t.name.includes('contrast/')), kind).toBe(false);
    }
  }, 180_000);

  it('review: a rejected image leaves training, a corrected mask replaces its pseudo-mask, metrics count both', async () => {
    const images = await readAll(path.join(root, 'cache/dataset.arrow'));
    const trainIds = images.filter((x) => x.split === 'train').map((x) => x.id as string);
    const carve = carveVal(trainIds, 0.4, 0);
    const [rejected, corrected, classRejected] = carve.train;
    await fs.rm(path.join(root, 'models/segment'), { recursive: true, force: true });
    const plain = await run(['segment.epochs=2'], 1);
    const row = images.find((x) => x.id === corrected)!;
    const w = row.orig_width as number;
    const h = row.orig_height as number;
    try {
      await writeDecisions(path.join(root, 'review/decisions.csv'), [
        { id: rejected, decision: 'reject', class: '', note: '' }, { id: classRejected, decision: 'reject', class: 'background', note: '' },
        { id: carve.val[0], decision: 'reject', class: '', note: 'validation: not affected' },
      ]);
      // the corrected mask: every pixel class 0, so the image is fully labelled
      await fs.writeFile(path.join(root, 'review/corrections', `${corrected}.png`), encodeIndexedPng(new Uint8Array(w * h), w, h));
      const r = await run(['segment.epochs=2'], 1);
      expect(r.review).toEqual({ decisions: 3, rejected: 1, corrected: 1, rejected_classes: 1, unused_corrections: 0 });
      expect(r.trainImages).toBe(carve.train.length - 1);
      expect(r.valImages).toBe(carve.val.length);
      expect(plain.review).toEqual({ decisions: 0, rejected: 0, corrected: 0, rejected_classes: 0, unused_corrections: 0 });
      // the corrected image is fully labelled; the class-rejected one lost its background pixels
      expect(r.labelledFraction).not.toBeCloseTo(plain.labelledFraction, 3);
      // a corrected mask of the wrong size is an error naming it
      await fs.writeFile(path.join(root, 'review/corrections', `${corrected}.png`), encodeIndexedPng(new Uint8Array(4), 2, 2));
      await expect(run(['segment.epochs=2'], 1)).rejects.toThrow(new RegExp(`corrections/${corrected}\\.png: mask is 2x2`));
    } finally {
      await writeDecisions(path.join(root, 'review/decisions.csv'), []);
      await fs.rm(path.join(root, 'review/corrections', `${corrected}.png`), { force: true });
      await fs.rm(path.join(root, 'models/segment'), { recursive: true, force: true });
    }
  }, 120_000);

  it('segment.head selects a head registered with one line: a toy head trains through the stage and is saved under its kind', async () => {
    registerSegHead('toy', async () => (await import('../nn/toy_seg_head.js')).toyHead);
    await expect(run(['segment.head=unet'])).rejects.toThrow(/segment\.head/); // not registered: refused with the params
    const config = async () => JSON.parse(await fs.readFile(path.join(root, 'models/segment/config.json'), 'utf8'));
    const tensors = async () => (JSON.parse(await fs.readFile(path.join(root, 'models/segment/weights/manifest.json'), 'utf8')) as { tensors: { name: string }[] }).tensors.map((t) => t.name);
    await run(['segment.epochs=1']);
    const deeplab = await config();
    expect(deeplab.head).toEqual({ dim: 16, decoder: true });
    const before = tf.memory().numTensors;
    const r = await run(['segment.epochs=1', 'segment.head=toy']);
    expect(tf.memory().numTensors).toBe(before);
    expect(r.training.losses.every(Number.isFinite)).toBe(true);
    expect(typeof r.val.miou).toBe('number');
    const toy = await config();
    expect(toy.head).toEqual({ kind: 'toy', dim: 16 });
    expect(toy.paramsHash).not.toBe(deeplab.paramsHash); // the head is in the training hash
    expect((await tensors()).filter((n) => n.startsWith('model/seg/')).sort()).toEqual(['model/seg/classifier.kernel', 'model/seg/proj.kernel']);
    await fs.rm(path.join(root, 'models/segment'), { recursive: true, force: true });
  }, 120_000);

  it('refineChain reads the table as a mapping or a list, and names a file without one', async () => {
    const f = path.join(root, 'metrics/chain_test.json');
    await fs.writeFile(f, JSON.stringify({ split: 'train', table: [{ step: 'cam', miou: 0.4, images: 3 }, { name: 'pseudo_masks', miou: null }] }));
    expect(await refineChain(f)).toEqual([{ step: 'cam', miou: 0.4, split: 'train', images: 3 }, { step: 'pseudo_masks', miou: null, split: 'train' }]);
    await fs.writeFile(f, JSON.stringify({ miou: 0.3 }));
    await expect(refineChain(f)).rejects.toThrow(/chain_test\.json: has no 'table' field/);
    expect(await refineChain(path.join(root, 'metrics/none.json'))).toEqual([]);
  });
});
