/**
 * One training step done right: gradients of the loss w.r.t. the optimizer's trainable
 * variables, a finite-loss check, the update, then the BatchNorm moving averages (outside the
 * gradient tape; see nn/norm.ts), with every temporary tensor released.
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../pipeline/errors.js';
import { NormUpdates } from './norm.js';
import type { Optimizer } from './optim.js';

/** A step's loss was NaN or infinite (runTraining adds the stage, epoch and lr key). */
export class NonFiniteLossError extends TagsegError {
  constructor(readonly loss: number, iteration: number) {
    super(`training loss is ${loss} at iteration ${iteration}; the step was skipped`, { hint: 'lower the learning rate, or check inputs and labels for NaN/inf' });
  }
}

export interface TrainStepResult {
  /** Loss value of this step. */
  loss: number;
  /** Number of BatchNorm layers whose moving averages were updated. */
  normUpdates: number;
}

/**
 * `loss(updates)` builds the scalar loss; pass `updates` to every training-mode forward whose
 * batch statistics should count (backbone.forward(x, true, updates)). If the loss is not finite
 * nothing is changed (weights, optimizer state, moving averages) and a TagsegError is thrown.
 */
export function trainStep(optimizer: Optimizer, loss: (updates: NormUpdates) => tf.Scalar): TrainStepResult {
  const updates = new NormUpdates();
  try {
    const { value, grads } = optimizer.computeGradients(() => loss(updates));
    try {
      const v = value.dataSync()[0];
      if (!Number.isFinite(v)) {
        throw new NonFiniteLossError(v, optimizer.iterations);
      }
      optimizer.applyGradients(grads);
      const n = updates.size;
      updates.apply();
      return { loss: v, normUpdates: n };
    } finally {
      tf.dispose([value, ...Object.values(grads)]);
    }
  } finally {
    updates.dispose();
  }
}
