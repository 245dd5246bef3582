/**
 * Normalisation layers shared by the backbones.
 *
 * - 'batch': BatchNorm (Ioffe & Szegedy 2015). training=true normalises with the batch
 *   statistics; the moving averages are non-trainable variables that are NOT touched inside the
 *   forward pass. Instead each BN layer records its batch statistics into a `NormUpdates`
 *   collector passed to forward(); the caller applies them after the optimizer step, outside
 *   the gradient tape (nn/train.ts trainStep does this). That keeps forward() pure, makes a
 *   forward pass that is only evaluated (or a second augmented view) not count, and means a
 *   step whose loss turns out NaN can be dropped without corrupting the statistics.
 *   training=false normalises with the moving averages.
 * - 'group': GroupNorm (Wu & He 2018, 32 groups), independent of batch size, for the small
 *   batches a 2-core CPU affords. No moving statistics.
 * - 'frozen': BatchNorm that always normalises with its (pretrained) moving statistics, in
 *   training too; gamma/beta stay trainable. This is IRN's FixedBatchNorm for its
 *   ImageNet-pretrained backbone (jiwoon-ahn/irn net/resnet50.py), the usual choice when
 *   fine-tuning a pretrained net with batches of 8-16.
 *
 * Moving-average convention: `momentum` is PyTorch's (the weight of the NEW batch statistic,
 * default 0.1, as in IRN/PSA's torch BatchNorm2d): moving = (1 - m) * moving + m * batch, with
 * the unbiased (n / (n - 1)) batch variance, like torch.
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../pipeline/errors.js';
import { fusedBatchNormFixed, fusedBatchNormTrain } from './native.js';
import type { ParamStore } from './params.js';

export type NormKind = 'batch' | 'group' | 'frozen';

export interface NormOptions {
  kind: NormKind;
  /** Added to the variance. PyTorch default 1e-5; Keras MobileNet uses 1e-3. */
  eps?: number;
  /** PyTorch-style momentum (weight of the new batch statistic). Default 0.1. */
  momentum?: number;
  /** GroupNorm groups (upper bound; the largest divisor of the channel count <= this). Default 32. */
  groups?: number;
}

interface PendingUpdate {
  mean: tf.Variable;
  variance: tf.Variable;
  batchMean: tf.Tensor1D;
  batchVar: tf.Tensor1D;
  momentum: number;
}

/**
 * Collects BatchNorm batch statistics during training-mode forward passes, to be applied to the
 * moving averages after the gradient step. The recorded tensors are kept alive (tf.keep) past
 * the tidy/gradient scopes; `apply()` or `dispose()` releases them -- always call one.
 */
export class NormUpdates {
  private pending: PendingUpdate[] = [];

  /** Called by BN layers. Takes the tensors (keeps them past the enclosing tidy). */
  record(mean: tf.Variable, variance: tf.Variable, batchMean: tf.Tensor1D, batchVar: tf.Tensor1D, momentum: number): void {
    this.pending.push({ mean, variance, batchMean: tf.keep(batchMean), batchVar: tf.keep(batchVar), momentum });
  }

  /** Number of recorded layer updates. */
  get size(): number {
    return this.pending.length;
  }

  /**
   * moving = (1 - m) * moving + m * batch for every recorded layer, in record order (a layer
   * recorded twice, e.g. two views, is blended twice, as torch does per forward), then release.
   */
  apply(): void {
    const pending = this.pending;
    this.pending = [];
    try {
      // One blend over the concatenation of all layers' statistics instead of 6 small ops per
      // layer (kernel launch overhead dominates these [C] vectors on tfjs-node); elementwise, so
      // bit-identical. Round r holds each layer's r-th record, which keeps the record order for
      // layers recorded more than once; layers of one blend share the momentum.
      const rounds: Map<number, PendingUpdate[]>[] = [];
      const seen = new Map<tf.Variable, number>();
      for (const p of pending) {
        const r = seen.get(p.mean) ?? 0;
        seen.set(p.mean, r + 1);
        const round = (rounds[r] ??= new Map());
        round.set(p.momentum, [...(round.get(p.momentum) ?? []), p]);
      }
      for (const round of rounds) {
        for (const [m, ps] of round) {
          tf.tidy(() => {
            const moving = tf.concat([...ps.map((p) => p.mean), ...ps.map((p) => p.variance)]);
            const batch = tf.concat([...ps.map((p) => p.batchMean), ...ps.map((p) => p.batchVar)]);
            const sizes = ps.map((p) => p.mean.size);
            const parts = tf.split(tf.add(tf.mul(moving, 1 - m), tf.mul(batch, m)), [...sizes, ...sizes]);
            ps.forEach((p, i) => {
              p.mean.assign(parts[i]);
              p.variance.assign(parts[ps.length + i]);
            });
          });
        }
      }
    } finally {
      for (const p of pending) tf.dispose([p.batchMean, p.batchVar]);
    }
  }

  /** Drop the recorded statistics without applying them. */
  dispose(): void {
    for (const p of this.pending) tf.dispose([p.batchMean, p.batchVar]);
    this.pending = [];
  }
}

/** Largest divisor of `channels` that is <= `maxGroups`. */
export function groupCount(channels: number, maxGroups: number): number {
  for (let g = Math.min(maxGroups, channels); g >= 1; g--) if (channels % g === 0) return g;
  return 1;
}

/** One normalisation layer over the channel axis of NHWC maps. */
export class Norm {
  readonly kind: NormKind;
  readonly channels: number;
  readonly eps: number;
  readonly momentum: number;
  readonly groups: number;
  readonly gamma: tf.Variable;
  readonly beta: tf.Variable;
  readonly movingMean?: tf.Variable;
  readonly movingVariance?: tf.Variable;

  /**
   * Registers `${name}.gamma`, `${name}.beta` (trainable) and, for 'batch'/'frozen',
   * `${name}.moving_mean`, `${name}.moving_variance` (non-trainable) in `store`.
   * `init` overrides the initial values (pretrained weights); defaults gamma 1, beta 0, mean 0, var 1.
   */
  constructor(
    store: ParamStore,
    name: string,
    channels: number,
    opts: NormOptions,
    init: { gamma?: tf.Tensor1D; beta?: tf.Tensor1D; movingMean?: tf.Tensor1D; movingVariance?: tf.Tensor1D; zeroGamma?: boolean } = {},
  ) {
    this.kind = opts.kind;
    this.channels = channels;
    this.eps = opts.eps ?? 1e-5;
    this.momentum = opts.momentum ?? 0.1;
    if (!(this.momentum > 0 && this.momentum <= 1)) throw new TagsegError(`norm momentum must be in (0, 1], got ${this.momentum}`);
    this.groups = opts.kind === 'group' ? groupCount(channels, opts.groups ?? 32) : 1;
    const check = (t: tf.Tensor | undefined, what: string) => {
      if (t && (t.rank !== 1 || t.shape[0] !== channels)) {
        throw new TagsegError(`${name}.${what}: expected shape [${channels}], got [${t.shape.join(', ')}]`);
      }
      return t;
    };
    this.gamma = store.add(
      `${name}.gamma`,
      check(init.gamma, 'gamma') ?? (init.zeroGamma ? tf.zeros([channels]) : tf.ones([channels])),
      true,
    );
    this.beta = store.add(`${name}.beta`, check(init.beta, 'beta') ?? tf.zeros([channels]), true);
    if (opts.kind !== 'group') {
      this.movingMean = store.add(`${name}.moving_mean`, check(init.movingMean, 'moving_mean') ?? tf.zeros([channels]), false);
      this.movingVariance = store.add(
        `${name}.moving_variance`,
        check(init.movingVariance, 'moving_variance') ?? tf.ones([channels]),
        false,
      );
    } else {
      tf.dispose([init.movingMean, init.movingVariance].filter((t): t is tf.Tensor1D => t !== undefined));
    }
  }

  /**
   * Normalise x [B,H,W,C] -> [B,H,W,C].
   * 'batch' + training: batch statistics over (B,H,W); records them into `updates` if given.
   * 'batch' + eval, 'frozen': moving statistics. 'group': per-sample statistics over
   * (H, W, channels of the group).
   */
  apply(x: tf.Tensor4D, training: boolean, updates?: NormUpdates): tf.Tensor4D {
    return tf.tidy(() => {
      if (x.shape[3] !== this.channels) {
        throw new TagsegError(`norm layer expects ${this.channels} channels, got ${x.shape[3]}`);
      }
      if (this.kind === 'group') return this.groupNorm(x);
      if (this.kind === 'batch' && training) {
        const record = updates
          ? (mean: tf.Tensor1D, variance: tf.Tensor1D) => {
              const n = x.shape[0] * x.shape[1] * x.shape[2];
              const unbiased = n > 1 ? tf.mul(variance, n / (n - 1)) : variance.clone();
              updates.record(this.movingMean!, this.movingVariance!, mean.clone(), unbiased as tf.Tensor1D, this.momentum);
            }
          : undefined;
        return batchNormTrain(x, this.gamma as tf.Tensor1D, this.beta as tf.Tensor1D, this.eps, record);
      }
      const [mean, variance, gamma, beta] = [this.movingMean, this.movingVariance, this.gamma, this.beta] as tf.Tensor1D[];
      // One-kernel backward on tfjs-node (nn/native.ts); same values as tf.batchNorm4d.
      return fusedBatchNormFixed(x, mean, variance, gamma, beta, this.eps) ?? tf.batchNorm4d(x, mean, variance, beta, gamma, this.eps);
    });
  }

  /** GroupNorm: x [B,H,W,C] -> [B,H,W,C], statistics per (sample, group). */
  private groupNorm(x: tf.Tensor4D): tf.Tensor4D {
    return groupNorm(x, this.gamma as tf.Tensor1D, this.beta as tf.Tensor1D, this.groups, this.eps);
  }
}

/*
 * Training-mode normalisation with hand-written gradients (tf.customGrad). Autodiff through
 * tf.moments + tf.batchNorm runs ~20 full-size ops per layer in the backward pass; the closed
 * form below needs ~6. Measured on the 2-core dev machine (batch 8, 128x128, benchmark in
 * test/nn/bench-step.manual.ts), a 'batch' training step cost 1.2-2.3x the same step with frozen
 * statistics under autodiff, 1.04-1.2x with this. The formulas are the
 * standard ones (Ioffe & Szegedy 2015, section 3), with xhat = (x - mean) * rstd:
 *   dbeta = sum dy, dgamma = sum dy * xhat,
 *   dx = gamma * rstd * (dy - mean(dy) - xhat * mean(dy * xhat))      (means over the stats axes)
 * test/nn/norm.test.ts checks both against autodiff of the plain formula.
 * On tfjs-node the same math runs as TensorFlow's FusedBatchNormV3 / FusedBatchNormGradV3, one
 * kernel each way (nn/native.ts; a further ~5x on this layer); the formulation below is the
 * portable path for the wasm/cpu backends.
 */

/**
 * BatchNorm with batch statistics: x [B,H,W,C], gamma/beta [C] -> [B,H,W,C]. `onStats` receives
 * the batch mean and biased variance [C] (tensors of the current scope; keep what you need).
 */
export function batchNormTrain(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  eps: number,
  onStats?: (mean: tf.Tensor1D, variance: tf.Tensor1D) => void,
): tf.Tensor4D {
  const fused = fusedBatchNormTrain(x, gamma, beta, eps, onStats);
  if (fused) return fused;
  return tf.tidy(() => {
    const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const [xi, g, b] = args as tf.Tensor[];
      const save = args[3] as tf.GradSaveFunc;
      const n = xi.shape[0]! * xi.shape[1]! * xi.shape[2]!;
      const mean = tf.mean(xi, [0, 1, 2]) as tf.Tensor1D;
      const xc = tf.sub(xi, mean);
      const variance = tf.mean(tf.square(xc), [0, 1, 2]) as tf.Tensor1D;
      onStats?.(mean, variance);
      const rstd = tf.rsqrt(tf.add(variance, eps));
      const xhat = tf.mul(xc, rstd);
      save([xhat, rstd, g]);
      return {
        value: tf.add(tf.mul(xhat, g), b),
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const [sxhat, srstd, sg] = saved;
          const dbeta = tf.sum(dy, [0, 1, 2]);
          const dgamma = tf.sum(tf.mul(dy, sxhat), [0, 1, 2]);
          const inner = tf.sub(tf.sub(dy, tf.div(dbeta, n)), tf.mul(sxhat, tf.div(dgamma, n)));
          const dx = tf.mul(inner, tf.mul(sg, srstd));
          return [dx, dgamma, dbeta];
        },
      };
    });
    return f(x, gamma, beta) as tf.Tensor4D;
  });
}

/**
 * GroupNorm (Wu & He 2018): x [B,H,W,C], gamma/beta [C], `groups` dividing C -> [B,H,W,C];
 * statistics per (sample, group) over H, W and the group's channels. Reductions run per
 * (sample, channel) over H, W first and are then summed within groups: ~2x faster forward on
 * tfjs-node than reducing a [B,H,W,G,C/G] view over axes (1, 2, 4). Same gradient form as
 * batchNormTrain, with means over (H, W, group channels) per sample.
 */
export function groupNorm(x: tf.Tensor4D, gamma: tf.Tensor1D, beta: tf.Tensor1D, groups: number, eps: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [bs, h, w, c] = x.shape;
    if (c % groups !== 0) throw new TagsegError(`groupNorm: ${groups} groups do not divide ${c} channels`);
    const cg = c / groups;
    const n = h * w * cg;
    /** [B,C] per-channel sums -> [B,1,1,C] per-group means broadcast back to the group's channels. */
    const groupMean = (perChannel: tf.Tensor) =>
      tf.reshape(tf.broadcastTo(tf.div(tf.sum(tf.reshape(perChannel, [bs, groups, cg]), 2, true), n), [bs, groups, cg]), [bs, 1, 1, c]);
    const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const [xi, g, b] = args as tf.Tensor[];
      const save = args[3] as tf.GradSaveFunc;
      const xc = tf.sub(xi, groupMean(tf.sum(xi, [1, 2])));
      const rstd = tf.rsqrt(tf.add(groupMean(tf.sum(tf.square(xc), [1, 2])), eps));
      const xhat = tf.mul(xc, rstd);
      save([xhat, rstd, g]);
      return {
        value: tf.add(tf.mul(xhat, g), b),
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const [sxhat, srstd, sg] = saved;
          const dyC = tf.sum(dy, [1, 2]); // [B,C]
          const dyXhatC = tf.sum(tf.mul(dy, sxhat), [1, 2]); // [B,C]
          const dbeta = tf.sum(dyC, 0);
          const dgamma = tf.sum(dyXhatC, 0);
          // with dxhat = dy * gamma: sum(dxhat) = gamma * sum(dy), sum(dxhat * xhat) = gamma * sum(dy * xhat)
          const m1 = groupMean(tf.mul(dyC, sg));
          const m2 = groupMean(tf.mul(dyXhatC, sg));
          const dx = tf.mul(tf.sub(tf.sub(tf.mul(dy, sg), m1), tf.mul(sxhat, m2)), srstd);
          return [dx, dgamma, dbeta];
        },
      };
    });
    return f(x, gamma, beta) as tf.Tensor4D;
  });
}
