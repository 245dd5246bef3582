/**
 * RCA's dataset-level memory (maeve07/RCA models/rca.py `_dequeue_and_enqueue`, register_buffer
 * queue{i} / queue_ptr{i} / cluter{i}): one queue of `size` region embeddings per class, and its
 * k-means summary of `centroids` rows per class that the aggregation module reads.
 *
 * All state is non-trainable tf.Variables (checkpointed with the weights by nn/loop.ts, saved with
 * the model, so training resumes and inference reproduces exactly):
 *   queue      [K * size, D]       float32, class k's slots are rows k*size .. (k+1)*size - 1
 *   ptr        [K]                 int32, next slot of each class
 *   count      [K]                 int32, filled slots of each class (<= size)
 *   centroids  [K * M, D]          float32, class k's centres are rows k*M .. (k+1)*M - 1
 *   valid      [K * M]             float32, 1 where a centre exists (a class with fewer than M
 *                                   embeddings has fewer centres; none before the first k-means)
 *
 * Update (one embedding e of class k into slot p = ptr[k], then ptr[k] = (p + 1) mod size):
 *   'replace': slot <- e (a FIFO queue);
 *   'blend':   slot <- m * slot + (1 - m) * e (RCA, m = 0.99), except a never-filled slot takes e.
 * Deviation: RCA starts every queue and centroid set with randn and blends into that noise, so
 * with few images per class the memory stays mostly noise (0.99^n of it survives n visits of a
 * slot); tagseg starts empty and uses filled entries only.
 */
import * as tf from '@tensorflow/tfjs';
import { kmeans } from '../../ops/kmeans.js';
import { ParamStore } from '../../nn/params.js';
import { TagsegError } from '../../pipeline/errors.js';

export type MemoryUpdate = 'replace' | 'blend';

export interface MemoryConfig {
  classes: number;
  size: number;
  dim: number;
  centroids: number;
}

export class MemoryBank {
  readonly params = new ParamStore();
  readonly queue: tf.Variable;
  readonly ptr: tf.Variable;
  readonly count: tf.Variable;
  readonly centroids: tf.Variable;
  readonly valid: tf.Variable;

  constructor(readonly config: MemoryConfig) {
    const { classes: K, size: S, dim: D, centroids: M } = config;
    if (![K, S, D, M].every((v) => Number.isInteger(v) && v > 0)) throw new TagsegError(`MemoryBank needs positive integer sizes, got ${JSON.stringify(config)}`);
    this.queue = this.params.add('queue', tf.zeros([K * S, D]), false);
    this.ptr = this.params.add('ptr', tf.zeros([K], 'int32'), false);
    this.count = this.params.add('count', tf.zeros([K], 'int32'), false);
    this.centroids = this.params.add('centroids', tf.zeros([K * M, D]), false);
    this.valid = this.params.add('valid', tf.zeros([K * M]), false);
  }

  /** Filled slots per class (read back). */
  counts(): Int32Array {
    return this.count.dataSync() as Int32Array;
  }

  /** [K * size] class id of every slot (int32). */
  slotClasses(): tf.Tensor1D {
    const { classes: K, size: S } = this.config;
    return tf.tensor1d(Int32Array.from({ length: K * S }, (_, i) => Math.floor(i / S)), 'int32');
  }

  /** [K * size] 1 where the slot holds an embedding. */
  slotValid(): tf.Tensor1D {
    const { classes: K, size: S } = this.config;
    const c = this.counts();
    return tf.tensor1d(Float32Array.from({ length: K * S }, (_, i) => (i % S < c[Math.floor(i / S)] ? 1 : 0)));
  }

  /**
   * Enqueue embeddings [R, D] of classes `cls` (R ints, in order; rows where `keep[r]` is false are
   * skipped). Sequential semantics: equal to enqueueing the kept rows one by one.
   */
  enqueue(embeddings: tf.Tensor2D, cls: readonly number[], keep: readonly boolean[], mode: MemoryUpdate, momentum: number): number {
    const { classes: K, size: S, dim: D } = this.config;
    if (embeddings.shape[1] !== D || cls.length !== embeddings.shape[0] || keep.length !== cls.length) {
      throw new TagsegError(`MemoryBank.enqueue: embeddings [${embeddings.shape.join(', ')}], ${cls.length} classes, ${keep.length} flags for dim ${D}`);
    }
    const ptr = Int32Array.from(this.ptr.dataSync());
    const count = Int32Array.from(this.counts());
    // slot -> (source row, blend?) with the later write winning; a slot written twice in one call
    // (more than `size` rows of a class) keeps the last row, blended into the slot's old value.
    const writes = new Map<number, { row: number; blend: boolean }>();
    let n = 0;
    cls.forEach((k, r) => {
      if (!keep[r]) return;
      if (!(Number.isInteger(k) && k >= 0 && k < K)) throw new TagsegError(`MemoryBank.enqueue: class ${k} outside [0, ${K})`);
      const slot = k * S + ptr[k];
      writes.set(slot, { row: r, blend: mode === 'blend' && (writes.get(slot)?.blend ?? ptr[k] < count[k]) });
      ptr[k] = (ptr[k] + 1) % S;
      count[k] = Math.min(S, count[k] + 1);
      n++;
    });
    if (n === 0) return 0;
    const slots = [...writes.keys()];
    const rows = slots.map((s) => writes.get(s)!.row);
    const blend = slots.map((s) => (writes.get(s)!.blend ? 1 : 0));
    const next = tf.tidy(() => {
      const idx = tf.tensor1d(slots, 'int32');
      const e = tf.gather(embeddings, tf.tensor1d(rows, 'int32'));
      const old = tf.gather(this.queue, idx);
      const b = tf.tensor2d(blend, [slots.length, 1]);
      const mixed = tf.add(tf.mul(b, tf.add(tf.mul(old, momentum), tf.mul(e, 1 - momentum))), tf.mul(tf.sub(1, b), e));
      return tf.tensorScatterUpdate(this.queue, tf.reshape(idx, [-1, 1]), mixed);
    });
    this.queue.assign(next);
    next.dispose();
    setInt(this.ptr, ptr);
    setInt(this.count, count);
    return n;
  }

  /**
   * Summarise every class queue by k-means (RCA: 10 centres at every epoch start after the first):
   * min(M, filled) centres from the filled slots, seeded per class; the other centre rows are
   * zero and invalid.
   */
  summarize(o: { iters: number; seed: number }): void {
    const { classes: K, size: S, dim: D, centroids: M } = this.config;
    const count = this.counts();
    const parts: tf.Tensor2D[] = [];
    const valid = new Float32Array(K * M);
    try {
      for (let k = 0; k < K; k++) {
        const m = Math.min(M, count[k]);
        if (m === 0) {
          parts.push(tf.zeros([M, D]));
          continue;
        }
        const rows = tf.slice(this.queue, [k * S, 0], [count[k], D]) as tf.Tensor2D;
        const r = kmeans(rows, m, { iters: o.iters, seed: o.seed * 7919 + k });
        rows.dispose();
        r.assign.dispose();
        parts.push(m < M ? tf.tidy(() => tf.concat([r.centroids, tf.zeros([M - m, D])], 0)) : r.centroids);
        if (m < M) r.centroids.dispose();
        valid.fill(1, k * M, k * M + m);
      }
      const all = tf.concat(parts, 0);
      this.centroids.assign(all);
      all.dispose();
      const v = tf.tensor1d(valid);
      this.valid.assign(v);
      v.dispose();
    } finally {
      tf.dispose(parts);
    }
  }

  dispose(): void {
    this.params.dispose();
  }
}

function setInt(v: tf.Variable, data: Int32Array): void {
  const t = tf.tensor1d(data, 'int32');
  v.assign(t);
  t.dispose();
}
