/**
 * The resumable training loop every network stage uses (cam, affinity, contrast, segment): seeded
 * epoch order, poly lr per iteration, a progress bar with loss and images/s, a checkpoint after
 * every epoch (weights + optimizer slots + { epoch, iter, rng, hash, losses, runs }) in the
 * checkpoint store (train_store.ts, outside DVC's outputs), and resume from the store's
 * unfinished run of the same key. The stage supplies one optimizer step, saves the finished
 * model, then calls finishTraining, which removes the resumable state.
 *
 * Why one loop: resume semantics are easy to get subtly wrong (irn restarts schedules on resume);
 * with one loop, one test of kill + resume covers every stage.
 */
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { loadCheckpoint, readTrainState, saveCheckpoint } from './checkpoint.js';
import { type Optimizer, polyLr } from './optim.js';
import { NonFiniteLossError } from './train.js';
import type { NamedVariables } from './params.js';
import { Rng, type RngState } from './rng.js';
import { filesFingerprint, commitEpoch, latestCheckpoint, openStore, removeStore, storeOf } from './train_store.js';
import { outsideCommit } from '../pipeline/commit.js';
import { TagsegError } from '../pipeline/errors.js';
import { log, progress } from '../pipeline/log.js';
import type { Params } from '../stages/params.js';
import { stableStringify } from '../pipeline/params_core.js';

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
  /** Why an unfinished training in the store was not resumed, if there was one. */
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
  /** The stage's folder of the checkpoint store (`storeOf(stage)`, resolved); the state lives in `<checkpointDir>/<hash>/`. */
  checkpointDir: string;
  /** Resume key (trainingKey): only an unfinished run of the same key is resumed; others are removed. */
  hash: string;
  /** Seed of the loop's Rng (epoch order and every draw the step makes). */
  seed: number;
  /** Stop after this many epochs *in this run* (tests simulate a kill with it). */
  stopAfter?: number;
  /** Called before the first batch of every epoch this run trains (RCA: k-means of the memory). */
  onEpochStart?(epoch: number, rng: Rng): void | Promise<void>;
  /** Called with the next step's items before each step (same epoch): a streaming dataset starts loading them. */
  prefetch?(idx: number[]): void;
  /** One optimizer step on the items `idx`; returns the batch's mean loss. Must not leak tensors. */
  step(idx: number[], rng: Rng, ctx: StepContext): number | Promise<number>;
}

/** The params sections of the network stages. */
export type TrainedSection = 'cam' | 'affinity' | 'contrast' | 'segment';

/**
 * Hash of what shapes a stage's trained weights: seed, train split, the stage's params section
 * without `exclude` (keys that only change inference, such as scales; never `epochs`, which sets
 * the lr schedule and the result), and `dataHash` (the content of the inputs). Stored in the
 * model's config; trainingKey adds the code for the store key.
 */
export function trainingHash(p: Params, section: TrainedSection, exclude: readonly string[], dataHash: string): string {
  if (exclude.includes('epochs')) throw new Error('trainingHash: epochs shapes the weights and must be hashed');
  const kept = Object.fromEntries(Object.entries(p[section]).filter(([k]) => !exclude.includes(k)));
  const key = stableStringify({ seed: p.seed, split: p.dataset.train_split, [section]: kept, data: dataHash });
  return createHash('sha256').update(key).digest('hex').slice(0, 16);
}

/** The checkpoint store key: the training hash and the fingerprint of the code that trains (train_store filesFingerprint). */
export function trainingKey(trainHash: string, code: string): string {
  return createHash('sha256').update(`${trainHash}:${code}`).digest('hex').slice(0, 16);
}

/**
 * Where a stage's training state goes: the stage's store folder (`pathOf` resolves project paths)
 * and the key, from `hash` (trainingHash) and the fingerprint of the stage's code folders.
 */
export async function trainingStore(stage: string, code: readonly string[], hash: string, pathOf: (rel: string) => string): Promise<{ checkpointDir: string; key: string }> {
  return { checkpointDir: pathOf(storeOf(stage)), key: trainingKey(hash, await filesFingerprint(pathOf('.'), code)) };
}

/** After the finished model is saved: remove the stage's resumable state (the whole store folder). */
export async function finishTraining(checkpointDir: string): Promise<void> {
  await removeStore(checkpointDir);
}

/** Open the store and load the unfinished run of `o.hash` into the variables and optimizer, if any. */
async function resumeState(o: LoopOptions): Promise<{ dir: string; state?: LoopState; restartReason?: string }> {
  const opened = await openStore(o.checkpointDir, o.hash);
  if (opened.leftovers.length) log.info(`${o.name}: removed leftovers of a killed run in ${o.checkpointDir}: ${opened.leftovers.join(', ')}`);
  let restartReason: string | undefined;
  if (opened.otherKeys.length) {
    restartReason = `the unfinished training with hash ${opened.otherKeys.join(', ')} differs from ${o.hash} (params, epochs, data or code changed)`;
    log.info(`${o.name}: not resuming (${restartReason}): removed it, training from scratch`);
  }
  const ckpt = await latestCheckpoint(opened.dir);
  if (ckpt === null) return { dir: opened.dir, restartReason };
  const saved = await readTrainState<LoopState>(ckpt);
  if (!saved || saved.hash !== o.hash || !Number.isInteger(saved.epoch)) {
    throw new TagsegError(`checkpoint training state does not belong to key ${o.hash}`, { file: path.join(ckpt, 'manifest.json'), hint: `delete ${opened.dir} to train from scratch` });
  }
  if (saved.epoch > o.epochs) {
    // a key without epochs would pass a longer run off as this one (the bug the key prevents)
    throw new TagsegError(`checkpoint is at epoch ${saved.epoch}, beyond this run's ${o.epochs} epochs`, { file: path.join(ckpt, 'manifest.json'), hint: 'the training key must include epochs' });
  }
  await loadCheckpoint(ckpt, { variables: o.variables, optimizer: o.optimizer });
  log.info(`${o.name}: resuming from the checkpoint at epoch ${saved.epoch} (${ckpt})`);
  return { dir: opened.dir, state: { ...saved, runs: saved.runs ?? [] }, restartReason };
}

/** One step's loss (trainStep's NonFiniteLossError gives its loss); a non-finite one is a TagsegError naming the stage and its lr. */
async function stepLoss(o: LoopOptions, idx: number[], rng: Rng, ctx: StepContext): Promise<number> {
  // trainStep's NonFiniteLossError (the step itself saw the loss) gets the same stage-naming message.
  const loss = await (async () => o.step(idx, rng, ctx))()
    .catch((err: unknown) => { if (err instanceof NonFiniteLossError) return err.loss; throw err; });
  if (!Number.isFinite(loss)) {
    throw new TagsegError(`stage '${o.name}': the training loss is not finite: loss is ${loss} at epoch ${ctx.epoch + 1}, iteration ${ctx.iter} (of ${o.epochs} epochs)`, {
      hint: `lower ${o.name}.lr in params.yaml (now ${o.lr}), e.g. --set ${o.name}.lr=${o.lr / 10}`,
    });
  }
  return loss;
}

/**
 * One epoch over `order` in batches of batchSize, the lr following the poly schedule per
 * iteration; advances state.iter and returns the summed (per-item) loss and the items seen.
 */
async function trainEpoch(o: LoopOptions, epoch: number, order: number[], rng: Rng, state: LoopState, maxIter: number): Promise<{ lossSum: number; seen: number }> {
  const itersPerEpoch = Math.ceil(o.size / o.batchSize);
  const bar = progress(`${o.name} train epoch ${epoch + 1}/${o.epochs}`, o.size, ['loss', 'img/s']);
  const e0 = performance.now();
  let lossSum = 0;
  let seen = 0;
  try {
    for (let b = 0; b < itersPerEpoch; b++) {
      const idx = order.slice(b * o.batchSize, (b + 1) * o.batchSize);
      if (o.prefetch && b + 1 < itersPerEpoch) o.prefetch(order.slice((b + 1) * o.batchSize, (b + 2) * o.batchSize));
      o.optimizer.lr = polyLr(o.lr, state.iter, maxIter);
      const loss = await stepLoss(o, idx, rng, { epoch, iter: state.iter, maxIter });
      state.iter++;
      lossSum += loss * idx.length;
      seen += idx.length;
      bar.tick(idx.length, { loss: lossSum / seen, 'img/s': seen / ((performance.now() - e0) / 1000) });
    }
  } finally {
    bar.stop();
  }
  return { lossSum, seen };
}

export async function runTraining(o: LoopOptions): Promise<LoopResult> {
  if (o.size === 0) throw new Error(`${o.name}: no training items`);
  const maxIter = o.epochs * Math.ceil(o.size / o.batchSize);
  const resumed = await resumeState(o);
  let state: LoopState = resumed.state ?? { epoch: 0, iter: 0, rng: new Rng(o.seed).state(), hash: o.hash, losses: [], runs: [] };
  const restartReason = resumed.restartReason;
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
    const { lossSum, seen } = await trainEpoch(o, epoch, order, rng, state, maxIter);
    trained += seen;
    losses.push(lossSum / seen);
    state = { epoch: epoch + 1, iter: state.iter, rng: rng.state(), hash: o.hash, losses, runs: [...runs, { from: resumedFrom, to: epoch + 1 }] };
    // The resume checkpoint lands at once (a kill must find it), not with the stage's committed outputs.
    await outsideCommit(() => commitEpoch(resumed.dir, epoch + 1, (dir) => saveCheckpoint(dir, { variables: o.variables, optimizer: o.optimizer, trainState: state, meta: o.meta })));
    tensorsAfterEpoch.push(tf.memory().numTensors);
    ran++;
  }
  const seconds = (performance.now() - t0) / 1000;
  return {
    epochs: state.epoch, resumedFrom, restartReason, losses, seconds, tensorsAfterEpoch,
    imagesPerSecond: trained > 0 ? trained / seconds : 0,
  };
}
