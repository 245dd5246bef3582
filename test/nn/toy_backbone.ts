/**
 * A toy backbone for the registry test: average pooling down to the output stride, then one 1x1
 * conv to `channels` (a setting of its own, saved in the CAM model's config). One file; the test
 * registers it with one line.
 */
import * as tf from '@tensorflow/tfjs';
import { type Backbone, type Features, type OutputStride, checkFrozenStages } from '../../nn/backbone.js';
import type { BackboneEntry } from '../../nn/backbones/index.js';
import type { NormKind } from '../../nn/norm.js';
import { ParamStore, heNormalConv } from '../../nn/params.js';
import { Rng } from '../../nn/rng.js';

class ToyBackbone implements Backbone {
  readonly name = 'toy';
  readonly params = new ParamStore();
  readonly strides: number[];
  readonly channels: number[];
  private readonly kernel: tf.Variable;

  constructor(readonly outputStride: OutputStride, readonly norm: NormKind, channels: number, seed: number) {
    this.strides = [outputStride];
    this.channels = [channels];
    this.kernel = this.params.add('proj.kernel', heNormalConv(new Rng(seed), [1, 1, 3, channels]), true);
  }

  forward(x: tf.Tensor4D): Features {
    return tf.tidy(() => {
      const s = this.outputStride;
      const last = tf.relu(tf.conv2d(tf.avgPool(x, s, s, 'same'), this.kernel as tf.Tensor4D, 1, 'same')) as tf.Tensor4D;
      return { levels: [last], last, stride: s, strides: [s], channels: [...this.channels] };
    });
  }

  preprocess(rgb: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => tf.div(rgb, 255) as tf.Tensor4D);
  }

  variables(): tf.Variable[] {
    return this.params.trainable();
  }

  /** One stage: its projection. */
  freezeStages(stages: number): number {
    checkFrozenStages(stages, 1);
    return stages === 0 ? 0 : this.params.setTrainable('proj.', false);
  }

  dispose(): void {
    this.params.dispose();
  }
}

export const toy: BackboneEntry = {
  config: (p) => ({ outputStride: p.output_stride, norm: p.norm, channels: p.width }),
  build: async (c, seed) => new ToyBackbone(c.outputStride, c.norm, c.channels as number, seed),
};
