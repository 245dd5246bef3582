/**
 * Projection head of the contrastive losses of the `segment` stage (ContrastiveSeg's
 * ProjectionHead 'convmlp', tfzhou/ContrastiveSeg lib/models/modules/projection.py; ReCo's
 * representation head and SPML's embedding are the same shape of thing):
 *
 *   1x1 conv (Cin -> hidden, no bias) -> norm -> ReLU -> 1x1 conv (hidden -> dim, bias) -> L2-normalise
 *
 * ContrastiveSeg uses hidden = Cin and a bias on the first conv too; a bias right before a
 * BatchNorm/GroupNorm is cancelled by the normalisation, so it is left out. The output is unit
 * length per pixel (F.normalize(p=2, dim=1), eps 1e-12). Norm: BatchNorm by default (ContrastiveSeg's
 * BNReLU); any nn/norm.ts kind works ('group' matches the segment head's GroupNorm for small batches).
 */
import * as tf from '@tensorflow/tfjs';
import { relu } from '../native.js';
import { TagsegError } from '../../pipeline/errors.js';
import { Norm, type NormOptions, type NormUpdates } from '../norm.js';
import { ParamStore, heNormalConv, xavierUniform } from '../params.js';
import { Rng } from '../rng.js';

export interface ProjectionHeadOptions {
  /** Output channels D (ContrastiveSeg / ReCo 256, SPML 64). */
  dim: number;
  /** Hidden channels. Default: the input channels (ContrastiveSeg). */
  hidden?: number;
  /** Norm after the first conv. Default BatchNorm (ContrastiveSeg). */
  norm?: NormOptions;
  seed: number;
}

export class ProjectionHead {
  readonly inChannels: number;
  readonly hidden: number;
  readonly dim: number;
  /** Variables under stable names: proj1.kernel, proj1.norm.*, proj2.kernel, proj2.bias. */
  readonly params = new ParamStore();
  private readonly k1: tf.Variable;
  private readonly norm: Norm;
  private readonly k2: tf.Variable;
  private readonly b2: tf.Variable;

  constructor(inChannels: number, o: ProjectionHeadOptions) {
    const hidden = o.hidden ?? inChannels;
    if (![inChannels, hidden, o.dim].every((v) => Number.isInteger(v) && v > 0)) {
      throw new TagsegError(`ProjectionHead needs positive integer channels, got in ${inChannels}, hidden ${hidden}, dim ${o.dim}`);
    }
    this.inChannels = inChannels;
    this.hidden = hidden;
    this.dim = o.dim;
    const rng = new Rng(o.seed);
    // He init before the ReLU, Xavier on the linear output (as nn/affinity_head.ts)
    this.k1 = this.params.add('proj1.kernel', heNormalConv(rng, [1, 1, inChannels, hidden]), true);
    this.norm = new Norm(this.params, 'proj1.norm', hidden, o.norm ?? { kind: 'batch' });
    this.k2 = this.params.add('proj2.kernel', xavierUniform(rng, [1, 1, hidden, o.dim]), true);
    this.b2 = this.params.add('proj2.bias', tf.zeros([o.dim]), true);
  }

  /**
   * x [B, h, w, Cin] -> unit embeddings [B, h, w, dim]. training: norm in training mode (BatchNorm
   * batch statistics go to `updates`, applied after the step by nn/train.ts).
   */
  forward(x: tf.Tensor4D, training: boolean, updates?: NormUpdates): tf.Tensor4D {
    return tf.tidy(() => {
      if (x.rank !== 4 || x.shape[3] !== this.inChannels) {
        throw new TagsegError(`ProjectionHead expects [B, h, w, ${this.inChannels}], got [${x.shape.join(', ')}]`);
      }
      const y = relu(this.norm.apply(tf.conv2d(x, this.k1 as tf.Tensor4D, 1, 'valid'), training, updates));
      const z = tf.add(tf.conv2d(y, this.k2 as tf.Tensor4D, 1, 'valid'), this.b2);
      return tf.div(z, tf.maximum(tf.sqrt(tf.sum(tf.square(z), 3, true)), 1e-12)) as tf.Tensor4D;
    });
  }

  /** Trainable variables (for tf.variableGrads). */
  variables(): tf.Variable[] {
    return this.params.trainable();
  }

  dispose(): void {
    this.params.dispose();
  }
}
