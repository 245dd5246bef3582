/**
 * Self-training rounds (stages/segment/self_train.ts) on the tiny synthetic workspace of the segment
 * stage tests: round 0 is the plain training, the last round trains on round 0's labels, a kill in
 * round 0 resumes to the same model, the rounds' state is gone once the model is saved; the round
 * labels are the network's argmax over the image's tags + background only (checked against the
 * probabilities, with controls); the key is left out of hashes where it changes nothing.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RowReader } from '../../nn/dataset.js';
import { readAll, readInfo } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { setQuiet } from '../../pipeline/log.js';
import { loadParams } from '../../stages/params.js';
import { indexImages } from '../../stages/segment/data.js';
import { runSegment, segmentTrainHash } from '../../stages/segment/index.js';
import { allowedClasses, batchProbs } from '../../stages/segment/infer.js';
import { carveVal } from '../../stages/segment/labels.js';
import { loadSegModel } from '../../stages/segment/net.js';
import { segmentKeyed } from '../../stages/segment/params.js';
import { roundsDir, writeRoundLabels } from '../../stages/segment/self_train.js';
import { consecutiveRuns, sameWorkingSize } from '../../stages/segment/validate.js';
import { segmentWorkspace } from './segment_fixtures.js';

const TINY = [
  'synth.images=12', 'synth.size=32', 'ingest.size=32', 'cam.width=8', 'cam.epochs=1', 'cam.batch_size=4', 'cam.crop=32', 'cam.scales=[1.0]',
  'segment.epochs=2', 'segment.batch_size=4', 'segment.crop=32', 'segment.head_dim=16', 'segment.val_fraction=0.4', 'segment.crf.iterations=2',
];

let root: string;
/** The plain training (self_train 0), whose model the label test reads. */
let plain: Awaited<ReturnType<typeof runSegment>>;
beforeAll(async () => {
  setQuiet(true);
  await initBackend();
  root = await segmentWorkspace('selftrain', TINY, { wrong: 10, wrongClass: 1 });
  plain = await run([]);
  await fs.cp(at('models/segment'), at('models/segment-plain'), { recursive: true });
}, 300_000);
afterAll(async () => {
  await fs.rm(path.dirname(root), { recursive: true, force: true });
});

const at = (rel: string) => path.join(root, rel);
const run = async (overrides: string[], stopAfter?: number) => runSegment({ params: await loadParams(at('params.yaml'), overrides), path: at, stopAfter });
const weights = () => fs.readFile(at('models/segment/weights/weights.bin'));

describe('segment self-training', () => {
  it('round 0 is the plain training; the last round trains on other labels; a kill in round 0 resumes to the same model', async () => {
    expect(plain.selfTrain).toBe(0);
    const before = tf.memory().numTensors;
    const killed = await run(['segment.self_train=1'], 1);
    // stopped in round 0: its training is the plain one's first epoch (same start, seed and labels)
    expect(killed.selfTrain).toBe(1);
    expect(killed.epochs).toBe(1);
    expect(killed.val.miou).toBeNull();
    expect(killed.training.losses[0]).toBe(plain.training.losses[0]);
    const resumed = await run(['segment.self_train=1']);
    expect(tf.memory().numTensors).toBe(before);
    expect(resumed.selfTrain).toBe(1);
    expect(resumed.training.resumedFrom).toBe(0); // the last round starts once round 0 is done
    expect(typeof resumed.val.miou).toBe('number');
    // control: same start and seed, so only the labels (round 0's predictions) can change the losses
    expect(resumed.training.losses[0]).not.toBe(plain.training.losses[0]);
    await expect(fs.access(roundsDir(at('.tagseg/checkpoints/segment')))).rejects.toThrow();
    await expect(fs.access(at('.tagseg/checkpoints/segment'))).rejects.toThrow();
    const resumedWeights = await weights();
    const straight = await run(['segment.self_train=1']);
    expect(straight.training.losses).toEqual(resumed.training.losses);
    expect((await weights()).equals(resumedWeights)).toBe(true);
  }, 300_000);

  it('labels each training image with the argmax over its tags and the background only', async () => {
    const p = await loadParams(at('params.yaml'), ['segment.crf.iterations=0']);
    const net = await loadSegModel(at('models/segment-plain'));
    const file = at('cache/round-labels.arrow');
    const images = await RowReader.open(at('cache/images.arrow'), { stage: 'ingest' });
    try {
      const info = await readInfo(at('cache/images.arrow'));
      const K = info.meta.classes.length;
      const bg = info.meta.extra!.background as number;
      const trainIds = (await readAll(at('cache/dataset.arrow'))).filter((r) => r.split === 'train').map((r) => r.id as string);
      const { train } = await indexImages(at('cache/images.arrow'), new Set(carveVal(trainIds, 0.4, 0).train), new Set());
      const fg = [...Array(K).keys()].filter((k) => k !== bg);
      // each image tagged with one foreground class only, so the restriction has something to remove
      const refs = train.map((t, i) => ({ ...t, tags: [fg[i % fg.length]], correction: null, ignore: [] }));
      const rows = await writeRoundLabels(net, refs, images, file, { segment: p.segment, background: bg, classes: K, key: 'test' });
      expect([...rows.keys()]).toEqual(refs.map((t) => t.id));
      const written = await readAll(file, { stage: 'segment' });
      let removed = 0;
      for (const t of refs) {
        const [row] = await images.rows([t.position]);
        const probs = await batchProbs(net, [row.pixels as Uint8Array], t.height, t.width, { scales: p.segment.scales, flip: p.segment.flip });
        const mask = written[rows.get(t.id)!].mask as Uint8Array;
        expect(mask.length).toBe(t.height * t.width);
        for (let i = 0; i < mask.length; i++) {
          const q = probs.subarray(i * K, (i + 1) * K);
          const best = (ks: number[]) => ks.reduce((a, k) => (q[k] > q[a] ? k : a), ks[0]);
          expect(mask[i]).toBe(best([bg, t.tags[0]].sort((a, b) => a - b)));
          if (best([...Array(K).keys()]) !== mask[i]) removed++;
        }
      }
      // control: over all classes, the argmax differs somewhere (an untagged class would have won)
      expect(removed).toBeGreaterThan(0);
    } finally {
      await images.close();
      net.dispose();
    }
  }, 120_000);

  it('allowedClasses and consecutiveRuns of one working size', () => {
    expect([...allowedClasses([2, 0], 4, 3)]).toEqual([1, 0, 1, 1]);
    expect([...allowedClasses([1], 3, null)]).toEqual([0, 1, 0]);
    const r = (height: number, width: number) => ({ height, width });
    expect(consecutiveRuns([r(2, 3), r(2, 3), r(2, 3), r(3, 2), r(2, 3)], 2, sameWorkingSize)).toEqual([[r(2, 3), r(2, 3)], [r(2, 3)], [r(3, 2)], [r(2, 3)]]);
  });

  it('keys self_train only where it changes the training: 0 or ground-truth labels hash as before the key existed', async () => {
    const p = await loadParams(at('params.yaml'), []);
    const { self_train: _st, ...without } = p.segment;
    expect(segmentKeyed(p.segment)).toEqual(without);
    expect(segmentKeyed({ ...p.segment, labels: 'gt', self_train: 2 })).toEqual({ ...without, labels: 'gt' });
    expect(segmentKeyed({ ...p.segment, self_train: 1 })).toEqual({ ...p.segment, self_train: 1 });
    const h = (segment: typeof p.segment) => segmentTrainHash({ ...p, segment }, 'data');
    expect(h({ ...p.segment, labels: 'gt', self_train: 1 })).toBe(h({ ...p.segment, labels: 'gt' }));
    expect(h({ ...p.segment, self_train: 1 })).not.toBe(h(p.segment)); // control
  });
});
