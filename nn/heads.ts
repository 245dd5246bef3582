/**
 * CAM classifier head (Zhou et al. 2016 as used by PSA and IRN): global average pooling -> 1x1
 * conv without bias -> C logits for the multi-label soft-margin loss. Because pooling and the
 * 1x1 conv are both linear, the logits equal the spatial mean of the per-pixel class maps, so
 * CAM_c = ReLU(1x1 conv of the feature map) comes for free
 * (jiwoon-ahn/irn net/resnet50_cam.py: gap2d -> classifier; CAM: F.conv2d(x, classifier.weight)).
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../pipeline/errors.js';
import { ParamStore, xavierUniform } from './params.js';
import { Rng } from './rng.js';

export interface CamHeadOptions {
  /** Seed of the init. Default 0. */
  seed?: number;
}

export class CamHead {
  readonly inChannels: number;
  readonly numClasses: number;
  /** Variables under stable names ('classifier.kernel'). */
  readonly params = new ParamStore();
  /** 1x1 conv kernel [1, 1, inChannels, numClasses]. */
  readonly kernel: tf.Variable;

  constructor(inChannels: number, numClasses: number, opts: CamHeadOptions = {}) {
    if (!(Number.isInteger(inChannels) && inChannels > 0 && Number.isInteger(numClasses) && numClasses > 0)) {
      throw new TagsegError(`CamHead needs positive integer channels and classes, got ${inChannels}, ${numClasses}`);
    }
    this.inChannels = inChannels;
    this.numClasses = numClasses;
    // Xavier uniform as PSA's classifier (psa network/resnet38_cls.py, xavier_uniform_(fc8.weight)).
    this.kernel = this.params.add('classifier.kernel', xavierUniform(new Rng(opts.seed ?? 0), [1, 1, inChannels, numClasses]), true);
  }

  /** features [B,h,w,Cin] -> logits [B,C]: global average pooling, then the 1x1 conv. */
  classifierLogits(features: tf.Tensor4D): tf.Tensor2D {
    return tf.tidy(() => {
      this.checkInput(features);
      const pooled = tf.mean(features, [1, 2]) as tf.Tensor2D;
      return tf.matMul(pooled, tf.reshape(this.kernel, [this.inChannels, this.numClasses]) as tf.Tensor2D);
    });
  }

  /**
   * features [B,h,w,Cin] -> class activation maps [B,h,w,C] before ReLU (the same 1x1 conv per
   * pixel; callers apply ReLU / normalisation). mean over (h, w) of camMaps == classifierLogits.
   */
  camMaps(features: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      this.checkInput(features);
      return tf.conv2d(features, this.kernel as tf.Tensor4D, 1, 'valid');
    });
  }

  /** The 1x1 kernel as a matrix [Cin, C] (for losses that classify pooled features with it). */
  weightMatrix(): tf.Tensor2D {
    return tf.reshape(this.kernel, [this.inChannels, this.numClasses]);
  }

  variables(): tf.Variable[] {
    return this.params.trainable();
  }

  dispose(): void {
    this.params.dispose();
  }

  private checkInput(f: tf.Tensor): void {
    if (f.rank !== 4 || f.shape[3] !== this.inChannels) {
      throw new TagsegError(`CamHead expects [B,h,w,${this.inChannels}] features, got [${f.shape.join(', ')}]`);
    }
  }
}
