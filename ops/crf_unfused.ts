/**
 * The dense CRF's mean field as it was before ops/crf.ts fused slice, softmax and splat: one full
 * lattice filter pass per kernel into an [N, C] message array, then a softmax with Math.exp. Kept
 * as the reference that test/ops/crf.test.ts checks the fused path against and that
 * `npm run bench -- crf` times it against in the same run. Not used by the pipeline.
 */
import { type DenseCrfOptionsInput, NormalizedGaussianFilter, bilateralFeatures, positionFeatures, resolveCrfOptions } from './crf.js';

/** out = row-wise softmax(-unary + msg) ([N, C]; msg may be null), max-subtracted for stability. */
function softmaxNegUnary(unary: Float32Array, msg: Float32Array | null, N: number, C: number, out: Float32Array): void {
  for (let i = 0; i < N; i++) {
    const b = i * C;
    let m = -Infinity;
    for (let c = 0; c < C; c++) {
      const v = msg ? msg[b + c] - unary[b + c] : -unary[b + c];
      out[b + c] = v;
      if (v > m) m = v;
    }
    let s = 0;
    for (let c = 0; c < C; c++) {
      const e = Math.exp(out[b + c] - m);
      out[b + c] = e;
      s += e;
    }
    const inv = 1 / s;
    for (let c = 0; c < C; c++) out[b + c] *= inv;
  }
}

/** Same contract as `denseCrf` (ops/crf.ts); argument checks are left to it. */
export function denseCrfUnfused(unary: Float32Array, image: Uint8Array, H: number, W: number, C: number, opts: DenseCrfOptionsInput = {}): Float32Array {
  const o = resolveCrfOptions(opts);
  const N = H * W;
  const kernels: { filter: NormalizedGaussianFilter; w: number }[] = [];
  if (o.gaussian && o.gaussian.compat !== 0 && o.iterations > 0) {
    kernels.push({ filter: new NormalizedGaussianFilter(positionFeatures(H, W, o.gaussian.sxy), N, 2, o.normalization), w: o.gaussian.compat });
  }
  if (o.bilateral && o.bilateral.compat !== 0 && o.iterations > 0) {
    const f = bilateralFeatures(image, H, W, o.bilateral.sxy, o.bilateral.srgb);
    kernels.push({ filter: new NormalizedGaussianFilter(f, N, 5, o.normalization), w: o.bilateral.compat });
  }
  const Q = new Float32Array(N * C);
  softmaxNegUnary(unary, null, N, C, Q);
  if (kernels.length === 0) return Q;
  const msg = new Float32Array(N * C);
  for (let it = 0; it < o.iterations; it++) {
    for (let k = 0; k < kernels.length; k++) kernels[k].filter.apply(Q, C, msg, { weight: kernels[k].w, accumulate: k > 0 });
    softmaxNegUnary(unary, msg, N, C, Q);
  }
  return Q;
}
