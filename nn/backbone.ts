/**
 * What every backbone (nn/resnet.ts, nn/mobilenet.ts) gives the stages: a pure forward function
 * returning multi-level features, and its named variables.
 */
import * as tf from '@tensorflow/tfjs';
import type { NormKind, NormUpdates } from './norm.js';
import type { ParamStore } from './params.js';
import { TagsegError } from '../pipeline/errors.js';

/** Output stride of the last feature map: input size / feature size. */
export type OutputStride = 8 | 16 | 32;

export interface Features {
  /**
   * One map per backbone stage, in order, strides non-decreasing (e.g. ResNet at stride 8:
   * strides [4, 8, 8, 8]). levels[i]: [B, ceil(H / strides[i]), ceil(W / strides[i]), channels[i]].
   */
  levels: tf.Tensor4D[];
  /** The last map (the same tensor object as levels[levels.length - 1]; dispose once). */
  last: tf.Tensor4D;
  /** Stride of `last`. */
  stride: number;
  /** Stride of each level. */
  strides: number[];
  /** Channels of each level. */
  channels: number[];
}

export interface Backbone {
  readonly name: string;
  readonly outputStride: OutputStride;
  readonly norm: NormKind;
  /** Stride of each level of Features. */
  readonly strides: number[];
  /** Channels of each level of Features. */
  readonly channels: number[];
  /** All variables, trainable and not (BN moving statistics), under stable names. */
  readonly params: ParamStore;
  /**
   * x: [B,H,W,3] preprocessed input (see `preprocess`) -> Features.
   * training=true: BatchNorm uses batch statistics and records them into `updates` when given
   * (apply them after the optimizer step; see NormUpdates). Without `updates` the moving
   * averages are left unchanged.
   */
  forward(x: tf.Tensor4D, training: boolean, updates?: NormUpdates): Features;
  /** RGB [B,H,W,3] in [0, 255] -> the input distribution the network expects. */
  preprocess(rgb: tf.Tensor4D): tf.Tensor4D;
  /** Currently trainable variables. */
  variables(): tf.Variable[];
  /**
   * Keep the stem and the layers of the first `stages` feature levels at their current weights
   * (mmsegmentation's `frozen_stages`): their variables stop being trainable and their norms run in
   * inference mode, so a training step runs no backward pass through them. 0 = none; at most
   * levels.length. One-way: a smaller n later keeps what is frozen. Returns the number of
   * variables this call froze.
   */
  freezeStages(stages: number): number;
  dispose(): void;
}

/** The check every backbone's freezeStages makes: an integer in [0, levels]. */
export function checkFrozenStages(stages: number, levels: number): void {
  if (!Number.isInteger(stages) || stages < 0 || stages > levels) {
    throw new TagsegError(`frozen stages must be an integer from 0 to ${levels} (the backbone's feature levels), got ${stages}`);
  }
}

/** Dispose the tensors of a Features object (levels and `last`, once each). */
export function disposeFeatures(f: Features): void {
  tf.dispose([...new Set([...f.levels, f.last])]);
}
