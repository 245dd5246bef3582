/**
 * RCA's semantic aggregation (maeve07/RCA models/rca.py): pixel features attend to the memory
 * centroids and the aggregated context is fused with the features before the class heads.
 *
 *   Q = 1x1 conv(f)                      [B, h, w, d]
 *   K = centroids Wk + bk, V = centroids Wv + bv   [N, d]   (centroids are memory: no gradient)
 *   raw:     S = Q K^T * 20 / M          (RCA: `/ self.cluter_num * 20`, no softmax; M = centres per class)
 *   softmax: S = softmax_N(Q K^T / sqrt(d))  (standard attention)
 *   ctx = 1x1 conv(S V)                  [B, h, w, C]    (RCA `aggre`)
 *   out = 1x1 conv([f, ctx])             [B, h, w, C]    (RCA `concat_project`)
 * Invalid centres (valid = 0) take no part: raw similarities are multiplied by 0, softmax logits
 * get -1e9 (no valid centre at all: a zero context).
 *
 * Init: RCA draws every conv from N(0, 0.01). tagseg does the same except that the fuse conv
 * starts as [identity; N(0, 0.01)], so the fused features start equal to f and the refined head
 * (initialised from the CAM classifier) starts at the CAM solution rather than from noise; the
 * small random context block keeps gradients flowing to Q, K, V and the context conv from step 1.
 */
import * as tf from '@tensorflow/tfjs';
import { relu } from '../../nn/native.js';
import { ParamStore, normalTensor } from '../../nn/params.js';
import { Rng } from '../../nn/rng.js';
import { TagsegError } from '../../pipeline/errors.js';

export type Similarity = 'raw' | 'softmax';

export class Aggregation {
  readonly params = new ParamStore();
  readonly channels: number;
  readonly dim: number;

  constructor(channels: number, dim: number, seed: number) {
    if (!(Number.isInteger(channels) && channels > 0 && Number.isInteger(dim) && dim > 0)) {
      throw new TagsegError(`Aggregation needs positive integer channels and dim, got ${channels}, ${dim}`);
    }
    this.channels = channels;
    this.dim = dim;
    const rng = new Rng(seed);
    const C = channels;
    this.params.add('q.kernel', normalTensor(rng, [C, dim], 0.01), true);
    this.params.add('q.bias', tf.zeros([dim]), true);
    this.params.add('k.kernel', normalTensor(rng, [C, dim], 0.01), true);
    this.params.add('k.bias', tf.zeros([dim]), true);
    this.params.add('v.kernel', normalTensor(rng, [C, dim], 0.01), true);
    this.params.add('v.bias', tf.zeros([dim]), true);
    this.params.add('context.kernel', normalTensor(rng, [dim, C], 0.01), true);
    this.params.add('context.bias', tf.zeros([C]), true);
    const fuse = tf.tidy(() => tf.concat([tf.eye(C), normalTensor(rng, [C, C], 0.01)], 0));
    this.params.add('fuse.kernel', fuse, true);
    this.params.add('fuse.bias', tf.zeros([C]), true);
  }

  /**
   * f [B, h, w, C], centroids [N, C], valid [N] -> fused features [B, h, w, C].
   * `scale`: the raw similarity factor (RCA 20 / M).
   */
  forward(f: tf.Tensor4D, centroids: tf.Tensor2D, valid: tf.Tensor1D, similarity: Similarity, scale: number): tf.Tensor4D {
    const [B, h, w, C] = f.shape;
    if (C !== this.channels || centroids.shape[1] !== C || valid.shape[0] !== centroids.shape[0]) {
      throw new TagsegError(`Aggregation: features [${f.shape.join(', ')}], centroids [${centroids.shape.join(', ')}], valid [${valid.shape.join(', ')}] for ${this.channels} channels`);
    }
    const p = (n: string) => this.params.get(n);
    return tf.tidy(() => {
      const x = tf.reshape(f, [B * h * w, C]);
      const q = tf.add(tf.matMul(x, p('q.kernel')), p('q.bias'));
      const k = tf.add(tf.matMul(centroids, p('k.kernel')), p('k.bias'));
      const v = tf.add(tf.matMul(centroids, p('v.kernel')), p('v.bias'));
      const logits = tf.matMul(q, k, false, true); // [BHW, N]
      const ok = tf.reshape(valid, [1, -1]);
      let s: tf.Tensor;
      if (similarity === 'raw') {
        s = tf.mul(tf.mul(logits, scale), ok);
      } else {
        const masked = tf.add(tf.div(logits, Math.sqrt(this.dim)), tf.mul(tf.sub(1, ok), -1e9));
        s = tf.mul(tf.softmax(masked), tf.step(tf.sum(ok)));
      }
      const ctx = tf.add(tf.matMul(tf.matMul(s, v), p('context.kernel')), p('context.bias')); // [BHW, C]
      const out = tf.add(tf.matMul(tf.concat([x, ctx], 1), p('fuse.kernel')), p('fuse.bias'));
      return tf.reshape(out, [B, h, w, C]) as tf.Tensor4D;
    });
  }

  dispose(): void {
    this.params.dispose();
  }
}

/**
 * The projection head of the contrast anchor (RCA `extra_F`: conv3x3-BN-ReLU-conv3x3; here two
 * 1x1 convs with a ReLU between, per pixel, then pooled over the region by the caller).
 */
export class Projection {
  readonly params = new ParamStore();

  constructor(readonly channels: number, seed: number) {
    const rng = new Rng(seed);
    const C = channels;
    // He-like init for the hidden layer so the projection starts informative
    this.params.add('p1.kernel', normalTensor(rng, [C, C], Math.sqrt(2 / C)), true);
    this.params.add('p1.bias', tf.zeros([C]), true);
    this.params.add('p2.kernel', normalTensor(rng, [C, C], Math.sqrt(1 / C)), true);
    this.params.add('p2.bias', tf.zeros([C]), true);
  }

  /** f [B, h, w, C] -> [B, h, w, C]. */
  forward(f: tf.Tensor4D): tf.Tensor4D {
    const [B, h, w, C] = f.shape;
    const p = (n: string) => this.params.get(n);
    return tf.tidy(() => {
      const x = tf.reshape(f, [B * h * w, C]);
      const y = tf.add(tf.matMul(relu(tf.add(tf.matMul(x, p('p1.kernel')), p('p1.bias'))), p('p2.kernel')), p('p2.bias'));
      return tf.reshape(y, [B, h, w, C]) as tf.Tensor4D;
    });
  }

  dispose(): void {
    this.params.dispose();
  }
}
