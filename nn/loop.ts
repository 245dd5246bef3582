/**
 * The resumable training loop every network stage uses (cam, affinity, contrast, segment): seeded
 * epoch order, poly lr per iteration, a progress bar with loss and images/s, a checkpoint after
 * every epoch (weights + optimizer slots + { epoch, iter, rng, hash, losses, runs }), and resume
 * from that checkpoint when its hash equals the current one. The stage supplies one optimizer step.
 *
 * Why one loop: resume semantics are easy to get subtly wrong (irn restarts schedules on resume);
 * with one loop, one test of kill + resume covers every stage.
 */
import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs';
import { checkpointExists, loadCheckpoint, readTrainState, saveCheckpoint } from './checkpoint.js';
import { type Optimizer, polyLr } from './optim.js';
import { NonFiniteLossError } from './train.js';
import type { NamedVariables } from './params.js';
import { Rng, type RngState } from './rng.js';
import { outsideCommit } from '../pipeline/commit.js';
import { TagsegError } from '../pipeline/errors.js';
import { log, progress } from '../pipeline/log.js';
import { type Params, stableStringify } from '../pipeline/params.js';

export interface LoopState {
  /** Epochs finished. */
  epoch: number;
  /** Optimizer iterations done. */
  iter: number;
  rng: RngState;
  hash: string;
  /** Mean loss of each finished epoch. */
  losses: number[];
  /** Provenance: the epoch range each process trained ([from, to)); several entries = resumed. */
  runs: Array<{ from: number; to: number }>;
}

export interface LoopResult {
  epochs: number;
  /** Epoch this run started at (0 = from scratch). */
  resumedFrom: number;
  /** Why an existing checkpoint was not used, if there was one. */
  restartReason?: string;
  losses: number[];
  /** Training images/s of this run (0 when nothing was trained). */
  imagesPerSecond: number;
  seconds: number;
  /** tf.memory().numTensors after each epoch of this run (leak check). */
  tensorsAfterEpoch: number[];
}

export interface StepContext {
  epoch: number;
  /** Optimizer iteration (0-based, counted across epochs and resumes). */
  iter: number;
  maxIter: number;
}

export interface LoopOptions {
  /** Stage name, for logs and the progress bar. */
  name: string;
  /** Number of training items; an epoch visits each once in a seeded random order. */
  size: number;
  batchSize: number;
  epochs: number;
  /** Base lr of the poly schedule (power 0.9, per iteration), set on `optimizer.lr` before each step. */
  lr: number;
  optimizer: Optimizer;
  /** Every variable to checkpoint (trainable, moving statistics, and any non-trainable state such as a memory bank). */
  variables: NamedVariables;
  /** Saved with the checkpoint (the model config). */
  meta: unknown;
  checkpointDir: string;
  /** Resume key: a checkpoint with another hash is not resumed. */
  hash: string;
  /** Seed of the loop's Rng (epoch order and every draw the step makes). */
  seed: number;
  /** Stop after this many epochs *in this run* (tests simulate a kill with it). */
  stopAfter?: number;
  /** Called before the first batch of every epoch this run trains (RCA: k-means of the memory). */
  onEpochStart?(epoch: number, rng: Rng): void | Promise<void>;
  /** One optimizer step on the items `idx`; returns the batch's mean loss. Must not leak tensors. */
  step(idx: number[], rng: Rng, ctx: StepContext): number | Promise<number>;
}

/** The params sections of the network stages. */
export type TrainedSection = 'cam' | 'affinity' | 'contrast' | 'segment';

/**
 * Resume key of a stage's training (LoopOptions.hash): seed, train split, the stage's params
 * section without `exclude` (keys that do not change the trained weights, such as inference
 * scales, and `epochs`, which a resume may extend), and `dataHash` (the content of the inputs).
 */
export function trainingHash(p: Params, section: TrainedSection, exclude: readonly string[], dataHash: string): string {
  const kept = Object.fromEntries(Object.entries(p[section]).filter(([k]) => !exclude.includes(k)));
  const key = stableStringify({ seed: p.seed, split: p.dataset.train_split, [section]: kept, data: dataHash });
  return createHash('sha256').update(key).digest('hex').slice(0, 16);
}

export async function runTraining(o: LoopOptions): Promise<LoopResult> {
  if (o.size === 0) throw new Error(`${o.name}: no training items`);
  const itersPerEpoch = Math.ceil(o.size / o.batchSize);
  const maxIter = o.epochs * itersPerEpoch;
  let state: LoopState = { epoch: 0, iter: 0, rng: new Rng(o.seed).state(), hash: o.hash, losses: [], runs: [] };
  let restartReason: string | undefined;
  if (await checkpointExists(o.checkpointDir)) {
    const saved = await readTrainState<LoopState>(o.checkpointDir);
    if (saved && saved.hash === o.hash) {
      await loadCheckpoint(o.checkpointDir, { variables: o.variables, optimizer: o.optimizer });
      state = { ...saved, runs: saved.runs ?? [] };
      log.info(`${o.name}: resuming from the checkpoint at epoch ${saved.epoch} (${o.checkpointDir})`);
    } else {
      restartReason = saved ? `checkpoint params hash ${saved.hash} differs from ${o.hash}` : 'checkpoint has no training state';
      log.info(`${o.name}: not resuming (${restartReason}): training from scratch`);
    }
  }
  const resumedFrom = state.epoch;
  const runs = [...state.runs];
  const rng = Rng.fromState(state.rng);
  const losses = [...state.losses];
  const tensorsAfterEpoch: number[] = [];
  let trained = 0;
  let ran = 0;
  const t0 = performance.now();
  for (let epoch = state.epoch; epoch < o.epochs; epoch++) {
    if (o.stopAfter !== undefined && ran >= o.stopAfter) break;
    if (o.onEpochStart) await o.onEpochStart(epoch, rng);
    const order = rng.shuffle(Array.from({ length: o.size }, (_, i) => i));
    const bar = progress(`${o.name} train epoch ${epoch + 1}/${o.epochs}`, o.size, ['loss', 'img/s']);
    const e0 = performance.now();
    let lossSum = 0;
    let seen = 0;
    try {
      for (let b = 0; b < itersPerEpoch; b++) {
        const idx = order.slice(b * o.batchSize, (b + 1) * o.batchSize);
        o.optimizer.lr = polyLr(o.lr, state.iter, maxIter);
        // trainStep's NonFiniteLossError (the step itself saw the loss) gets the same stage-naming message.
        const loss = await (async () => o.step(idx, rng, { epoch, iter: state.iter, maxIter }))()
          .catch((err: unknown) => { if (err instanceof NonFiniteLossError) return err.loss; throw err; });
        if (!Number.isFinite(loss)) {
          throw new TagsegError(`stage '${o.name}': the training loss is not finite: loss is ${loss} at epoch ${epoch + 1}, iteration ${state.iter} (of ${o.epochs} epochs)`, {
            hint: `lower ${o.name}.lr in params.yaml (now ${o.lr}), e.g. --set ${o.name}.lr=${o.lr / 10}`,
          });
        }
        state.iter++;
        lossSum += loss * idx.length;
        seen += idx.length;
        trained += idx.length;
        bar.tick(idx.length, { loss: lossSum / seen, 'img/s': seen / ((performance.now() - e0) / 1000) });
      }
    } finally {
      bar.stop();
    }
    losses.push(lossSum / seen);
    state = { epoch: epoch + 1, iter: state.iter, rng: rng.state(), hash: o.hash, losses, runs: [...runs, { from: resumedFrom, to: epoch + 1 }] };
    // The resume checkpoint lands at once (a kill must find it), not with the stage's committed outputs.
    await outsideCommit(() => saveCheckpoint(o.checkpointDir, { variables: o.variables, optimizer: o.optimizer, trainState: state, meta: o.meta }));
    tensorsAfterEpoch.push(tf.memory().numTensors);
    ran++;
  }
  const seconds = (performance.now() - t0) / 1000;
  return {
    epochs: state.epoch, resumedFrom, restartReason, losses, seconds, tensorsAfterEpoch,
    imagesPerSecond: trained > 0 ? trained / seconds : 0,
  };
}
