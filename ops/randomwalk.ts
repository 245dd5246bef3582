/**
 * Random walk with a sparse local transition (PSA infer_aff.py, IRN misc/indexing.py), shared by
 * the `affinity` and `contrast` stages, plus the pair geometry both use.
 *
 * Geometry (PSA pyutils.get_indices_of_pairs, IRN PathIndex, radius r, rf = r - 1):
 * - Offsets: the "forward" half-disc, each unordered pair once: (0, dx) for dx = 1..rf, then
 *   (dy, dx) for dy = 1..rf, dx = -rf..rf with dx^2 + dy^2 < r^2 (strictly). So radius 1 has no
 *   offsets, radius 2 is the 8-neighbourhood (4 offsets), PSA's radius 5 gives 34, IRN's 10 gives 152.
 * - Pair maps `[K, h', w']` (layout 'region'): the sources are the pixels whose every forward target
 *   lies inside the h x w grid for every offset: rows [0, h - rf), columns [rf, w - rf), so
 *   h' = h - rf, w' = w - 2 rf. Entry (k, y, x) is the pair between source (y, x + rf) and target
 *   (y + dy_k, x + rf + dx_k). This is the crop PSA/IRN train on; pairs between two pixels of the
 *   left/right/bottom border band are not in it.
 * - Layout 'full' `[K, h, w]`: every grid pixel is a source; entries whose target falls outside the
 *   grid are ignored. This is what IRN's propagate_to_edge builds by padding (so no pair is lost);
 *   compute it from features padded by rf on the left, right and bottom.
 *
 * Transition convention (exactly PSA's and IRN's): A_ij = a_ij for every pair (both directions,
 * A symmetric), A_ii = 1, T = A^beta elementwise, normalised so each COLUMN sums to 1:
 * T_ij = A_ij^beta / sum_k A_kj^beta (PSA: trans_mat / torch.sum(trans_mat, dim=0)). Propagation
 * multiplies the class maps as row vectors from the left, x <- x T (PSA: torch.matmul(cam_vec,
 * trans_mat); IRN the same), i.e.
 *   x_new(j) = sum_i x(i) T_ij = sum_i A_ij^beta x(i) / sum_i A_ij^beta,
 * so each pixel's new score is the A^beta-weighted average of its neighbours' scores (itself with
 * weight 1). That is why a constant map stays constant and scores never leave [min, max]. (The
 * other reading, x <- T x, would be mass-conserving diffusion, which PSA does not do.) Applying
 * x <- x T `2^logt` times equals PSA's x T^(2^logt) after squaring T logt times, without the dense
 * N x N matrix: each step costs O(N K) time and memory.
 *
 * Implementation: the column of T at pixel j, i.e. the weights of x(j + d) for every directed
 * offset d (the K forward ones, their K negatives and 0), is stored as maps grouped by dy: group dy
 * holds [h, 1, 2 Rx + 1, W] for dx = -Rx..Rx (Rx, Ry: the largest |dx|, |dy|; 0 where no offset;
 * W = w rounded up to a multiple of 16, zero weights beyond w). A step works on x as [h, C, W]:
 * pad, unfold along x once ([h + 2 Ry, C, 2 Rx + 1, W]), then per dy take rows dy.. of the unfold
 * -- a slice of the outermost axis only, which TensorFlow returns without copying when its byte
 * offset is 64-aligned (hence W) -- multiply by the group's weights and sum over dx. About
 * 4 (2 Ry + 1) ops per step. Measured at 250x188, radius 10 (8-step runs, loaded 2-core machine):
 * 160 ms/step vs 220 ms with a per-group copy of the unfold and ~300 ms with one
 * slice-multiply-add per directed offset; gathers of the neighbours were 4-5x slower still. With dx
 * on the second-innermost axis (x innermost) instead of the innermost, the multiply and the sum
 * over dx run along contiguous rows of W: about 2x faster per step at radius 5 (bench/randomwalk.ts).
 * That is the 'tf' engine, kept as the reference; `propagate` runs the same walk in WebAssembly
 * SIMD by default (ops/randomwalk_wasm.ts: one fused pass per application, the same weights),
 * where op dispatch no longer dominates.
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../pipeline/errors.js';
import { walkWasm } from './randomwalk_wasm.js';
import { EngineSwitch } from './engine.js';

/** A neighbour offset on the grid: target = source + (dy, dx). */
export interface Offset {
  readonly dy: number;
  readonly dx: number;
}

/** 'region': pair maps over the PSA/IRN source crop [h - rf, w - 2 rf]; 'full': over the whole grid [h, w]. */
export type PairLayout = 'region' | 'full';

/** Where the source pixels of a pair map lie on the grid: rows [top, top + height), columns [left, left + width). */
export interface PairRegion {
  top: number;
  left: number;
  height: number;
  width: number;
}

/**
 * The forward half-disc of radius `radius` (integer >= 1), in PSA/IRN order: (0, 1..rf), then
 * row by row dy = 1..rf, dx = -rf..rf, keeping dx^2 + dy^2 < radius^2. rf = radius - 1.
 * radius 1 -> [], 2 -> [(0,1), (1,-1), (1,0), (1,1)], 5 -> 34 offsets, 10 -> 152.
 */
export function neighbourOffsets(radius: number): Offset[] {
  checkRadius(radius);
  const out: Offset[] = [];
  for (let dx = 1; dx < radius; dx++) out.push({ dy: 0, dx });
  for (let dy = 1; dy < radius; dy++) {
    for (let dx = -radius + 1; dx < radius; dx++) if (dx * dx + dy * dy < radius * radius) out.push({ dy, dx });
  }
  return out;
}

/**
 * The source region of 'region'-layout pair maps on an h x w grid: rows [0, h - rf), columns
 * [rf, w - rf) (rf = radius - 1). Throws when the grid is too small to hold one source.
 */
export function pairRegion(height: number, width: number, radius: number): PairRegion {
  checkRadius(radius);
  const rf = radius - 1;
  const region = { top: 0, left: rf, height: height - rf, width: width - 2 * rf };
  if (!(Number.isInteger(height) && Number.isInteger(width)) || region.height < 1 || region.width < 1) {
    throw new TagsegError(`a ${height} x ${width} grid is too small for pairs of radius ${radius} (needs at least ${rf + 1} x ${2 * rf + 1})`);
  }
  return region;
}

/**
 * Validate offsets against a radius: distinct, forward (dy > 0, or dy = 0 and dx > 0) and inside
 * the square |dy|, |dx| <= radius - 1 that the pair region assumes. Any such subset of
 * `neighbourOffsets(radius)` (or the whole set) is accepted.
 */
export function checkOffsets(offsets: readonly Offset[], radius: number): void {
  checkRadius(radius);
  const rf = radius - 1;
  const seen = new Set<string>();
  for (const { dy, dx } of offsets) {
    if (!(Number.isInteger(dy) && Number.isInteger(dx))) throw new TagsegError(`offset (${dy}, ${dx}) is not integer`);
    if (!(dy > 0 || (dy === 0 && dx > 0))) throw new TagsegError(`offset (${dy}, ${dx}) is not a forward offset (dy > 0, or dy = 0 and dx > 0)`);
    if (dy > rf || Math.abs(dx) > rf) throw new TagsegError(`offset (${dy}, ${dx}) lies outside radius ${radius} (|dy|, |dx| <= ${rf})`);
    const key = `${dy},${dx}`;
    if (seen.has(key)) throw new TagsegError(`offset (${dy}, ${dx}) is listed twice`);
    seen.add(key);
  }
}

/**
 * The layout of pair maps `[K, ph, pw]` (or `[B, K, ph, pw]`: pass shape without B) for an
 * h x w grid: 'full' when [ph, pw] = [h, w], 'region' when it is the PSA crop. Throws otherwise.
 */
export function pairLayoutOf(ph: number, pw: number, height: number, width: number, radius: number): PairLayout {
  if (ph === height && pw === width) return 'full';
  const rf = radius - 1;
  if (ph === height - rf && pw === width - 2 * rf) return 'region';
  throw new TagsegError(
    `pair maps of ${ph} x ${pw} fit neither layout of a ${height} x ${width} grid at radius ${radius}: ` +
      `'full' is ${height} x ${width}, 'region' ${height - rf} x ${width - 2 * rf}`,
  );
}

/** One dy-row of the transition: weights [h, 1, 2 rx + 1, W] of x(j + (dy, dx)), dx = -rx..rx. */
export type TransitionGroup = {
  dy: number;
  weights: tf.Tensor4D;
};

/**
 * Sparse column-stochastic transition T on an h x w grid (see the file comment): for each pixel j,
 * group weights hold T_ij for i = j + (dy, dx); absent and out-of-grid neighbours have weight 0.
 * The weights of each pixel sum to 1 (the column sums of T). Dispose with `disposeTransition`.
 */
export type Transition = {
  height: number;
  width: number;
  /** Width of the weight maps: `width` rounded up to a multiple of 16. */
  paddedWidth: number;
  /** Largest |dy| and |dx| of the directed offsets (the padding a step needs). */
  ry: number;
  rx: number;
  groups: TransitionGroup[];
};

export function disposeTransition(t: Transition): void {
  tf.dispose(t.groups.map((g) => g.weights));
}

/** Directed offsets by dy: the K forward ones, their negatives (the same pair seen from its target) and the self-loop (k = -1). */
type DirectedOffsets = Map<number, { dx: number; k: number; forward: boolean }[]>;

function directedOffsets(offsets: readonly Offset[]): DirectedOffsets {
  const byDy: DirectedOffsets = new Map();
  const addDirected = (dy: number, dx: number, k: number, forward: boolean) => {
    const list = byDy.get(dy) ?? [];
    list.push({ dx, k, forward });
    byDy.set(dy, list);
  };
  addDirected(0, 0, -1, true);
  offsets.forEach(({ dy, dx }, k) => {
    addDirected(dy, dx, k, true);
    addDirected(-dy, -dx, k, false);
  });
  return byDy;
}

/**
 * padded[k] = A^beta of offset k placed at its source pixel, on the grid padded by rf on every
 * side, 0 where the pair does not exist. fwd_k(y, x) = padded[k, rf + y, rf + x]; the same pair
 * seen from its target: bwd_k(y, x) = fwd_k(y - dy, x - dx) = padded[k, rf - dy + y, rf - dx + x].
 */
function paddedPowers(aff: tf.Tensor3D, offsets: readonly Offset[], layout: PairLayout, h: number, w: number, rf: number, beta: number): tf.Tensor3D {
  return tf.tidy(() => {
    const K = offsets.length;
    if (K === 0) return tf.zeros([0, h + 2 * rf, w + 2 * rf]) as tf.Tensor3D;
    const powA = tf.pow(tf.relu(aff), beta) as tf.Tensor3D;
    if (layout === 'region') return tf.pad(powA, [[0, 0], [rf, 2 * rf], [2 * rf, 2 * rf]]);
    const rowOk = new Float32Array(K * h);
    const colOk = new Float32Array(K * w);
    offsets.forEach(({ dy, dx }, k) => {
      for (let y = 0; y < h - dy; y++) rowOk[k * h + y] = 1;
      for (let x = Math.max(0, -dx); x < Math.min(w, w - dx); x++) colOk[k * w + x] = 1;
    });
    const ok = tf.mul(tf.tensor3d(rowOk, [K, h, 1]), tf.tensor3d(colOk, [K, 1, w]));
    return tf.pad(tf.mul(powA, ok), [[0, 0], [rf, rf], [rf, rf]]);
  }) as tf.Tensor3D;
}

/** 1 / column sums of A^beta: the self-loop 1 + every pair touching the pixel, as source or as target. */
function inverseDegree(padded: tf.Tensor3D, offsets: readonly Offset[], h: number, w: number, rf: number, map: (k: number, dy: number, dx: number, forward: boolean) => tf.Tensor2D): tf.Tensor {
  return tf.tidy(() => {
    let degree: tf.Tensor = tf.ones([h, w]);
    if (offsets.length > 0) degree = tf.add(degree, tf.slice(tf.sum(padded, 0), [rf, rf], [h, w]));
    offsets.forEach(({ dy, dx }, k) => {
      const next = tf.tidy(() => tf.add(degree, map(k, dy, dx, false)));
      degree.dispose();
      degree = next;
    });
    return tf.div(1, degree); // not tf.reciprocal: its vectorised CPU kernel is approximate (1/1 = 1 - 6e-8)
  });
}

/**
 * Build T from affinities.
 * aff: [K, h', w'] in [0, 1], one map per offset, in 'region' layout ([h - rf, w - 2 rf]) or
 * 'full' layout ([h, w]); the layout is read from the shape (see `pairLayoutOf`). Negative
 * values are clamped to 0. offsets: the K forward offsets (checked against `radius`).
 * -> Transition on the h x w grid with T = (A^beta, self-loop 1) / column sums.
 */
export function buildTransition(
  aff: tf.Tensor3D,
  offsets: readonly Offset[],
  radius: number,
  height: number,
  width: number,
  beta: number,
): Transition {
  checkOffsets(offsets, radius);
  if (!(Number.isFinite(beta) && beta > 0)) throw new TagsegError(`random walk beta must be a positive number, got ${beta}`);
  if (!(Number.isInteger(height) && Number.isInteger(width) && height > 0 && width > 0)) {
    throw new TagsegError(`random walk grid must be positive integers, got ${height} x ${width}`);
  }
  const K = offsets.length;
  if (aff.rank !== 3 || aff.shape[0] !== K) {
    throw new TagsegError(`buildTransition: affinities must be [K=${K}, h', w'], got [${aff.shape.join(', ')}]`);
  }
  const rf = radius - 1;
  const layout = K > 0 ? pairLayoutOf(aff.shape[1], aff.shape[2], height, width, radius) : 'full';
  const h = height;
  const w = width;
  const byDy = directedOffsets(offsets);
  return tf.tidy((): Transition => {
    // Only `padded` (~1.2 K N floats) and the finished groups ((2 Ry + 1)(2 Rx + 1) N, ~2.4 K N) are
    // alive at once.
    const padded = paddedPowers(aff, offsets, layout, h, w, rf, beta);
    const map = (k: number, dy: number, dx: number, forward: boolean): tf.Tensor2D =>
      tf.reshape(tf.slice(padded, [k, forward ? rf : rf - dy, forward ? rf : rf - dx], [1, h, w]), [h, w]);
    const inv = inverseDegree(padded, offsets, h, w, rf, map);
    const ry = Math.max(0, ...offsets.map((o) => o.dy));
    const rx = Math.max(0, ...offsets.map((o) => Math.abs(o.dx)));
    const W = paddedWidthOf(w);
    const groups: TransitionGroup[] = [];
    for (const dy of [...byDy.keys()].sort((a, b) => a - b)) {
      const at = new Map(byDy.get(dy)!.map((e) => [e.dx, e]));
      const weights = tf.tidy(() => {
        const cols: tf.Tensor[] = [];
        for (let dx = -rx; dx <= rx; dx++) {
          const e = at.get(dx);
          cols.push(!e ? tf.zeros([h, w]) : e.k < 0 ? tf.ones([h, w]) : map(e.k, e.forward ? dy : -dy, e.forward ? dx : -dx, e.forward));
        }
        const wts = tf.mul(tf.stack(cols, 1), tf.expandDims(inv, 1)); // [h, 2rx + 1, w]
        return tf.expandDims(tf.pad(wts, [[0, 0], [0, 0], [0, W - w]]), 1) as tf.Tensor4D;
      });
      groups.push({ dy, weights });
    }
    return { height: h, width: w, paddedWidth: W, ry, rx, groups };
  });
}

/** Width of the weight maps and of x inside `propagate`: a multiple of 16 floats (64 bytes). */
function paddedWidthOf(w: number): number {
  return Math.ceil(w / 16) * 16;
}

/** How `propagate` computes x T^steps. */
export interface PropagateOptions {
  /**
   * 'chebyshev' (default): the Chebyshev expansion of T^steps, truncated where the dropped
   * coefficients sum below `tolerance` (chebyshevPower): about sqrt(2 steps ln(2 / tolerance))
   * applications of T instead of `steps` (78 instead of 256 at 1e-6, on one more channel), the
   * same maps within float tolerance: at 1000x752, radius 5, the max difference from 256 steps
   * stays 1.1e-6 at 1e-6 as at 1e-9 (96 applications), the sequential walk's own float32
   * rounding; 'steps': `steps` applications of T, one after the other.
   */
  method?: 'chebyshev' | 'steps';
  /** Chebyshev only: bound on the dropped coefficients' sum (default 1e-6). */
  tolerance?: number;
}

/**
 * x [C, h, w] -> x T^steps as row vectors per channel: `steps` applications of
 * x_new(j) = sum_i x(i) T_ij (each pixel becomes the weighted average of its neighbours), or
 * fewer with the Chebyshev expansion (PropagateOptions).
 * O(C N K) time per application; memory: T (O(N K)) plus O(C N (2 rx + 1)).
 */
export function propagate(x: tf.Tensor3D, t: Transition, steps: number, o: PropagateOptions = {}): tf.Tensor3D {
  if (!(Number.isInteger(steps) && steps >= 0)) throw new TagsegError(`random walk steps must be a non-negative integer, got ${steps}`);
  if (x.rank !== 3 || x.shape[1] !== t.height || x.shape[2] !== t.width) {
    throw new TagsegError(`propagate: map must be [C, ${t.height}, ${t.width}], got [${x.shape.join(', ')}]`);
  }
  const full = o.method === 'steps' ? null : chebyshevPower(steps, o.tolerance ?? 1e-6);
  // The expansion only where it is shorter than the walk itself.
  const cheb = full && full.length - 1 < steps ? full : null;
  const fast = walkEngine.current === 'wasm' ? propagateWasm(x, t, steps, cheb) : null;
  if (fast) return fast;
  return tf.tidy(() => {
    const [, h, w] = x.shape;
    // [C, h, w] -> [h, C, W], zero columns beyond w (their weights are 0, so they stay 0)
    const x0 = tf.pad(tf.transpose(tf.cast(x, 'float32'), [1, 0, 2]), [[0, 0], [0, 0], [0, t.paddedWidth - w]]) as tf.Tensor3D;
    const C = x.shape[0];
    let out: tf.Tensor3D;
    if (cheb) {
      // A ones channel walks along: T preserves constants exactly, the float32 recurrence only
      // nearly (its rounding grows with the degree), so dividing by the walked ones restores them.
      const ones = tf.pad(tf.ones([h, 1, w]), [[0, 0], [0, 0], [0, t.paddedWidth - w]]);
      const both = chebyshevWalk(tf.concat([x0, ones], 1) as tf.Tensor3D, t, cheb);
      out = tf.div(tf.slice(both, [0, 0, 0], [h, C, w]), tf.slice(both, [0, C, 0], [h, 1, w]));
    } else {
      out = tf.slice(powerWalk(x0, t, steps), [0, 0, 0], [h, C, w]);
    }
    return tf.transpose(out, [1, 0, 2]) as tf.Tensor3D;
  });
}

/** Which engine propagates: 'wasm' (ops/randomwalk_wasm.ts, the default where WebAssembly SIMD exists) or 'tf', the reference it is tested against. */
export type RandomWalkEngine = 'tf' | 'wasm';
const walkEngine = new EngineSwitch<RandomWalkEngine>('wasm');

/** Set the engine of `propagate`; returns the previous one (tests and benches compare the two). */
export const setRandomWalkEngine = (engine: RandomWalkEngine): RandomWalkEngine => walkEngine.set(engine);

/**
 * propagate on the wasm engine (the same walk: Chebyshev with a ones channel, or plain steps);
 * null where WebAssembly SIMD is unavailable.
 */
function propagateWasm(x: tf.Tensor3D, t: Transition, steps: number, cheb: Float64Array | null): tf.Tensor3D | null {
  const [C, h, w] = x.shape;
  const N = h * w;
  const xf = tf.cast(x, 'float32');
  const data = xf.dataSync() as Float32Array;
  xf.dispose();
  const wt = { height: h, width: w, paddedWidth: t.paddedWidth, ry: t.ry, rx: t.rx, groups: t.groups.map((g) => ({ dy: g.dy, weights: g.weights.dataSync() as Float32Array })) };
  if (!cheb) {
    const r = walkWasm(data, C, wt, steps);
    return r && tf.tensor3d(r, [C, h, w]);
  }
  const withOnes = new Float32Array((C + 1) * N);
  withOnes.set(data);
  withOnes.fill(1, C * N);
  const r = walkWasm(withOnes, C + 1, wt, cheb);
  if (!r) return null;
  const out = new Float32Array(C * N);
  for (let c = 0; c < C; c++) for (let p = 0; p < N; p++) out[c * N + p] = r[c * N + p] / r[C * N + p];
  return tf.tensor3d(out, [C, h, w]);
}

/** x T^steps by `steps` applications of T (x [h, C, W]; the caller's tidy disposes x). */
function powerWalk(x: tf.Tensor3D, t: Transition, steps: number): tf.Tensor3D {
  let cur = tf.clone(x);
  for (let s = 0; s < steps; s++) {
    const next = tf.tidy(() => step(cur, t));
    cur.dispose();
    cur = next;
  }
  return cur;
}

/**
 * Coefficients c_0..c_d of the Chebyshev expansion of u^steps, truncated: u^s = sum_k c_k T_k(u)
 * with c_k = 2^(1-s) binom(s, (s-k)/2) for k = s, s-2, ... (half that for k = 0); they are the
 * probabilities of a +-1 walk of s steps ending at +-k, so they sum to 1 and fall off like
 * exp(-k^2 / 2s). Kept up to the smallest degree d whose dropped coefficients sum below
 * `tolerance`. T's eigenvalues are real in [-1, 1] (T = A D^-1 is similar to the symmetric
 * D^-1/2 A D^-1/2, and stochastic), where |T_k| <= 1, so the dropped terms change x T^s by at
 * most `tolerance` in that norm.
 */
export function chebyshevPower(steps: number, tolerance: number): Float64Array {
  if (!(tolerance > 0 && tolerance < 1)) throw new TagsegError(`random walk tolerance must be in (0, 1), got ${tolerance}`);
  const c = new Float64Array(steps + 1);
  // log binom(s, j) - s log 2, for j = 0..s/2 (k = s - 2j)
  let logp = -steps * Math.LN2;
  for (let j = 0; 2 * j <= steps; j++) {
    if (j > 0) logp += Math.log(steps - j + 1) - Math.log(j);
    const k = steps - 2 * j;
    c[k] = (k === 0 ? 1 : 2) * Math.exp(logp);
  }
  let tail = 0;
  let d = steps;
  while (d > 0 && tail + c[d] < tolerance) tail += c[d--];
  return c.slice(0, d + 1);
}

/** sum_k c_k x T_k(T) by the three-term recurrence v_{k+1} = 2 v_k T - v_{k-1} (x [h, C, W]). */
function chebyshevWalk(x: tf.Tensor3D, t: Transition, c: Float64Array): tf.Tensor3D {
  let prev = tf.clone(x);
  let cur = tf.tidy(() => step(prev, t));
  let sum = tf.tidy(() => tf.add(tf.mul(prev, c[0]), tf.mul(cur, c[1] ?? 0))) as tf.Tensor3D;
  for (let k = 2; k < c.length; k++) {
    const next = tf.tidy(() => tf.sub(tf.mul(step(cur, t), 2), prev)) as tf.Tensor3D;
    prev.dispose();
    prev = cur;
    cur = next;
    if (c[k] !== 0) {
      const s2 = tf.tidy(() => tf.add(sum, tf.mul(cur, c[k]))) as tf.Tensor3D;
      sum.dispose();
      sum = s2;
    }
  }
  tf.dispose([prev, cur]);
  return sum;
}

/** One application of x <- x T on x [h, C, W]. */
function step(x: tf.Tensor3D, t: Transition): tf.Tensor3D {
  const [h, c, W] = x.shape;
  const { ry, rx } = t;
  const rows = h + 2 * ry;
  const xp = tf.pad(x, [[ry, ry], [0, 0], [rx, rx]]);
  const cols: tf.Tensor3D[] = [];
  for (let dx = -rx; dx <= rx; dx++) cols.push(tf.slice(xp, [0, 0, rx + dx], [rows, c, W]));
  const unfold = tf.stack(cols, 2) as tf.Tensor4D; // [h + 2ry, C, 2rx + 1, W]
  const terms = t.groups.map((g) =>
    tf.tidy(() => tf.sum(tf.mul(tf.slice(unfold, [ry + g.dy, 0, 0, 0], [h, c, 2 * rx + 1, W]), g.weights), 2)),
  );
  return (terms.length === 1 ? terms[0] : tf.addN(terms)) as tf.Tensor3D;
}

export interface RandomWalkOptions {
  /** Exponent of the affinities (PSA 8, IRN 10). */
  beta: number;
  /** 2^logt steps (PSA/IRN 8 = 256 steps). Default 8. Ignored when `steps` is given. */
  logt?: number;
  /** Number of steps, overriding logt. */
  steps?: number;
}

/**
 * map [C, h, w] (e.g. `withBackground(cams)`), aff [K, h', w'] (layout by shape, see
 * `buildTransition`) -> the propagated map [C, h, w] = map T^(2^logt) (or T^steps).
 */
export function randomWalk(map: tf.Tensor3D, aff: tf.Tensor3D, offsets: readonly Offset[], radius: number, opts: RandomWalkOptions): tf.Tensor3D {
  const logt = opts.logt ?? 8;
  if (opts.steps === undefined && !(Number.isInteger(logt) && logt >= 0 && logt <= 20)) {
    throw new TagsegError(`random walk logt must be an integer in [0, 20], got ${logt}`);
  }
  const steps = opts.steps ?? 2 ** logt;
  if (map.rank !== 3) throw new TagsegError(`randomWalk: map must be [C, h, w], got [${map.shape.join(', ')}]`);
  return tf.tidy(() => {
    const t = buildTransition(aff, offsets, radius, map.shape[1], map.shape[2], opts.beta);
    return propagate(map, t, steps);
  });
}

/** Background score for propagation: PSA's power of the complement, or a constant. */
export type BackgroundOptions = { alpha: number } | { threshold: number };

/**
 * cams [C, h, w] (each class max-normalised to [0, 1]) -> [C + 1, h, w] with a background map
 * first: { alpha }: bg = (1 - max_c cam)^alpha (PSA infer_aff.py, alpha 16; with C = 0, bg = 1);
 * { threshold }: bg = threshold everywhere. A constant map is unchanged by the random walk (each
 * step averages), so the constant is equivalent to IRN's thresholding after propagation
 * (sem_seg_bg_thres 0.25) when the propagated CAMs are compared on the same scale.
 */
export function withBackground(cams: tf.Tensor3D, opts: BackgroundOptions): tf.Tensor3D {
  if (cams.rank !== 3) throw new TagsegError(`withBackground: cams must be [C, h, w], got [${cams.shape.join(', ')}]`);
  return tf.tidy(() => {
    const [c, h, w] = cams.shape;
    const x = tf.cast(cams, 'float32');
    let bg: tf.Tensor;
    if ('alpha' in opts) {
      if (!(Number.isFinite(opts.alpha) && opts.alpha > 0)) throw new TagsegError(`background alpha must be positive, got ${opts.alpha}`);
      bg = c === 0 ? tf.ones([1, h, w]) : tf.pow(tf.relu(tf.sub(1, tf.max(x, 0, true))), opts.alpha);
    } else {
      if (!Number.isFinite(opts.threshold)) throw new TagsegError(`background threshold must be a number, got ${opts.threshold}`);
      bg = tf.fill([1, h, w], opts.threshold);
    }
    return tf.concat([bg, x], 0) as tf.Tensor3D;
  });
}

/**
 * The dense N x N matrix of a Transition (N = h w, row-major pixels), T_ij = weight of x(i) in
 * x_new(j). For tests and debugging on tiny grids only (refuses N > 4096).
 */
export function denseTransition(t: Transition): tf.Tensor2D {
  const { height: h, width: w } = t;
  const n = h * w;
  if (n > 4096) throw new TagsegError(`denseTransition is for tiny grids; ${h} x ${w} has ${n} pixels`);
  const out = new Float32Array(n * n);
  const W = t.paddedWidth;
  const kw = 2 * t.rx + 1;
  for (const g of t.groups) {
    const wts = g.weights.dataSync();
    for (let y = 0; y < h; y++) {
      const sy = y + g.dy;
      if (sy < 0 || sy >= h) continue;
      for (let x = 0; x < w; x++) {
        for (let k = 0; k < kw; k++) {
          const sx = x + k - t.rx;
          if (sx < 0 || sx >= w) continue;
          out[(sy * w + sx) * n + (y * w + x)] += wts[(y * kw + k) * W + x];
        }
      }
    }
  }
  return tf.tensor2d(out, [n, n]);
}

function checkRadius(radius: number): void {
  if (!(Number.isInteger(radius) && radius >= 1)) throw new TagsegError(`pair radius must be an integer >= 1, got ${radius}`);
}
