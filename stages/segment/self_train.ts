/**
 * Self-training rounds (`segment.self_train`; issue #22's candidate, the retraining step of
 * Wei et al. 2018 and most tag-only WSSS pipelines): round r's network labels every training image
 * anew: its probabilities at the working size (`segment.scales` x flip), restricted to the image's
 * tags plus the background before and after the dense CRF of `segment.crf` (predict --tags' rule,
 * infer.ts restrictedCrf); the argmax is round r+1's label map. Every round trains from the same start
 * (the CAM backbone and a fresh head), so a round learns from its labels, not from its predecessor's
 * weights. A corrected mask (review) stays its image's label in every round; rejected classes stay ignored.
 *
 * The rounds before the last train in their own stores beside the stage's (`<store>-self-train/round<r>/`,
 * each resumable); their labels go to `labels-round<r>.arrow` there, image by image, and are read
 * back by row position (data.ts), so memory does not grow with the split. A resumed run makes them
 * again from round r's finished checkpoint. The last round is the stage's own training.
 */
import * as path from 'node:path';
import { availableParallelism } from 'node:os';
import { type Dataset, RowReader } from '../../nn/dataset.js';
import { trainingKey } from '../../nn/loop.js';
import { crfPool } from '../../ops/crf_pool.js';
import { type ColumnSpec, TableWriter } from '../../pipeline/arrow.js';
import { log, progress } from '../../pipeline/log.js';
import type { Params } from '../params.js';
import { type LabelContext, type StreamReaders, type TrainRef, trainDataset } from './data.js';
import { allowedClasses, batchProbs, labelsOf, restrictedCrf } from './infer.js';
import type { SegNet } from './net.js';
import type { SegTrainImage, SegTrainResult } from './train.js';
import { consecutiveRuns, inferCrf, sameWorkingSize } from './validate.js';

/** Images per inference batch (same working size only), as validation. */
const LABEL_BATCH = 4;

const LABEL_COLUMNS: ColumnSpec[] = [
  { name: 'id', type: 'utf8' },
  { name: 'height', type: 'int32', doc: 'working height' },
  { name: 'width', type: 'int32', doc: 'working width' },
  { name: 'mask', type: 'binary', tensor: { dtype: 'uint8', shape: '[height, width]' }, doc: "class indices: the round's network restricted to the tags" },
];

export interface RoundsOptions {
  rounds: number;
  /** The stage's checkpoint store folder (resolved) and the run's store key: fingerprints the code, so asked for only when a round runs. */
  store(): Promise<{ checkpointDir: string; key: string }>;
  refs: readonly TrainRef[];
  readers: StreamReaders;
  ctx: LabelContext;
  segment: Params['segment'];
  background: number | null;
  build(): Promise<SegNet>;
  train(net: SegNet, images: Dataset<SegTrainImage>, store: { checkpointDir: string; key: string }): Promise<SegTrainResult>;
}

export interface RoundsResult {
  /** The last round's training refs (pseudo = a row of `labels`) and its label table; null labels: no round ran. */
  refs: readonly TrainRef[];
  labels: RowReader | null;
  /** The earlier rounds' trainings. */
  rounds: SegTrainResult[];
  /** A round was cut short (stopAfter): the stage saves nothing. */
  stopped: boolean;
}

/** Where the rounds before the last keep their stores and labels. */
export const roundsDir = (checkpointDir: string): string => `${checkpointDir}-self-train`;

/** Train rounds 0 .. rounds-1 and label the training images with each; returns what the last round trains on. */
export async function earlierRounds(o: RoundsOptions): Promise<RoundsResult> {
  let refs = o.refs;
  let labels: RowReader | null = null;
  const rounds: SegTrainResult[] = [];
  if (o.rounds === 0) return { refs, labels, rounds, stopped: false };
  const stage = await o.store();
  try {
    for (let r = 0; r < o.rounds; r++) {
      log.info(`segment: self-training round ${r + 1} of ${o.rounds + 1}`);
      const net = await o.build();
      try {
        const store = { checkpointDir: path.join(roundsDir(stage.checkpointDir), `round${r}`), key: trainingKey(stage.key, `round${r}`) };
        const t = await o.train(net, trainDataset(refs, { images: o.readers.images, pseudo: labels ?? o.readers.pseudo }, o.ctx), store);
        rounds.push(t);
        if (t.epochs < o.segment.epochs) return { refs, labels, rounds, stopped: true };
        const file = path.join(roundsDir(stage.checkpointDir), `labels-round${r}.arrow`);
        const rows = await writeRoundLabels(net, refs, o.readers.images, file, { segment: o.segment, background: o.background, classes: o.ctx.numClasses, key: store.key });
        await labels?.close();
        labels = await RowReader.open(file, { stage: 'segment' });
        refs = refs.map((t) => ({ ...t, pseudo: t.correction ? null : rows.get(t.id)! }));
      } finally {
        net.dispose();
      }
    }
    return { refs, labels, rounds, stopped: false };
  } catch (err) {
    await labels?.close();
    throw err;
  }
}

/**
 * Label every ref without a corrected mask with `net` (the file comment's rule) into `file`, one row
 * each in refs order; returns id -> row position.
 */
export async function writeRoundLabels(
  net: SegNet, refs: readonly TrainRef[], images: RowReader, file: string,
  o: { segment: Params['segment']; background: number | null; classes: number; key: string },
): Promise<Map<string, number>> {
  const todo = refs.filter((t) => !t.correction);
  const view = { scales: o.segment.scales, flip: o.segment.flip };
  const crf = inferCrf(o.segment);
  const K = o.classes;
  const writer = await TableWriter.open(file, LABEL_COLUMNS, { stage: 'segment', paramsHash: o.key, classes: net.config.classes });
  const pool = crfPool(crf ? availableParallelism() : 1);
  const bar = progress('segment self-training labels', todo.length);
  const rows = new Map<string, number>();
  try {
    for (const run of consecutiveRuns(todo, LABEL_BATCH, sameWorkingSize)) {
      const { height: H, width: W } = run[0];
      const pixels = (await images.rows(run.map((t) => t.position))).map((row) => row.pixels as Uint8Array);
      const probs = await batchProbs(net, pixels, H, W, view);
      const N = H * W * K;
      const maps = await Promise.all(run.map((t, i) => restrictedCrf(
        probs.slice(i * N, (i + 1) * N), { allowed: allowedClasses(t.tags, K, o.background), rgb: pixels[i], H, W, K, crf }, (r) => pool.run(r),
      )));
      const flat = new Float32Array(run.length * N);
      maps.forEach((q, i) => flat.set(q, i * N));
      const masks = await labelsOf(flat, run.length, H, W, K, [H, W]);
      for (const [i, t] of run.entries()) {
        rows.set(t.id, rows.size);
        await writer.write({ id: t.id, height: H, width: W, mask: masks[i] });
        bar.tick();
      }
    }
    await writer.close();
  } catch (err) {
    await writer.abort();
    throw err;
  } finally {
    bar.stop();
    await pool.close();
  }
  return rows;
}
