/**
 * Registry entry `deeplab` (nn/seg_heads/index.ts), the segment stage's head: a DeepLab-style
 * multi-branch context module without dilation, an optional DeepLab v3+ decoder, and a 1x1 classifier.
 *
 * DeepLab v3's ASPP runs parallel 3x3 convs with dilation 6/12/18 on the last feature map plus an
 * image-pooling branch (Chen et al. 2017). tfjs has no gradient for dilated convolutions
 * (methods.md 1), so the larger fields of view come from pooling instead (the PSPNet pyramid,
 * Zhao et al. 2017): a 3x3 conv on the map average-pooled by 2 and by 4 sees 2x / 4x the
 * context of a plain 3x3, like dilation 2 / 4, at a quarter / sixteenth of the cost. Branches:
 *
 *   1x1 conv | 3x3 conv | avgpool 2 -> 3x3 conv -> up | avgpool 4 -> 3x3 conv -> up | global pool -> 1x1 conv -> broadcast
 *
 * each to `dim` channels + norm (not the 1 x 1 pooled branch) + ReLU, concatenated, 1x1 conv to `dim` + norm + ReLU. With
 * `decoder` (DeepLab v3+, Chen et al. 2018), the stride-4 backbone level is reduced to 48
 * channels (their setting), concatenated with the upsampled context, and a 3x3 conv (dim) + norm
 * + ReLU refines boundaries before the classifier (a 1x1 conv with bias -> K logits).
 *
 * Norms are GroupNorm (no moving statistics: correct for the batches of 4-16 a CPU affords;
 * DeepLab freezes BN statistics for small batches instead). Upsampling is bilinear with TF's
 * legacy corner mapping (align_corners = half_pixel_centers = false): the only mode whose
 * gradient is right in tfjs-node (see nn/affinity_head.ts), used at inference alike.
 */
import * as tf from '@tensorflow/tfjs';
import type { Features } from '../backbone.js';
import { relu } from '../native.js';
import { Norm } from '../norm.js';
import { ParamStore, heNormalConv, xavierUniform } from '../params.js';
import { Rng } from '../rng.js';
import { TagsegError } from '../../pipeline/errors.js';
import type { SegHead, SegHeadEntry } from './index.js';

/** Channels the decoder reduces the low-level features to (DeepLab v3+: 48). */
export const DECODER_LOW_CHANNELS = 48;
/** Average-pooling factors of the pooled 3x3 branches. */
export const POOL_FACTORS = [2, 4] as const;

export interface ContextHeadOptions {
  /** Channels of the branches, the projection and the decoder. */
  dim: number;
  /** Number of classes K (dataset classes, background included when there is one). */
  classes: number;
  /** DeepLab v3+ decoder on the stride-4 level (level 0). */
  decoder: boolean;
  seed: number;
}

interface ConvNorm {
  kernel: tf.Variable;
  norm: Norm;
}

export class ContextHead implements SegHead {
  readonly dim: number;
  readonly classes: number;
  readonly decoder: boolean;
  /** Variables under stable names (branch{i}.kernel, project.*, low.*, fuse.*, classifier.*). */
  readonly params = new ParamStore();
  private readonly inChannels: readonly number[];
  private readonly b1x1: ConvNorm;
  private readonly b3x3: ConvNorm;
  private readonly pooled: ConvNorm[];
  private readonly image: { kernel: tf.Variable; bias: tf.Variable };
  private readonly project: ConvNorm;
  private readonly low?: ConvNorm;
  private readonly fuse?: ConvNorm;
  private readonly classifier: tf.Variable;
  private readonly bias: tf.Variable;

  /** inChannels: channels of every backbone level (Backbone.channels); the last one feeds the context module. */
  constructor(inChannels: readonly number[], o: ContextHeadOptions) {
    if (!(inChannels.length > 0 && inChannels.every((c) => Number.isInteger(c) && c > 0))) {
      throw new TagsegError(`ContextHead needs the positive channel counts of the backbone levels, got [${inChannels.join(', ')}]`);
    }
    if (!(Number.isInteger(o.dim) && o.dim > 0 && Number.isInteger(o.classes) && o.classes > 0)) {
      throw new TagsegError(`ContextHead needs positive integer dim and classes, got ${o.dim}, ${o.classes}`);
    }
    this.inChannels = [...inChannels];
    this.dim = o.dim;
    this.classes = o.classes;
    this.decoder = o.decoder;
    const rng = new Rng(o.seed);
    const c = inChannels[inChannels.length - 1];
    const convNorm = (name: string, k: number, cin: number, cout: number): ConvNorm => ({
      kernel: this.params.add(`${name}.kernel`, heNormalConv(rng, [k, k, cin, cout]), true),
      norm: new Norm(this.params, `${name}.norm`, cout, { kind: 'group' }),
    });
    this.b1x1 = convNorm('branch0', 1, c, o.dim);
    this.b3x3 = convNorm('branch1', 3, c, o.dim);
    this.pooled = POOL_FACTORS.map((_, i) => convNorm(`branch${i + 2}`, 3, c, o.dim));
    // No norm on the image-pooling branch: its map is 1 x 1, where GroupNorm over a few channels
    // would erase the signal (DeepLab v3 uses BatchNorm across the batch there); a bias instead.
    this.image = {
      kernel: this.params.add('image.kernel', heNormalConv(rng, [1, 1, c, o.dim]), true),
      bias: this.params.add('image.bias', tf.zeros([o.dim]), true),
    };
    this.project = convNorm('project', 1, o.dim * (3 + POOL_FACTORS.length), o.dim);
    if (o.decoder) {
      this.low = convNorm('low', 1, inChannels[0], DECODER_LOW_CHANNELS);
      this.fuse = convNorm('fuse', 3, o.dim + DECODER_LOW_CHANNELS, o.dim);
    }
    // DeepLab's classifier: a 1x1 conv with bias; Xavier init keeps the initial logits small.
    this.classifier = this.params.add('classifier.kernel', xavierUniform(rng, [1, 1, o.dim, o.classes]), true);
    this.bias = this.params.add('classifier.bias', tf.zeros([o.classes]), true);
  }

  /** Stride of the logits relative to the input, for a backbone whose levels have `strides`. */
  outputStride(strides: readonly number[]): number {
    return this.decoder ? strides[0] : strides[strides.length - 1];
  }

  /**
   * Features -> penultimate map [B, h, w, dim] (the representation the contrastive losses'
   * projection heads read) at the decoder's level-0 grid or the last level's grid.
   */
  represent(f: Features): tf.Tensor4D {
    return tf.tidy(() => {
      const x = f.last;
      if (x.rank !== 4 || x.shape[3] !== this.inChannels[this.inChannels.length - 1]) {
        throw new TagsegError(`ContextHead: last level must be [B,h,w,${this.inChannels[this.inChannels.length - 1]}], got [${x.shape.join(', ')}]`);
      }
      const [, h, w] = x.shape;
      const apply = (cn: ConvNorm, t: tf.Tensor4D) => relu(cn.norm.apply(tf.conv2d(t, cn.kernel as tf.Tensor4D, 1, 'same'), false)) as tf.Tensor4D;
      const up = (t: tf.Tensor4D, size: [number, number]) => (t.shape[1] === size[0] && t.shape[2] === size[1] ? t : tf.image.resizeBilinear(t, size, false, false));
      const branches = [apply(this.b1x1, x), apply(this.b3x3, x)];
      POOL_FACTORS.forEach((p, i) => {
        const pooled = tf.avgPool(x, [p, p], [p, p], 'same') as tf.Tensor4D;
        branches.push(up(apply(this.pooled[i], pooled), [h, w]));
      });
      const g = relu(tf.add(tf.conv2d(tf.mean(x, [1, 2], true) as tf.Tensor4D, this.image.kernel as tf.Tensor4D, 1, 'valid'), this.image.bias));
      branches.push(tf.tile(g, [1, h, w, 1]) as tf.Tensor4D);
      let y = apply(this.project, tf.concat(branches, 3));
      if (this.low && this.fuse) {
        const l = f.levels[0];
        if (l.shape[3] !== this.inChannels[0]) throw new TagsegError(`ContextHead: level 0 must have ${this.inChannels[0]} channels, got ${l.shape[3]}`);
        const lowF = apply(this.low, l);
        y = apply(this.fuse, tf.concat([up(y, [l.shape[1], l.shape[2]]), lowF], 3));
      }
      return y;
    });
  }

  /** Penultimate map [B, h, w, dim] -> logits [B, h, w, K]. */
  classify(y: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => tf.add(tf.conv2d(y, this.classifier as tf.Tensor4D, 1, 'valid'), this.bias) as tf.Tensor4D);
  }

  /** Features -> logits [B, h, w, K] at the head's output stride. */
  forward(f: Features): tf.Tensor4D {
    return tf.tidy(() => this.classify(this.represent(f)));
  }

  dispose(): void {
    this.params.dispose();
  }
}

/** Logits [B, h, w, K] -> [B, size[0], size[1], K], bilinear (legacy corner mapping, see the file comment). */
export function upsampleLogits(logits: tf.Tensor4D, size: [number, number]): tf.Tensor4D {
  return tf.tidy(() => (logits.shape[1] === size[0] && logits.shape[2] === size[1] ? logits.clone() : tf.image.resizeBilinear(logits, size, false, false)));
}

/**
 * Saved as `head: {dim, decoder}` in models/segment/config.json, without a `kind` (the models
 * written before the registry read as this entry, and their bytes stay the same).
 */
export const deeplab: SegHeadEntry = {
  config: (p) => ({ dim: p.head_dim, decoder: p.decoder }),
  build: (config, inChannels, classes, seed) => new ContextHead(inChannels, { dim: config.dim, classes, decoder: config.decoder === true, seed }),
};
