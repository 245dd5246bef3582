/**
 * AffinityNet's embedding head and the pairwise affinities (PSA network/resnet38_aff.py).
 *
 * Head: each chosen backbone level is reduced by a 1x1 conv (no bias) + norm + ReLU to 64/128/256
 * channels (PSA: f8_3/f8_4/f8_5 on conv4/conv5/conv6, with ELU and no norm), resized to the
 * label grid, concatenated, and a 1x1 conv (no bias: a bias cancels in f_i - f_j) gives the
 * embedding f, 448 channels as PSA's f9. The output is linear (PSA applies ELU after f9).
 * Resizing is bilinear with TF's legacy corner mapping (align_corners = half_pixel_centers =
 * false): output pixel i samples input i * in/out, which is where TF 'same'-padded strided convs
 * put their outputs (feature j of a stride-s level sits at input pixel ~ s j). It is also the only
 * mode whose gradient is right in tfjs-node: its ResizeBilinearGrad drops half_pixel_centers.
 *
 * affinities: a_ij = exp(-mean_k |f_i,k - f_j,k|) for every pair of the offsets, one map per offset,
 * from two tf.slice's of f (no gather). Written with a hand gradient (tf.customGrad) that keeps
 * only f and a for the backward pass and recomputes |f_i - f_j| per offset: autodiff would keep
 * K full [B, h', w', D] differences alive (K = 34 at PSA's radius 5, 152 at IRN's 10). That is the
 * reference engine; by default the channel sums and their gradient run in one WebAssembly pass each
 * (ops/affinity_wasm.ts), which keeps f's values on the JS side for the backward pass instead.
 */
import * as tf from '@tensorflow/tfjs';
import type { Features } from './backbone.js';
import { relu } from './native.js';
import { Norm, type NormOptions, type NormUpdates } from './norm.js';
import { ParamStore, heNormalConv, xavierUniform } from './params.js';
import { Rng } from './rng.js';
import { TagsegError } from '../pipeline/errors.js';
import { EngineSwitch } from '../ops/engine.js';
import { type PairGrid, pairDistanceGradient, pairDistanceSums, pairWasmAvailable } from '../ops/affinity_wasm.js';
import { checkOffsets, pairRegion, type Offset, type PairLayout } from '../ops/randomwalk.js';

export interface AffinityHeadOptions {
  /** Indices into Features.levels that feed the head. Default: the last three levels. */
  levels?: number[];
  /** Channels each used level is reduced to. Default [64, 128, 256] (PSA); required unless 3 levels are used. */
  reduce?: number[];
  /** Embedding channels D. Default 448 (PSA). */
  dim?: number;
  /** Norm after each reduction. Default GroupNorm (32 groups): no moving statistics, any batch size. */
  norm?: NormOptions;
  /** Seed of the init. Default 0. */
  seed?: number;
}

interface Reduction {
  level: number;
  kernel: tf.Variable;
  norm: Norm;
}

export class AffinityHead {
  readonly levels: number[];
  readonly reduce: number[];
  readonly dim: number;
  /** Variables under stable names: reduce{i}.kernel, reduce{i}.norm.*, embed.kernel. */
  readonly params = new ParamStore();
  /** Final 1x1 conv kernel [1, 1, sum(reduce), dim]. */
  readonly embed: tf.Variable;
  private readonly reductions: Reduction[] = [];
  private readonly inChannels: readonly number[];

  /** inChannels: channels of every backbone level (Backbone.channels). */
  constructor(inChannels: readonly number[], opts: AffinityHeadOptions = {}) {
    if (!(inChannels.length > 0 && inChannels.every((c) => Number.isInteger(c) && c > 0))) {
      throw new TagsegError(`AffinityHead needs the positive channel counts of the backbone levels, got [${inChannels.join(', ')}]`);
    }
    this.inChannels = [...inChannels];
    const n = inChannels.length;
    this.levels = opts.levels ?? [...inChannels.keys()].slice(-3);
    if (this.levels.length === 0 || !this.levels.every((l) => Number.isInteger(l) && l >= 0 && l < n) || new Set(this.levels).size !== this.levels.length) {
      throw new TagsegError(`AffinityHead levels must be distinct indices of the ${n} backbone levels, got [${this.levels.join(', ')}]`);
    }
    if (!opts.reduce && this.levels.length !== 3) throw new TagsegError(`AffinityHead: give 'reduce' channels for ${this.levels.length} levels`);
    this.reduce = opts.reduce ?? [64, 128, 256];
    if (this.reduce.length !== this.levels.length || !this.reduce.every((c) => Number.isInteger(c) && c > 0)) {
      throw new TagsegError(`AffinityHead reduce must be ${this.levels.length} positive channel counts, got [${this.reduce.join(', ')}]`);
    }
    this.dim = opts.dim ?? 448;
    if (!(Number.isInteger(this.dim) && this.dim > 0)) throw new TagsegError(`AffinityHead dim must be a positive integer, got ${this.dim}`);
    const norm = opts.norm ?? { kind: 'group' };
    const rng = new Rng(opts.seed ?? 0);
    // PSA: kaiming_normal_ on f8_3..f8_5, xavier_uniform_ on f9 (gain 4 there, before an ELU; gain 1 here, linear output)
    this.levels.forEach((level, i) => {
      this.reductions.push({
        level,
        kernel: this.params.add(`reduce${i}.kernel`, heNormalConv(rng, [1, 1, inChannels[level], this.reduce[i]]), true),
        norm: new Norm(this.params, `reduce${i}.norm`, this.reduce[i], norm),
      });
    });
    const cat = this.reduce.reduce((a, b) => a + b, 0);
    this.embed = this.params.add('embed.kernel', xavierUniform(rng, [1, 1, cat, this.dim]), true);
  }

  /**
   * Features (levels [B, h_l, w_l, c_l]) -> embedding f [B, h, w, D] on the label grid of size
   * `size` = [h, w] (default: the finest used level). training: norm layers in training mode
   * (BatchNorm statistics go to `updates`, see nn/norm.ts).
   */
  forward(features: Features, training: boolean, updates?: NormUpdates, size?: [number, number]): tf.Tensor4D {
    return tf.tidy(() => {
      const maps = this.reductions.map((r) => {
        const x = features.levels[r.level];
        if (!x || x.rank !== 4 || x.shape[3] !== this.inChannels[r.level]) {
          throw new TagsegError(`AffinityHead: level ${r.level} must be [B,h,w,${this.inChannels[r.level]}], got [${x?.shape.join(', ')}]`);
        }
        return x;
      });
      const [h, w] = size ?? maps.map((x) => [x.shape[1], x.shape[2]] as [number, number]).reduce((a, b) => (b[0] * b[1] > a[0] * a[1] ? b : a));
      if (!(Number.isInteger(h) && Number.isInteger(w) && h > 0 && w > 0)) throw new TagsegError(`AffinityHead: bad grid size ${h} x ${w}`);
      const parts = this.reductions.map((r, i) => {
        let y = tf.conv2d(maps[i], r.kernel as tf.Tensor4D, 1, 'valid');
        y = relu(r.norm.apply(y, training, updates));
        if (y.shape[1] !== h || y.shape[2] !== w) y = tf.image.resizeBilinear(y, [h, w], false, false);
        return y;
      });
      const cat = parts.length === 1 ? parts[0] : tf.concat(parts, 3);
      return tf.conv2d(cat, this.embed as tf.Tensor4D, 1, 'valid');
    });
  }

  variables(): tf.Variable[] {
    return this.params.trainable();
  }

  dispose(): void {
    this.params.dispose();
  }
}

/**
 * Pairwise affinities a_ij = exp(-mean_k |f_i,k - f_j,k|) of embeddings f [B, h, w, D].
 * layout 'region' (default, training): -> [B, K, h - rf, w - 2 rf] over the PSA source crop,
 * entry (b, k, y, x) = pair (y, x + rf) -> (y + dy_k, x + rf + dx_k), aligned with `pairLabels`.
 * layout 'full' (random walk): f is zero-padded by rf on the left, right and bottom first, so
 * -> [B, K, h, w] with every pixel a source; entries whose target is in the padding are
 * meaningless and the random walk drops them (ops/randomwalk.ts). rf = radius - 1.
 * Differentiable (hand gradient, see the file comment).
 */
export function affinities(f: tf.Tensor4D, offsets: readonly Offset[], radius: number, layout: PairLayout = 'region'): tf.Tensor4D {
  checkOffsets(offsets, radius);
  if (f.rank !== 4) throw new TagsegError(`affinities: f must be [B, h, w, D], got [${f.shape.join(', ')}]`);
  const rf = radius - 1;
  const [b, fh, fw, d] = f.shape;
  const [gh, gw] = layout === 'full' ? [fh + rf, fw + 2 * rf] : [fh, fw];
  const { height: ph, width: pw } = pairRegion(gh, gw, radius);
  const grid: PairGrid = { B: b, gh, gw, D: d, ph, pw, rf, offsets };
  return tf.tidy(() => {
    if (offsets.length === 0) return tf.zeros([b, 0, ph, pw]) as tf.Tensor4D;
    const x = layout === 'full' ? tf.pad(f, [[0, 0], [0, rf], [rf, rf], [0, 0]]) : f;
    return (pairEngine.current === 'wasm' && pairWasmAvailable(grid) ? wasmPairs(grid) : tfPairs(grid))(x as tf.Tensor4D);
  });
}

/** Which engine computes `affinities`: 'wasm' (ops/affinity_wasm.ts, where SIMD exists and D % 16 = 0) or 'tf', the reference. */
export type AffinityEngine = 'tf' | 'wasm';
const pairEngine = new EngineSwitch<AffinityEngine>('wasm');

/** Set the engine of `affinities`; returns the previous one (tests and benches compare the two). */
export const setAffinityEngine = (engine: AffinityEngine): AffinityEngine => pairEngine.set(engine);

/** The pairs in WebAssembly: channel sums |x_s - x_t| and their gradient in one pass each. */
function wasmPairs(g: PairGrid): (x: tf.Tensor4D) => tf.Tensor4D {
  const { B: b, D: d, ph, pw } = g;
  const K = g.offsets.length;
  return tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const xi = args[0] as tf.Tensor4D;
    const save = args[1] as tf.GradSaveFunc;
    const xd = xi.dataSync() as Float32Array;
    const a = tf.exp(tf.mul(tf.tensor4d(pairDistanceSums(xd, g), [b, K, ph, pw]), -1 / d)) as tf.Tensor4D;
    save([a]);
    return {
      value: a,
      // a = exp(-sum / D): dL/dsum = -a dL/da / D
      gradFunc: (dy: tf.Tensor, [sa]: tf.Tensor[]) => {
        const gsum = tf.tidy(() => tf.div(tf.neg(tf.mul(dy, sa)), d));
        const gd = gsum.dataSync() as Float32Array;
        gsum.dispose();
        return tf.tensor4d(pairDistanceGradient(xd, gd, g), xi.shape);
      },
    };
  });
}

/** The pairs in TensorFlow ops, two slices of x per offset (the reference engine). */
function tfPairs(g: PairGrid): (x: tf.Tensor4D) => tf.Tensor4D {
  const { B: b, gh, gw, D: d, ph, pw, rf, offsets } = g;
  const src = (t: tf.Tensor) => tf.slice(t, [0, 0, rf, 0], [b, ph, pw, d]);
  const dst = (t: tf.Tensor, o: Offset) => tf.slice(t, [0, o.dy, rf + o.dx, 0], [b, ph, pw, d]);
  return tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const xi = args[0] as tf.Tensor4D;
    const save = args[1] as tf.GradSaveFunc;
    const s = src(xi);
    const maps = offsets.map((o) => tf.tidy(() => tf.exp(tf.neg(tf.mean(tf.abs(tf.sub(s, dst(xi, o))), 3)))));
    const a = tf.stack(maps, 1) as tf.Tensor4D;
    save([xi, a]);
    return {
      value: a,
      // m = mean_k |s - t|, a = exp(-m): dL/dm = -a dL/da; dm/ds = sign(s - t) / D = -dm/dt
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sa] = saved;
        const gm = tf.div(tf.neg(tf.mul(dy, sa)), d); // [B, K, ph, pw]
        const ss = src(sx);
        let dsrc: tf.Tensor = tf.zeros([b, ph, pw, d]);
        let dx: tf.Tensor = tf.zeros([b, gh, gw, d]);
        offsets.forEach((o, k) => {
          const [ns, nx] = tf.tidy(() => {
            const gk = tf.reshape(tf.slice(gm, [0, k, 0, 0], [b, 1, ph, pw]), [b, ph, pw, 1]);
            const g = tf.mul(tf.sign(tf.sub(ss, dst(sx, o))), gk);
            const toDst = tf.pad(tf.neg(g), [[0, 0], [o.dy, gh - ph - o.dy], [rf + o.dx, gw - pw - rf - o.dx], [0, 0]]);
            return [tf.add(dsrc, g), tf.add(dx, toDst)];
          });
          dsrc.dispose();
          dx.dispose();
          dsrc = ns;
          dx = nx;
        });
        return tf.add(dx, tf.pad(dsrc, [[0, 0], [0, gh - ph], [rf, gw - pw - rf], [0, 0]]));
      },
    };
  });
}
