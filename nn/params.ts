/**
 * Named variable sets. Networks in tagseg are explicit weight sets + pure forward functions (not
 * tf.LayersModel graphs) so stages can take intermediate features, share or freeze parts and
 * write custom losses with tf.variableGrads.
 *
 * Names here are stable, local names ("stage2.block0.conv1.kernel"); they key checkpoints and
 * optimizer state. The tf.Variable's own `.name` is left to tfjs's auto-numbering because tfjs
 * keeps one global registry of variable names and throws on duplicates (two backbones in one
 * process, or a test that builds the same net twice, would collide).
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../pipeline/errors.js';
import type { Rng } from './rng.js';

/** Named variables, in insertion order. */
export type NamedVariables = Map<string, tf.Variable>;

export class ParamStore {
  private readonly vars = new Map<string, tf.Variable>();

  /**
   * Register `value` as variable `name`. Takes ownership of `value` (it is disposed; the
   * variable keeps the data).
   */
  add(name: string, value: tf.Tensor, trainable: boolean): tf.Variable {
    if (this.vars.has(name)) {
      value.dispose();
      throw new TagsegError(`duplicate parameter name '${name}'`);
    }
    const v = tf.variable(value, trainable);
    value.dispose();
    this.vars.set(name, v);
    return v;
  }

  get(name: string): tf.Variable {
    const v = this.vars.get(name);
    if (!v) throw new TagsegError(`no parameter named '${name}'`);
    return v;
  }

  has(name: string): boolean {
    return this.vars.has(name);
  }

  /** All variables (trainable and not, e.g. BN moving statistics), keyed `${prefix}${name}`. */
  named(prefix = ''): NamedVariables {
    const out: NamedVariables = new Map();
    for (const [k, v] of this.vars) out.set(`${prefix}${k}`, v);
    return out;
  }

  /** Currently trainable variables, keyed `${prefix}${name}` (input for optimizer groups). */
  namedTrainable(prefix = ''): NamedVariables {
    const out: NamedVariables = new Map();
    for (const [k, v] of this.vars) if (v.trainable) out.set(`${prefix}${k}`, v);
    return out;
  }

  /** Currently trainable variables (input for tf.variableGrads). */
  trainable(): tf.Variable[] {
    return [...this.vars.values()].filter((v) => v.trainable);
  }

  /**
   * Freeze or unfreeze parameters whose name starts with `prefix` (or matches the predicate).
   * BN moving statistics are never made trainable: they are updated by NormUpdates, not gradients.
   * Returns the number of variables changed. (IRN freezes its stem this way: resnet50_cam.py.)
   */
  setTrainable(match: string | ((name: string) => boolean), trainable: boolean): number {
    const f = typeof match === 'string' ? (n: string) => n.startsWith(match) : match;
    let n = 0;
    for (const [k, v] of this.vars) {
      if (!f(k) || isMovingStat(k)) continue;
      if (v.trainable !== trainable) {
        v.trainable = trainable;
        n++;
      }
    }
    return n;
  }

  /** Number of scalar parameters (all variables). */
  size(): number {
    let n = 0;
    for (const v of this.vars.values()) n += v.size;
    return n;
  }

  dispose(): void {
    for (const v of this.vars.values()) v.dispose();
    this.vars.clear();
  }
}

/** Moving statistics are named '*.moving_mean' / '*.moving_variance' by the norm layers. */
export function isMovingStat(name: string): boolean {
  return name.endsWith('.moving_mean') || name.endsWith('.moving_variance');
}

/** Merge named sets; duplicate names are an error (they would overwrite each other in a checkpoint). */
export function mergeNamed(...sets: NamedVariables[]): NamedVariables {
  const out: NamedVariables = new Map();
  for (const s of sets) {
    for (const [k, v] of s) {
      if (out.has(k)) throw new TagsegError(`duplicate variable name '${k}' when merging parameter sets`);
      out.set(k, v);
    }
  }
  return out;
}

/** A float32 tensor of normal samples drawn from `rng` (deterministic, backend-independent). */
export function normalTensor(rng: Rng, shape: number[], std: number): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = rng.normal(0, std);
  return tf.tensor(data, shape, 'float32');
}

/** A float32 tensor of uniform samples in [-limit, limit) drawn from `rng`. */
export function uniformTensor(rng: Rng, shape: number[], limit: number): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = rng.uniform(-limit, limit);
  return tf.tensor(data, shape, 'float32');
}

/**
 * He (Kaiming) normal init for a conv kernel [kh, kw, cin, cout], mode fan_out, gain sqrt(2):
 * std = sqrt(2 / (kh * kw * cout)). This is torchvision ResNet's init
 * (nn.init.kaiming_normal_(w, mode='fan_out', nonlinearity='relu')), He et al. 2015.
 */
export function heNormalConv(rng: Rng, shape: [number, number, number, number]): tf.Tensor4D {
  const [kh, kw, , cout] = shape;
  return normalTensor(rng, shape, Math.sqrt(2 / (kh * kw * cout))) as tf.Tensor4D;
}

/**
 * Xavier/Glorot uniform init: limit = sqrt(6 / (fan_in + fan_out)), with receptive field size
 * folded into both fans (PyTorch convention). PSA initialises its classifier this way
 * (psa network/resnet38_cls.py: torch.nn.init.xavier_uniform_(self.fc8.weight)).
 */
export function xavierUniform(rng: Rng, shape: number[]): tf.Tensor {
  let fanIn: number;
  let fanOut: number;
  if (shape.length === 2) {
    [fanIn, fanOut] = shape;
  } else if (shape.length === 4) {
    const rf = shape[0] * shape[1];
    fanIn = shape[2] * rf;
    fanOut = shape[3] * rf;
  } else {
    throw new TagsegError(`xavierUniform expects a rank-2 or rank-4 shape, got [${shape.join(', ')}]`);
  }
  return uniformTensor(rng, shape, Math.sqrt(6 / (fanIn + fanOut)));
}
