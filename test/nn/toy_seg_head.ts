/**
 * A toy segmentation head for the registry test: a 1x1 conv of the last backbone level to `dim`
 * channels (ReLU), then a 1x1 classifier. One file; the test registers it with one line.
 */
import * as tf from '@tensorflow/tfjs';
import type { Features } from '../../nn/backbone.js';
import { ParamStore, heNormalConv, xavierUniform } from '../../nn/params.js';
import { Rng } from '../../nn/rng.js';
import type { SegHead, SegHeadEntry } from '../../nn/seg_heads/index.js';

class ToySegHead implements SegHead {
  readonly params = new ParamStore();
  private readonly proj: tf.Variable;
  private readonly classifier: tf.Variable;

  constructor(inChannels: readonly number[], dim: number, classes: number, seed: number) {
    const rng = new Rng(seed);
    this.proj = this.params.add('proj.kernel', heNormalConv(rng, [1, 1, inChannels[inChannels.length - 1]!, dim]), true);
    this.classifier = this.params.add('classifier.kernel', xavierUniform(rng, [1, 1, dim, classes]), true);
  }

  outputStride(strides: readonly number[]): number {
    return strides[strides.length - 1]!;
  }

  represent(f: Features): tf.Tensor4D {
    return tf.tidy(() => tf.relu(tf.conv2d(f.last, this.proj as tf.Tensor4D, 1, 'valid')) as tf.Tensor4D);
  }

  classify(y: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => tf.conv2d(y, this.classifier as tf.Tensor4D, 1, 'valid'));
  }

  forward(f: Features): tf.Tensor4D {
    return tf.tidy(() => this.classify(this.represent(f)));
  }

  dispose(): void {
    this.params.dispose();
  }
}

export const toyHead: SegHeadEntry = {
  config: (p) => ({ dim: p.head_dim }),
  build: (c, inChannels, classes, seed) => new ToySegHead(inChannels, c.dim, classes, seed),
};
