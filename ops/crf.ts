/**
 * Fully connected (dense) CRF with Gaussian edge potentials and mean-field inference
 * (Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
 * Potentials", NIPS 2011), as used by the reference WSSS code through pydensecrf's DenseCRF2D:
 *  - stage `affinity`: IRN step/cam_to_ir_label.py -> misc/imutils.crf_inference_label refines the
 *    confident-fg and confident-bg label maps (unary from labels, gt_prob 0.7, 10 iterations,
 *    Gaussian sxy 3 compat 3, bilateral sxy 50 srgb 5 compat 10) -> `CRF_PRESETS.irnLabel`;
 *  - stage `refine`: PSA tool/imutils.crf_inference on probabilities (Gaussian sxy 3 compat 3,
 *    bilateral sxy 80 srgb 13 compat 10, pydensecrf's README example) -> `CRF_PRESETS.psa`, the
 *    default. PSA divides both sxy by `scale_factor` when it runs the CRF on a downscaled image;
 *    do the same (sxy is in pixels of the image passed in).
 *
 * Model. Energy E(x) = Σ_i ψ_u(x_i) + Σ_{i<j} Σ_k w_k μ(x_i, x_j) k_k(f_i, f_j) with Potts
 * μ(l, l') = [l != l'] and two kernels: "Gaussian" (appearance-free smoothness) on position,
 * exp(-|p_i - p_j|² / 2 sxy²), and "bilateral" on position + RGB,
 * exp(-|p_i - p_j|² / 2 sxy² - |I_i - I_j|² / 2 srgb²).
 *
 * Inference follows pydensecrf's DenseCRF::inference with its defaults (DIAG_KERNEL,
 * NORMALIZE_SYMMETRIC, PottsCompatibility) step for step:
 *     Q = softmax(-U);  repeat T times:  Q = softmax(-U + Σ_k w_k · K̂_k Q)
 * where K̂ = D^-1/2 K D^-1/2, D = diag(K·1) (symmetric normalisation). With Potts, the textbook
 * message w Σ_j k_ij (1 - Q_j(l)) differs from -w (K̂Q)_l by a per-pixel constant, which the softmax
 * drops. The compat values published for pydensecrf (3, 10) are calibrated for these NORMALISED
 * kernels: with raw Gaussian sums (hundreds of neighbours under sxy 50-80) the same weights would
 * swamp the unary.
 *
 * Self term. The 2011 paper sums over j != i; pydensecrf's lattice filter includes j = i and does
 * not subtract it, and we follow pydensecrf so its published parameters carry over. After symmetric
 * normalisation the self term is Q_i / n_i with n_i = Σ_j k_ij, i.e. 1/56 for the Gaussian kernel
 * with sxy 3 and far less for the bilateral one, except for pixels whose colour is unique in their
 * neighbourhood. (Subtracting it exactly is impossible on the lattice, whose kernel scale is
 * uncalibrated; see ops/permutohedral.ts.)
 *
 * Filtering uses the permutohedral lattice (d = 2 for the Gaussian kernel, d = 5 for the bilateral
 * one), built once per kernel and reused for every class and iteration: O(N·C·d) per iteration.
 * The mean field itself runs in WebAssembly SIMD (ops/crf_wasm.ts) by default; the JS loops below
 * are the reference engine it is tested against (`setCrfEngine('js')`).
 */
import { meanFieldWasm } from './crf_wasm.js';
import { EngineSwitch } from './engine.js';
import { PermutohedralLattice } from './permutohedral.js';

/** Smoothness kernel on position: exp(-|Δp|² / 2 sxy²), weight `compat`. */
export interface GaussianKernelOptions {
  /** Spatial standard deviation in pixels. */
  sxy: number;
  /** Potts weight w. */
  compat: number;
}

/** Appearance kernel on position + RGB: exp(-|Δp|² / 2 sxy² - |ΔI|² / 2 srgb²), weight `compat`. */
export interface BilateralKernelOptions {
  /** Spatial standard deviation in pixels (published range 50-80). */
  sxy: number;
  /** Colour standard deviation in 0..255 RGB units (published range 5-13). */
  srgb: number;
  /** Potts weight w. */
  compat: number;
}

/**
 * Kernel normalisation (pydensecrf's NormalizationType), with n = K·1 and D = diag(n):
 * 'symmetric' D^-1/2 K D^-1/2 (the default there and here); 'after' D^-1 K (each pixel's weights
 * sum to 1); 'none' K · N / Σ_i n_i, one global scale so that the mean row sum is 1. pydensecrf's
 * NO_NORMALIZATION instead leaves the raw lattice output, whose scale depends on lattice occupancy
 * (uncalibrated), so compat values for it do not transfer; ours is the nearest well-defined form.
 * On the lattice 'none' is the least accurate mode (a global factor cannot cancel the lattice's
 * occupancy-dependent scale the way a per-pixel normalisation does): prefer 'symmetric'.
 */
export type KernelNormalization = 'symmetric' | 'after' | 'none';

export interface DenseCrfOptions {
  /** Mean-field iterations (pydensecrf inference(t); IRN and PSA use 10). */
  iterations: number;
  /** Smoothness kernel, or null to leave it out. */
  gaussian: GaussianKernelOptions | null;
  /** Appearance kernel, or null to leave it out. */
  bilateral: BilateralKernelOptions | null;
  normalization: KernelNormalization;
}

/** What `denseCrf` accepts: any subset; kernels may be given in part (the rest from the defaults). */
export interface DenseCrfOptionsInput {
  iterations?: number;
  gaussian?: Partial<GaussianKernelOptions> | null;
  bilateral?: Partial<BilateralKernelOptions> | null;
  normalization?: KernelNormalization;
}

/**
 * Defaults: 10 iterations, Gaussian sxy 3 compat 3, bilateral sxy 80 srgb 13 compat 10,
 * symmetric normalisation (pydensecrf README example; PSA tool/imutils.crf_inference).
 */
export const DEFAULT_CRF_OPTIONS: Readonly<DenseCrfOptions> = Object.freeze({
  iterations: 10,
  gaussian: Object.freeze({ sxy: 3, compat: 3 }),
  bilateral: Object.freeze({ sxy: 80, srgb: 13, compat: 10 }),
  normalization: 'symmetric' as const,
});

/** Settings of the reference code, to pass as `opts`. */
export const CRF_PRESETS = Object.freeze({
  /** PSA crf_inference / pydensecrf README: bilateral sxy 80, srgb 13. */
  psa: DEFAULT_CRF_OPTIONS,
  /** IRN misc/imutils.crf_inference_label (affinity labels): bilateral sxy 50, srgb 5; use with `unaryFromLabels(…, 0.7)`. */
  irnLabel: Object.freeze({
    iterations: 10,
    gaussian: Object.freeze({ sxy: 3, compat: 3 }),
    bilateral: Object.freeze({ sxy: 50, srgb: 5, compat: 10 }),
    normalization: 'symmetric' as const,
  }) as Readonly<DenseCrfOptions>,
});

/** The flat CRF keys of params.yaml (refine.crf, segment.crf). */
export interface CrfKeys {
  iterations: number;
  gaussian_sxy: number;
  gaussian_compat: number;
  bilateral_sxy: number;
  bilateral_srgb: number;
  bilateral_compat: number;
}

/** params.yaml's flat keys -> DenseCrfOptions (symmetric normalisation; iterations 0 = no CRF). */
export function crfFromKeys(c: CrfKeys): DenseCrfOptions {
  return {
    iterations: c.iterations,
    gaussian: { sxy: c.gaussian_sxy, compat: c.gaussian_compat },
    bilateral: { sxy: c.bilateral_sxy, srgb: c.bilateral_srgb, compat: c.bilateral_compat },
    normalization: 'symmetric',
  };
}

/** Fill in defaults and validate. */
export function resolveCrfOptions(opts: DenseCrfOptionsInput = {}): DenseCrfOptions {
  const d = DEFAULT_CRF_OPTIONS;
  const gaussian = opts.gaussian === null ? null : { ...d.gaussian!, ...stripUndefined(opts.gaussian ?? {}) };
  const bilateral = opts.bilateral === null ? null : { ...d.bilateral!, ...stripUndefined(opts.bilateral ?? {}) };
  const r: DenseCrfOptions = {
    iterations: opts.iterations ?? d.iterations,
    gaussian,
    bilateral,
    normalization: opts.normalization ?? d.normalization,
  };
  if (!Number.isInteger(r.iterations) || r.iterations < 0) throw new Error(`denseCrf: iterations must be a non-negative integer, got ${r.iterations}`);
  if (r.gaussian && !(r.gaussian.sxy > 0 && Number.isFinite(r.gaussian.compat))) throw new Error(`denseCrf: bad gaussian kernel ${JSON.stringify(r.gaussian)}`);
  if (r.bilateral && !(r.bilateral.sxy > 0 && r.bilateral.srgb > 0 && Number.isFinite(r.bilateral.compat))) throw new Error(`denseCrf: bad bilateral kernel ${JSON.stringify(r.bilateral)}`);
  if (!['symmetric', 'after', 'none'].includes(r.normalization)) throw new Error(`denseCrf: bad normalization ${String(r.normalization)}`);
  return r;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

/** Features [N, 2] for the smoothness kernel, pydensecrf's layout: (x / sxy, y / sxy), pixel n = y·W + x. */
export function positionFeatures(H: number, W: number, sxy: number): Float32Array {
  const f = new Float32Array(H * W * 2);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const n = y * W + x;
      f[2 * n] = x / sxy;
      f[2 * n + 1] = y / sxy;
    }
  }
  return f;
}

/** Features [N, 5] for the appearance kernel: (x / sxy, y / sxy, r / srgb, g / srgb, b / srgb). */
export function bilateralFeatures(image: Uint8Array, H: number, W: number, sxy: number, srgb: number): Float32Array {
  if (image.length !== H * W * 3) throw new Error(`bilateralFeatures: image length ${image.length} != H*W*3 = ${H * W * 3}`);
  const f = new Float32Array(H * W * 5);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const n = y * W + x;
      f[5 * n] = x / sxy;
      f[5 * n + 1] = y / sxy;
      f[5 * n + 2] = image[3 * n] / srgb;
      f[5 * n + 3] = image[3 * n + 1] / srgb;
      f[5 * n + 4] = image[3 * n + 2] / srgb;
    }
  }
  return f;
}

/**
 * A normalised Gaussian kernel K̂ over N points (see `KernelNormalization`), filtering through a
 * permutohedral lattice that is built once; the normalisation is fused into splat and slice.
 */
export class NormalizedGaussianFilter {
  readonly N: number;
  readonly normalization: KernelNormalization;
  readonly lattice: PermutohedralLattice;
  /** Per-point scale before filtering ('symmetric': n^-1/2), or null. */
  readonly inScale: Float32Array | null;
  /** Per-point scale after filtering ('symmetric': n^-1/2, 'after': 1/n, 'none': N/Σn). */
  readonly outScale: Float32Array;
  /** outScale times the last weight used (mean field calls apply with one weight per kernel). */
  private weighted: { weight: number; scale: Float32Array } | null = null;

  /** `features` [N, d] row-major, already divided by the kernel widths (see positionFeatures, bilateralFeatures). */
  constructor(features: Float32Array, N: number, d: number, normalization: KernelNormalization = 'symmetric') {
    this.N = N;
    this.normalization = normalization;
    this.lattice = PermutohedralLattice.build(features, N, d);
    // n_i = Σ_j K_ij: the kernel applied to all-ones (+1e-20 as pydensecrf, for empty rows).
    const n = this.lattice.filter(new Float32Array(N).fill(1), 1);
    const outScale = new Float32Array(N);
    if (normalization === 'none') {
      let s = 0;
      for (let i = 0; i < N; i++) s += n[i];
      outScale.fill(N / (s + 1e-20));
      this.inScale = null;
    } else if (normalization === 'symmetric') {
      for (let i = 0; i < N; i++) outScale[i] = 1 / Math.sqrt(n[i] + 1e-20);
      this.inScale = outScale;
    } else if (normalization === 'after') {
      for (let i = 0; i < N; i++) outScale[i] = 1 / (n[i] + 1e-20);
      this.inScale = null;
    } else {
      throw new Error(`NormalizedGaussianFilter: bad normalization ${String(normalization)}`);
    }
    this.outScale = outScale;
  }

  /**
   * out = weight · K̂ · values (`accumulate`: out += …), values [N, channels]. `out` must not
   * alias `values`.
   */
  apply(values: Float32Array, channels: number, out?: Float32Array, opts: { weight?: number; accumulate?: boolean } = {}): Float32Array {
    const weight = opts.weight ?? 1;
    let outScale = this.outScale;
    if (weight !== 1) {
      if (this.weighted?.weight !== weight) {
        const scaled = new Float32Array(this.N);
        for (let i = 0; i < this.N; i++) scaled[i] = this.outScale[i] * weight;
        this.weighted = { weight, scale: scaled };
      }
      outScale = this.weighted.scale;
    }
    return this.lattice.filter(values, channels, out, { inScale: this.inScale ?? undefined, outScale, accumulate: opts.accumulate });
  }
}

/** out = row-wise softmax(-unary) ([N, C]), max-subtracted for stability. */
function softmaxNegUnary(unary: Float32Array, N: number, C: number, out: Float32Array): void {
  const row = new Float64Array(C);
  for (let i = 0; i < N; i++) {
    row.fill(0);
    softmaxRow(unary, row, i * C, C, out);
  }
}

/**
 * out[b..b+C) = softmax(msg - unary[b..b+C)) for one pixel; `msg` holds its C messages and is
 * overwritten with the result. Max-subtracted, so every exponent is <= 0.
 */
function softmaxRow(unary: Float32Array, msg: Float64Array, b: number, C: number, out: Float32Array): void {
  let m = -Infinity;
  for (let c = 0; c < C; c++) {
    const v = msg[c] - unary[b + c];
    msg[c] = v;
    if (v > m) m = v;
  }
  let s = 0;
  for (let c = 0; c < C; c++) {
    const e = expNonPositive(msg[c] - m);
    msg[c] = e;
    s += e;
  }
  const inv = 1 / s;
  for (let c = 0; c < C; c++) out[b + c] = msg[c] *= inv;
}

/** 2^k for k = -151..0 (expNonPositive's range). */
const POW2_NEG = Float64Array.from({ length: 152 }, (_, i) => Math.pow(2, i - 151));

/**
 * exp(x) for x <= 0, to about 1e-8 relative (far below float32's 6e-8): Math.exp is a C call in
 * V8 and was a third of the mean field's time. x = k·ln2 + r, |r| <= ln2/2, degree-7 Taylor in r.
 * Below -104 (under float32's smallest subnormal) it returns 0.
 */
export function expNonPositive(x: number): number {
  if (!(x > -104)) return x <= -104 ? 0 : x; // NaN propagates
  const k = Math.floor(x * 1.4426950408889634 + 0.5);
  const r = x - k * 0.6931471805599453;
  const p = 1 + r * (1 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (1 / 5040)))))));
  return p * POW2_NEG[k + 151];
}

/** One kernel's lattice with its splat scale and its slice scale (outScale · alpha · w). */
interface ScaledKernel {
  lattice: PermutohedralLattice;
  inScale: Float32Array | null;
  sliceScale: Float32Array;
}

/** ... and three vertex buffers, for the JS mean field. */
interface MeanFieldKernel extends ScaledKernel {
  bufs: [Float32Array, Float32Array, Float32Array];
}

function scaledKernel(filter: NormalizedGaussianFilter, w: number): ScaledKernel {
  const { lattice, N } = filter;
  const sliceScale = new Float32Array(N);
  const a = lattice.alpha * w;
  for (let i = 0; i < N; i++) sliceScale[i] = filter.outScale[i] * a;
  return { lattice, inScale: filter.inScale, sliceScale };
}

function withBuffers(k: ScaledKernel, C: number): MeanFieldKernel {
  const size = (k.lattice.M + 1) * C;
  return { ...k, bufs: [new Float32Array(size), new Float32Array(size), new Float32Array(size)] };
}

/** Which mean field `denseCrf` runs: 'wasm' (ops/crf_wasm.ts, SIMD; the default where available) or 'js', the reference. */
export type CrfEngine = 'wasm' | 'js';

const crfEngine = new EngineSwitch<CrfEngine>('wasm');

/** Choose the mean field's engine (tests compare the two); returns the previous one. */
export const setCrfEngine = (engine: CrfEngine): CrfEngine => crfEngine.set(engine);

let unrolledPair = true;

/** Use the unrolled pass for the smoothness + appearance pair (default) or the generic loop: the tests compare the two bit for bit. */
export function setUnrolledPairPass(on: boolean): void {
  unrolledPair = on;
}

/**
 * T mean-field updates Q <- softmax(-U + Σ_k w_k K̂_k Q) in place. Per iteration each kernel's
 * lattice is blurred once for all C labels; slicing, the softmax and the next iteration's splat
 * are fused into one pass over the pixels (no [N, C] message array, no extra passes).
 */
function meanField(unary: Float32Array, Q: Float32Array, N: number, C: number, T: number, kernels: MeanFieldKernel[]): void {
  const K = kernels.length;
  // bufs[0]: splatted Q; blur ping-pongs between bufs[0] and bufs[1]; bufs[2] gathers the next splat.
  for (const k of kernels) k.lattice.splat(Q, C, k.inScale, k.bufs[0]);
  const blurred: Float32Array[] = new Array<Float32Array>(K);
  const next: Float32Array[] = new Array<Float32Array>(K);
  const msg = new Float64Array(C);
  // The CRF's usual pair (smoothness d = 2, appearance d = 5) has its own unrolled pass.
  const pair = unrolledPair && K === 2 && kernels[0].lattice.d === 2 && kernels[1].lattice.d === 5;
  for (let it = 0; it < T; it++) {
    const last = it === T - 1;
    for (let k = 0; k < K; k++) {
      const kr = kernels[k];
      blurred[k] = kr.lattice.blur(kr.bufs[0], kr.bufs[1], C);
      next[k] = blurred[k] === kr.bufs[0] ? kr.bufs[1] : kr.bufs[0];
      if (!last) kr.bufs[2].fill(0);
    }
    if (pair) {
      pairPass(unary, Q, N, C, kernels[0], kernels[1], blurred[0], blurred[1], last, msg);
    } else {
      for (let p = 0; p < N; p++) {
        msg.fill(0);
        for (let k = 0; k < K; k++) sliceInto(kernels[k], blurred[k], p, C, msg);
        const b = p * C;
        softmaxRow(unary, msg, b, C, Q);
        if (!last) for (let k = 0; k < K; k++) splatPoint(kernels[k], msg, p, C);
      }
    }
    if (!last) {
      for (let k = 0; k < K; k++) {
        // The fresh splat becomes bufs[0]; the other two are scratch (slot 0 stays zero in all).
        const kr = kernels[k];
        kr.bufs = [kr.bufs[2], blurred[k], next[k]];
      }
    }
  }
}

/**
 * One mean-field pass over the pixels for a smoothness (d = 2) + appearance (d = 5) pair, the
 * 3 + 6 vertices of each pixel held in locals: each class's message is one expression summed in
 * the order of sliceInto's loops (kernel, vertex), so Q is the same bits as the generic loop's,
 * without its per-vertex read-modify-write of msg. Splats into each kernel's bufs[2] unless `last`.
 */
function pairPass(unary: Float32Array, Q: Float32Array, N: number, C: number, g: MeanFieldKernel, a: MeanFieldKernel, gv: Float32Array, av: Float32Array, last: boolean, msg: Float64Array): void {
  const go = g.lattice.offsets, gw = g.lattice.weights, ao = a.lattice.offsets, aw = a.lattice.weights;
  const gs = g.sliceScale, as = a.sliceScale, gi = g.inScale, ai = a.inScale;
  const gb = g.bufs[2], ab = a.bufs[2];
  for (let p = 0; p < N; p++) {
    const i3 = p * 3, i6 = p * 6, b = p * C;
    const o0 = go[i3] * C, o1 = go[i3 + 1] * C, o2 = go[i3 + 2] * C;
    const q0 = ao[i6] * C, q1 = ao[i6 + 1] * C, q2 = ao[i6 + 2] * C, q3 = ao[i6 + 3] * C, q4 = ao[i6 + 4] * C, q5 = ao[i6 + 5] * C;
    let s = gs[p];
    const w0 = gw[i3] * s, w1 = gw[i3 + 1] * s, w2 = gw[i3 + 2] * s;
    s = as[p];
    const u0 = aw[i6] * s, u1 = aw[i6 + 1] * s, u2 = aw[i6 + 2] * s, u3 = aw[i6 + 3] * s, u4 = aw[i6 + 4] * s, u5 = aw[i6 + 5] * s;
    let m = -Infinity;
    for (let c = 0; c < C; c++) {
      const v = w0 * gv[o0 + c] + w1 * gv[o1 + c] + w2 * gv[o2 + c]
        + u0 * av[q0 + c] + u1 * av[q1 + c] + u2 * av[q2 + c] + u3 * av[q3 + c] + u4 * av[q4 + c] + u5 * av[q5 + c]
        - unary[b + c];
      msg[c] = v;
      if (v > m) m = v;
    }
    // softmaxRow's last two loops.
    let sum = 0;
    for (let c = 0; c < C; c++) {
      const e = expNonPositive(msg[c] - m);
      msg[c] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let c = 0; c < C; c++) Q[b + c] = msg[c] *= inv;
    if (last) continue;
    // splatPoint of both kernels; a pixel's vertices are distinct, so each buffer cell gets the same additions in the same order.
    s = gi === null ? 1 : gi[p];
    const x0 = gw[i3] * s, x1 = gw[i3 + 1] * s, x2 = gw[i3 + 2] * s;
    s = ai === null ? 1 : ai[p];
    const y0 = aw[i6] * s, y1 = aw[i6 + 1] * s, y2 = aw[i6 + 2] * s, y3 = aw[i6 + 3] * s, y4 = aw[i6 + 4] * s, y5 = aw[i6 + 5] * s;
    for (let c = 0; c < C; c++) {
      const q = msg[c];
      gb[o0 + c] += x0 * q;
      gb[o1 + c] += x1 * q;
      gb[o2 + c] += x2 * q;
      ab[q0 + c] += y0 * q;
      ab[q1 + c] += y1 * q;
      ab[q2 + c] += y2 * q;
      ab[q3 + c] += y3 * q;
      ab[q4 + c] += y4 * q;
      ab[q5 + c] += y5 * q;
    }
  }
}

/** msg[c] += sliceScale_p · Σ_r w_pr · vertex_pr[c]: pixel p's message from one kernel. */
function sliceInto(k: MeanFieldKernel, vert: Float32Array, p: number, C: number, msg: Float64Array): void {
  const { offsets, weights } = k.lattice;
  const d1 = k.lattice.d + 1;
  const s = k.sliceScale[p];
  const C4 = C & ~3;
  for (let r = 0; r < d1; r++) {
    const o = offsets[p * d1 + r] * C;
    const w = weights[p * d1 + r] * s;
    // Unrolled by 4: the loop's own overhead was a good share of these short rows (C ~ 3-25).
    let c = 0;
    for (; c < C4; c += 4) {
      msg[c] += w * vert[o + c];
      msg[c + 1] += w * vert[o + c + 1];
      msg[c + 2] += w * vert[o + c + 2];
      msg[c + 3] += w * vert[o + c + 3];
    }
    for (; c < C; c++) msg[c] += w * vert[o + c];
  }
}

/** Splat pixel p's new row of Q, `q` (times inScale_p), into the kernel's next-iteration buffer. */
function splatPoint(k: MeanFieldKernel, q: Float64Array, p: number, C: number): void {
  const { offsets, weights } = k.lattice;
  const d1 = k.lattice.d + 1;
  const buf = k.bufs[2];
  const s = k.inScale === null ? 1 : k.inScale[p];
  const C4 = C & ~3;
  for (let r = 0; r < d1; r++) {
    const o = offsets[p * d1 + r] * C;
    const w = weights[p * d1 + r] * s;
    let c = 0;
    for (; c < C4; c += 4) {
      buf[o + c] += w * q[c];
      buf[o + c + 1] += w * q[c + 1];
      buf[o + c + 2] += w * q[c + 2];
      buf[o + c + 3] += w * q[c + 3];
    }
    for (; c < C; c++) buf[o + c] += w * q[c];
  }
}

/**
 * The smoothness kernel's filter depends only on the image size, sxy and the normalisation, not on
 * the image: predict and refine see the same few sizes again and again, so the last two are kept
 * (per thread; a 320x240 one holds about 3 MB). The mean field only reads them.
 */
const smoothnessFilters = new Map<string, NormalizedGaussianFilter>();

function smoothnessFilter(H: number, W: number, sxy: number, normalization: KernelNormalization): NormalizedGaussianFilter {
  const key = `${H}x${W}/${sxy}/${normalization}`;
  let f = smoothnessFilters.get(key);
  if (f) smoothnessFilters.delete(key); // re-inserted below: most recently used last
  else f = new NormalizedGaussianFilter(positionFeatures(H, W, sxy), H * W, 2, normalization);
  smoothnessFilters.set(key, f);
  if (smoothnessFilters.size > 2) smoothnessFilters.delete(smoothnessFilters.keys().next().value!);
  return f;
}

/**
 * Dense CRF mean-field inference on an image.
 * @param unary  [H·W, C] row-major unary energies, -log p (see `unaryFromLabels`, `unaryFromProbs`).
 * @param image  [H, W, 3] RGB bytes (used by the bilateral kernel; may be empty if bilateral is null).
 * @returns      [H·W, C] marginals Q (rows sum to 1). Deterministic.
 */
export function denseCrf(
  unary: Float32Array,
  image: Uint8Array,
  H: number,
  W: number,
  C: number,
  opts: DenseCrfOptionsInput = {},
): Float32Array {
  const o = resolveCrfOptions(opts);
  const N = H * W;
  if (!(Number.isInteger(H) && Number.isInteger(W) && H > 0 && W > 0)) throw new Error(`denseCrf: bad size ${H}x${W}`);
  if (!(Number.isInteger(C) && C >= 1)) throw new Error(`denseCrf: bad class count ${C}`);
  if (unary.length !== N * C) throw new Error(`denseCrf: unary length ${unary.length} != H*W*C = ${N * C}`);

  const kernels: { filter: NormalizedGaussianFilter; w: number }[] = [];
  if (o.gaussian && o.gaussian.compat !== 0 && o.iterations > 0) {
    kernels.push({ filter: smoothnessFilter(H, W, o.gaussian.sxy, o.normalization), w: o.gaussian.compat });
  }
  if (o.bilateral && o.bilateral.compat !== 0 && o.iterations > 0) {
    const f = bilateralFeatures(image, H, W, o.bilateral.sxy, o.bilateral.srgb);
    kernels.push({ filter: new NormalizedGaussianFilter(f, N, 5, o.normalization), w: o.bilateral.compat });
  }

  // Messages Σ_k w_k K̂_k Q are the negated Potts energy up to a per-pixel constant.
  const scaled = kernels.map((k) => scaledKernel(k.filter, k.w));
  const wasm = kernels.length > 0 && crfEngine.current === 'wasm' ? meanFieldWasm(unary, N, C, o.iterations, scaled) : null;
  if (wasm) return wasm;
  const Q = new Float32Array(N * C);
  softmaxNegUnary(unary, N, C, Q);
  if (kernels.length === 0) return Q;
  meanField(unary, Q, N, C, o.iterations, scaled.map((k) => withBuffers(k, C)));
  return Q;
}

/**
 * Unary from a hard label map, as pydensecrf's unary_from_labels(labels, C, gt_prob,
 * zero_unsure=False) used by IRN's crf_inference_label: -log gt_prob on the label,
 * -log((1 - gt_prob) / (C - 1)) on the others. Pixels whose label is `ignore` or >= C get the
 * uniform -log(1/C) (pydensecrf's "unsure"; IRN's maps have none, but ours may carry 255).
 * @returns [N, C] row-major.
 */
export function unaryFromLabels(labels: Uint8Array | Int32Array | Uint16Array, C: number, gtProb = 0.7, ignore = 255): Float32Array {
  if (!(gtProb > 0 && gtProb < 1)) throw new Error(`unaryFromLabels: gtProb must be in (0, 1), got ${gtProb}`);
  if (!(Number.isInteger(C) && C >= 2)) throw new Error(`unaryFromLabels: need at least 2 classes, got ${C}`);
  const N = labels.length;
  const pE = -Math.log(gtProb);
  const nE = -Math.log((1 - gtProb) / (C - 1));
  const uE = -Math.log(1 / C);
  const U = new Float32Array(N * C);
  for (let i = 0; i < N; i++) {
    const l = labels[i];
    const b = i * C;
    if (l === ignore || l < 0 || l >= C) {
      U.fill(uE, b, b + C);
    } else {
      U.fill(nE, b, b + C);
      U[b + l] = pE;
    }
  }
  return U;
}

/**
 * Unary from class probabilities [N, C], as pydensecrf's unary_from_softmax(sm, scale, clip) used by
 * PSA's crf_inference: optional blend towards uniform (`scale` = confidence in (0, 1]), then
 * clip to [clip, 1] and take -log. Rows need not sum to 1 (PSA feeds bg-padded CAMs).
 */
export function unaryFromProbs(probs: Float32Array, C: number, clip = 1e-5, scale?: number): Float32Array {
  if (probs.length % C !== 0) throw new Error(`unaryFromProbs: length ${probs.length} not a multiple of C = ${C}`);
  if (scale !== undefined && !(scale > 0 && scale <= 1)) throw new Error(`unaryFromProbs: scale must be in (0, 1], got ${scale}`);
  const U = new Float32Array(probs.length);
  for (let i = 0; i < probs.length; i++) {
    let p = probs[i];
    if (scale !== undefined) p = scale * p + (1 - scale) / C;
    if (!(p >= clip)) p = clip; // also maps NaN to clip
    if (p > 1) p = 1;
    U[i] = -Math.log(p);
  }
  return U;
}

/** Per-pixel argmax of q [N, C] (first maximum wins). */
export function argmaxLabels(q: Float32Array, N: number, C: number): Uint8Array {
  if (q.length !== N * C) throw new Error(`argmaxLabels: length ${q.length} != N*C = ${N * C}`);
  if (C > 256) throw new Error('argmaxLabels: more than 256 classes do not fit a Uint8Array');
  const out = new Uint8Array(N);
  for (let i = 0; i < N; i++) {
    const b = i * C;
    let best = 0;
    let bv = q[b];
    for (let c = 1; c < C; c++) {
      if (q[b + c] > bv) {
        bv = q[b + c];
        best = c;
      }
    }
    out[i] = best;
  }
  return out;
}
