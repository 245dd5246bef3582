/**
 * ReCo: regional contrast with hard queries and active key sampling (Liu et al. 2022, "Bootstrapping
 * Semantic Segmentation with Regional Contrast"; lorenmt/reco module_list.py compute_reco_loss).
 *
 * Valid pixels: label != 255 and confidence (the largest predicted probability) >= weakThreshold
 * (ReCo's 0.7 mask on pseudo-labelled pixels; pseudo-masks with 255 regions are its partial-label case).
 * For every class i present among the valid pixels of the batch (V classes, ascending):
 * - prototype p_i = mean embedding of its valid pixels (no gradient, as in ReCo);
 * - hard queries: valid pixels of class i whose predicted probability of class i is < strongThreshold;
 *   numQueries of them drawn uniformly with replacement (a class without hard pixels adds no term);
 * - negative keys: for each query numNegatives pixels, each drawn by first drawing a class j != i
 *   with probability softmax_j(cos(p_i, p_j) / T) over the other present classes (active
 *   sampling: confusable classes more often), then a valid pixel of class j uniformly;
 * - term: mean over queries of cross-entropy of [cos(q, p_i), cos(q, k_1..k_M)] / T with target 0.
 * Loss = sum of the terms / V; 0 when V <= 1. Keys carry no gradient (ReCo samples them under
 * torch.no_grad), so the gradient reaches the embeddings through the queries.
 *
 * Instead of gathering the Q x M x D key tensor (671 MB at ReCo's 256 x 512 x 256 for 5 classes),
 * the query-key cosines are read from one [Cq Q, Nv] matrix of queries against all valid pixels.
 */
import * as tf from '@tensorflow/tfjs';
import type { Rng } from '../rng.js';
import { IGNORE_LABEL, argmaxRows, checkBatch, checkPositive, checkPositiveInt, detach, drawFromCdf, l2Rows, readLabels, zeroLoss } from './common.js';
import type { ContrastBatch, ContrastLoss } from './index.js';
import { TagsegError } from '../../pipeline/errors.js';

export interface RecoOptions {
  classes: number;
  dim: number;
  /** Temperature of the contrast and of the active sampling (ReCo 0.5). */
  temperature: number;
  /** Queries per class per batch (ReCo 256). */
  numQueries: number;
  /** Negative keys per query (ReCo 512). */
  numNegatives: number;
  /** A query is hard when its own-class probability is below this (ReCo strong_threshold 0.97). */
  strongThreshold: number;
  /** Pixels whose largest probability is below this are not used (ReCo weak_threshold 0.7). */
  weakThreshold: number;
}

/** ReCo's published settings (train_semisup.py defaults; methods.md 5). */
export const RECO_DEFAULTS: Omit<RecoOptions, 'classes' | 'dim'> = {
  temperature: 0.5,
  numQueries: 256,
  numNegatives: 512,
  strongThreshold: 0.97,
  weakThreshold: 0.7,
};

/**
 * Active sampling distribution of query class i: p_j = softmax over j != i of cos[i][j] / T,
 * p_i = 0. cos: V x V cosine similarities of the prototypes (row-major, length V * V).
 */
export function activeSamplingProbs(cos: ArrayLike<number>, v: number, i: number, temperature: number): number[] {
  const out = new Array<number>(v).fill(0);
  let mx = -Infinity;
  for (let j = 0; j < v; j++) if (j !== i) mx = Math.max(mx, cos[i * v + j] / temperature);
  let z = 0;
  for (let j = 0; j < v; j++) {
    if (j === i) continue;
    out[j] = Math.exp(cos[i * v + j] / temperature - mx);
    z += out[j];
  }
  for (let j = 0; j < v; j++) out[j] /= z;
  return out;
}

/** Valid pixels grouped by class, and the hard ones, from labels [N] and probs [N * K]. */
export interface RecoGroups {
  /** Present classes, ascending. */
  classes: number[];
  /** Valid pixel indices of each present class (ascending). */
  valid: number[][];
  /** Hard query candidates of each present class. */
  hard: number[][];
}

export function recoGroups(y: Int32Array, probs: Float32Array, k: number, o: { strongThreshold: number; weakThreshold: number }): RecoGroups {
  const n = y.length;
  const { conf } = argmaxRows(probs, n, k);
  const valid = new Map<number, number[]>();
  const hard = new Map<number, number[]>();
  for (let p = 0; p < n; p++) {
    const c = y[p];
    if (c === IGNORE_LABEL || !(conf[p] >= o.weakThreshold)) continue;
    if (!valid.has(c)) {
      valid.set(c, []);
      hard.set(c, []);
    }
    valid.get(c)!.push(p);
    if (probs[p * k + c] < o.strongThreshold) hard.get(c)!.push(p);
  }
  const classes = [...valid.keys()].sort((a, b) => a - b);
  return { classes, valid: classes.map((c) => valid.get(c)!), hard: classes.map((c) => hard.get(c)!) };
}

/**
 * Draws queries and negative keys (see the file comment). Returns, for each class slot with hard
 * pixels (`slots`), numQueries query pixels and numQueries * numNegatives key positions into the
 * concatenation of `valid` (class slot order).
 */
export function sampleReco(g: RecoGroups, cos: ArrayLike<number>, o: { temperature: number; numQueries: number; numNegatives: number }, rng: Rng): { slots: number[]; queries: number[]; keys: number[] } {
  const v = g.classes.length;
  const offsets: number[] = [];
  let off = 0;
  for (const l of g.valid) {
    offsets.push(off);
    off += l.length;
  }
  const slots: number[] = [];
  const queries: number[] = [];
  const keys: number[] = [];
  for (let i = 0; i < v; i++) {
    const hard = g.hard[i];
    if (hard.length === 0) continue;
    slots.push(i);
    for (let q = 0; q < o.numQueries; q++) queries.push(hard[rng.int(0, hard.length)]);
    const p = activeSamplingProbs(cos, v, i, o.temperature);
    const cdf = new Float64Array(v);
    let acc = 0;
    for (let j = 0; j < v; j++) cdf[j] = acc += p[j];
    for (let t = 0; t < o.numQueries * o.numNegatives; t++) {
      const j = drawFromCdf(cdf, rng.next());
      keys.push(offsets[j] + rng.int(0, g.valid[j].length));
    }
  }
  return { slots, queries, keys };
}

export class RecoContrast implements ContrastLoss {
  readonly kind = 'reco' as const;
  readonly o: RecoOptions;

  constructor(o: RecoOptions) {
    const who = 'reco contrast';
    checkPositiveInt(who, 'classes', o.classes);
    checkPositiveInt(who, 'dim', o.dim);
    checkPositive(who, 'temperature', o.temperature);
    checkPositiveInt(who, 'numQueries', o.numQueries);
    checkPositiveInt(who, 'numNegatives', o.numNegatives);
    for (const [name, v] of [['strongThreshold', o.strongThreshold], ['weakThreshold', o.weakThreshold]] as const) {
      if (!(v >= 0 && v <= 1)) throw new TagsegError(`${who}: ${name} must be in [0, 1], got ${v}`);
    }
    this.o = { ...o };
  }

  loss(batch: ContrastBatch, rng: Rng): tf.Scalar {
    const { n, d } = checkBatch('reco contrast', batch, this.o.classes, this.o.dim);
    const y = readLabels('reco contrast', batch.labels, this.o.classes);
    const g = recoGroups(y, batch.probs.dataSync() as Float32Array, this.o.classes, this.o);
    const v = g.classes.length;
    if (v <= 1) return zeroLoss(batch.embeddings);
    const validIdx = g.valid.flat();
    const slotOf = g.valid.flatMap((l, s) => l.map(() => s));
    // detached keys and prototypes (ReCo: under torch.no_grad)
    const [keys, protos] = tf.tidy(() => {
      const flat = tf.reshape(batch.embeddings, [n, d]) as tf.Tensor2D;
      const raw = detach(tf.gather(flat, tf.tensor1d(validIdx, 'int32')) as tf.Tensor2D);
      return [l2Rows(raw), l2Rows(tf.unsortedSegmentSum(raw, tf.tensor1d(slotOf, 'int32'), v) as tf.Tensor2D)];
    });
    try {
      const cosT = tf.tidy(() => tf.matMul(protos, protos, false, true));
      const cos = cosT.dataSync() as Float32Array;
      cosT.dispose();
      const s = sampleReco(g, cos, this.o, rng);
      return tf.tidy(() => {
        if (s.slots.length === 0) return zeroLoss(batch.embeddings);
        const Q = this.o.numQueries;
        const M = this.o.numNegatives;
        const nq = s.slots.length * Q;
        const flat = tf.reshape(batch.embeddings, [n, d]) as tf.Tensor2D;
        const q = l2Rows(tf.gather(flat, tf.tensor1d(s.queries, 'int32')) as tf.Tensor2D); // [nq, D]
        const sim = tf.reshape(tf.matMul(q, keys, false, true), [-1]); // [nq * Nv]
        const nv = validIdx.length;
        const flatKeys = new Int32Array(nq * M);
        for (let r = 0; r < nq; r++) for (let t = 0; t < M; t++) flatKeys[r * M + t] = r * nv + s.keys[r * M + t];
        const neg = tf.reshape(tf.gather(sim, tf.tensor1d(flatKeys, 'int32')), [nq, M]);
        const querySlot = s.slots.flatMap((slot) => new Array<number>(Q).fill(slot));
        const pos = tf.sum(tf.mul(q, tf.gather(protos, tf.tensor1d(querySlot, 'int32'))), 1, true); // [nq, 1]
        const logits = tf.div(tf.concat([pos, neg], 1), this.o.temperature);
        const ce = tf.sub(tf.logSumExp(logits, 1), tf.reshape(tf.slice(logits, [0, 0], [nq, 1]), [nq])); // [nq]
        const perClass = tf.mean(tf.reshape(ce, [s.slots.length, Q]), 1);
        return tf.add(tf.div(tf.sum(perClass), v), zeroLoss(batch.embeddings)) as tf.Scalar;
      });
    } finally {
      tf.dispose([keys, protos]);
    }
  }

  variables(): Map<string, tf.Variable> {
    return new Map();
  }

  dispose(): void {}
}
