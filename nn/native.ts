/**
 * Fused TensorFlow kernels for the training hot path, called directly on the tfjs-node backend.
 *
 * tfjs differentiates ReLU / ReLU6 / BatchNorm with composite JS gradients: the ReLU gradient is
 * dy * step(x), and tfjs-node's Step kernel alone is 6 full-size ops (isNaN, greater, ones, fill,
 * 2x select); BatchNorm with batch statistics is ~6 ops forward and ~8 backward even with the
 * closed-form gradient of nn/norm.ts. libtensorflow has one kernel for each (ReluGrad, Relu6Grad,
 * FusedBatchNormV3 / FusedBatchNormGradV3, oneDNN-backed here), which is what PyTorch's CPU
 * backward uses too. Measured on the 2-core dev machine for a [16,56,56,16] map, forward +
 * backward: ReLU 13 ms -> 1.5 ms, BatchNorm (batch statistics) 17.7 ms -> 3 ms.
 *
 * The functions below are drop-in replacements with the same values and gradients (up to float
 * summation order); on other backends (wasm, cpu), or after `setNativeKernels(false)`, they fall
 * back to the portable tfjs formulation. They execute raw ops through the tfjs-node backend's
 * `executeMultipleOutputs` (the same call its own registered kernels make), inside
 * tf.customGrad, so the tape records one node per layer.
 */
import * as tf from '@tensorflow/tfjs';

/** The parts of tfjs-node's NodeJSKernelBackend used here (it has no public typings for them). */
interface TfAttr {
  name: string;
  type: number;
  value: number | number[] | boolean | string;
}
interface NodeBackend {
  binding: { TF_ATTR_TYPE: number; TF_ATTR_INT: number; TF_ATTR_FLOAT: number; TF_ATTR_BOOL: number; TF_ATTR_STRING: number; TF_FLOAT: number };
  executeMultipleOutputs(name: string, attrs: TfAttr[], inputs: tf.Tensor[], numOutputs: number): tf.Tensor[];
}

let enabled = process.env.TAGSEG_NATIVE_KERNELS !== '0';

/**
 * Turn the native kernels on or off (default on; env TAGSEG_NATIVE_KERNELS=0 starts with them
 * off). Off = the portable tfjs formulation everywhere; tests use it to compare both paths.
 */
export function setNativeKernels(on: boolean): void {
  enabled = on;
}

/** The tfjs-node backend when it is the current one and native kernels are on, else undefined. */
function nodeBackend(): NodeBackend | undefined {
  if (!enabled || tf.getBackend() !== 'tensorflow') return undefined;
  const be = tf.backend() as unknown as Partial<NodeBackend>;
  return typeof be.executeMultipleOutputs === 'function' && be.binding ? (be as NodeBackend) : undefined;
}

/** True when the fused native kernels are in use (tfjs-node backend, not switched off). */
export function nativeKernels(): boolean {
  return nodeBackend() !== undefined;
}

function floatAttrs(be: NodeBackend, ...names: string[]): TfAttr[] {
  return names.map((name) => ({ name, type: be.binding.TF_ATTR_TYPE, value: be.binding.TF_FLOAT }));
}

function exec(be: NodeBackend, op: string, attrs: TfAttr[], inputs: tf.Tensor[], numOutputs: number): tf.Tensor[] {
  for (const t of inputs) {
    if (t.dtype !== 'float32') throw new Error(`${op}: expects float32 inputs, got ${t.dtype}`);
  }
  return be.executeMultipleOutputs(op, attrs, inputs, numOutputs);
}

/**
 * max(x, 0) with TensorFlow's ReluGrad as the gradient (dy where x > 0, else 0; the same as
 * tfjs' dy * step(x) and torch's threshold_backward, 0 at x = 0). Any shape, float32.
 */
export function relu<T extends tf.Tensor>(x: T): T {
  const be = nodeBackend();
  if (!be || x.dtype !== 'float32') return tf.relu(x);
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const xi = args[0] as tf.Tensor;
    const save = args[1] as tf.GradSaveFunc;
    const y = tf.relu(xi);
    save([y]); // y > 0 exactly where x > 0
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => exec(be, 'ReluGrad', floatAttrs(be, 'T'), [dy, saved[0]], 1)[0],
    };
  });
  return f(x) as T;
}

/**
 * min(max(x, 0), 6) with TensorFlow's Relu6Grad: dy where 0 < x < 6, else 0. That is torch's
 * hardtanh_backward (the reference code's ReLU6); tfjs' own gradient also passes dy at exactly
 * x = 6, a measure-zero difference. Any shape, float32.
 */
export function relu6<T extends tf.Tensor>(x: T): T {
  const be = nodeBackend();
  if (!be || x.dtype !== 'float32') return tf.relu6(x);
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const xi = args[0] as tf.Tensor;
    const save = args[1] as tf.GradSaveFunc;
    save([xi]);
    return {
      value: tf.relu6(xi),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => exec(be, 'Relu6Grad', floatAttrs(be, 'T'), [dy, saved[0]], 1)[0],
    };
  });
  return f(x) as T;
}

/** Batch statistics of a training-mode BatchNorm: mean and biased variance, [C]. */
export interface BatchStats {
  mean: tf.Tensor1D;
  variance: tf.Tensor1D;
}

function bnAttrs(be: NodeBackend, eps: number, training: boolean): TfAttr[] {
  return [
    ...floatAttrs(be, 'T', 'U'),
    { name: 'epsilon', type: be.binding.TF_ATTR_FLOAT, value: eps },
    { name: 'data_format', type: be.binding.TF_ATTR_STRING, value: 'NHWC' },
    { name: 'is_training', type: be.binding.TF_ATTR_BOOL, value: training },
  ];
}

/**
 * BatchNorm with batch statistics in two kernels (FusedBatchNormV3 forward, FusedBatchNormGradV3
 * backward): x [B,H,W,C], gamma/beta [C] -> [B,H,W,C], and `onStats` gets the batch mean and
 * biased variance [C] (tensors of the current scope). Returns undefined when the native kernels
 * are not available (the caller uses its portable path).
 */
export function fusedBatchNormTrain(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  eps: number,
  onStats?: (mean: tf.Tensor1D, variance: tf.Tensor1D) => void,
): tf.Tensor4D | undefined {
  const be = nodeBackend();
  if (!be) return undefined;
  return tf.tidy(() => {
    const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const [xi, g, b] = args as tf.Tensor[];
      const save = args[3] as tf.GradSaveFunc;
      const empty = tf.tensor1d([], 'float32');
      // Outputs: y, batch mean, batch variance with Bessel's correction (what TF blends into its
      // moving average), and reserve spaces 1-3, device-specific intermediates that only the
      // gradient op reads (on CUDA reserve 2 is the inverse std, hence not used for the stats).
      const [y, mean, unbiased, r1, r2, r3] = exec(
        be,
        'FusedBatchNormV3',
        [...bnAttrs(be, eps, true), { name: 'exponential_avg_factor', type: be.binding.TF_ATTR_FLOAT, value: 1 }],
        [xi, g, b, empty, empty],
        6,
      );
      if (onStats) {
        const n = xi.shape[0]! * xi.shape[1]! * xi.shape[2]!;
        onStats(mean as tf.Tensor1D, tf.mul(unbiased, (n - 1) / n) as tf.Tensor1D); // biased variance
      }
      save([xi, g, r1, r2, r3]);
      return {
        value: y,
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const [sx, sg, s1, s2, s3] = saved;
          const [dx, dgamma, dbeta] = exec(be, 'FusedBatchNormGradV3', bnAttrs(be, eps, true), [dy, sx, sg, s1, s2, s3], 5);
          return [dx, dgamma, dbeta];
        },
      };
    });
    return f(x, gamma, beta) as tf.Tensor4D;
  });
}

/**
 * BatchNorm with fixed statistics (eval mode; 'frozen' BN in training) whose backward is one
 * FusedBatchNormGradV3 kernel: x [B,H,W,C], mean/variance/gamma/beta [C] -> [B,H,W,C];
 * gradients flow to x, gamma and beta (not to the statistics, as for torch's buffers).
 * Undefined when the native kernels are not available.
 */
export function fusedBatchNormFixed(
  x: tf.Tensor4D,
  mean: tf.Tensor1D,
  variance: tf.Tensor1D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  eps: number,
): tf.Tensor4D | undefined {
  const be = nodeBackend();
  if (!be) return undefined;
  return tf.tidy(() => {
    const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const [xi, g, b] = args as tf.Tensor[];
      const save = args[3] as tf.GradSaveFunc;
      const [y, , , , , r3] = exec(be, 'FusedBatchNormV3', bnAttrs(be, eps, false), [xi, g, b, mean, variance], 6);
      save([xi, g, r3]);
      return {
        value: y,
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const [sx, sg, s3] = saved;
          // With is_training false the gradient op takes the population statistics as reserve
          // spaces 1 and 2 (TF op docs); plain CPU TF leaves the forward's reserve outputs unset.
          const [dx, dgamma, dbeta] = exec(be, 'FusedBatchNormGradV3', bnAttrs(be, eps, false), [dy, sx, sg, mean, variance, s3], 5);
          return [dx, dgamma, dbeta];
        },
      };
    });
    return f(x, gamma, beta) as tf.Tensor4D;
  });
}

/**
 * oneDNN max pooling, forward and backward. TensorFlow's own CPU MaxPoolGrad recomputes the
 * argmax with a per-pixel loop and is the slowest kernel of a ResNet step here: for a
 * [16,56,56,16] map 3x3/2 pooling forward + backward took 29-73 ms (load-dependent), 216 ms for
 * [16,56,56,64], vs ~5x less with the oneDNN kernels, which keep a workspace of argmax indices from
 * the forward pass. libtensorflow registers them only under the internal name
 * `_MklNativeMaxPool(Grad)` with the 'MklNameChangeOp' kernel label (what TF's graph rewrite
 * targets); a build without them (or another backend) falls back to tf.maxPool, detected once.
 * Same values and gradient (ties go to the first maximum in scan order in both).
 */
let mklPool: boolean | undefined;

export function maxPool(x: tf.Tensor4D, size: number, stride: number, pad: 'same' | 'valid'): tf.Tensor4D {
  const be = nodeBackend();
  if (!be || x.dtype !== 'float32' || mklPool === false) return tf.maxPool(x, size, stride, pad);
  const attrs: TfAttr[] = [
    ...floatAttrs(be, 'T'),
    { name: 'ksize', type: be.binding.TF_ATTR_INT, value: [1, size, size, 1] },
    { name: 'strides', type: be.binding.TF_ATTR_INT, value: [1, stride, stride, 1] },
    { name: 'padding', type: be.binding.TF_ATTR_STRING, value: pad === 'same' ? 'SAME' : 'VALID' },
    { name: 'data_format', type: be.binding.TF_ATTR_STRING, value: 'NHWC' },
    { name: 'workspace_enabled', type: be.binding.TF_ATTR_BOOL, value: true },
    { name: '_kernel', type: be.binding.TF_ATTR_STRING, value: 'MklNameChangeOp' },
  ];
  if (mklPool === undefined) {
    const probe = tf.zeros([1, size, size, 1]);
    try {
      tf.dispose(be.executeMultipleOutputs('_MklNativeMaxPool', attrs, [probe], 2));
      mklPool = true;
    } catch {
      mklPool = false;
      return tf.maxPool(x, size, stride, pad);
    } finally {
      probe.dispose();
    }
  }
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const xi = args[0] as tf.Tensor;
    const save = args[1] as tf.GradSaveFunc;
    const [y, workspace] = be.executeMultipleOutputs('_MklNativeMaxPool', attrs, [xi], 2);
    save([xi, y, workspace]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => be.executeMultipleOutputs('_MklNativeMaxPoolGrad', attrs, [saved[0], saved[1], dy, saved[2]], 1)[0],
    };
  });
  return f(x) as tf.Tensor4D;
}
