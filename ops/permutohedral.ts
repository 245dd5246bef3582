/**
 * Permutohedral lattice: fast high-dimensional Gaussian filtering.
 *
 * Computes, for N points with d-dimensional features f_i and values v_i (any number of channels),
 *
 *     out_i  ≈  s · Σ_j exp(-|f_i - f_j|² / 2) · v_j        (self term j = i included)
 *
 * in O(N · d²) to build and O((N + M) · d · channels) per filtering (M = lattice vertices used,
 * M <= N · (d + 1)), instead of the O(N²) direct sum. The scale s is NOT calibrated (it depends on
 * how densely points fill the lattice), so callers normalise: the dense CRF divides by the filtered
 * all-ones vector (see ops/crf.ts), which makes the result independent of s.
 *
 * Algorithm: Adams, Baek & Davis, "Fast High-Dimensional Filtering Using the Permutohedral Lattice",
 * Eurographics 2010. Conventions (feature scaling sqrt(2/3)·(d+1), the [1/2, 1, 1/2] blur along each
 * of the d+1 lattice axes, slice scale 1/(1 + 2^-d)) follow Krähenbühl's densecrf as vendored by
 * pydensecrf (densecrf/src/permutohedral.cpp), so that CRF parameters published for pydensecrf
 * (IRN, PSA) mean the same kernel widths here. Written from the paper; no code is copied.
 *
 * Steps: (1) embed each feature in the hyperplane H_d = {x in R^(d+1) : Σx = 0} and find the
 * enclosing simplex of the permutohedral lattice A*_d and the point's barycentric weights;
 * (2) splat: each value is spread onto its d+1 simplex vertices with those weights;
 * (3) blur: a separable [1/2, 1, 1/2] filter along each of the d+1 lattice directions;
 * (4) slice: read back at each point with the same barycentric weights.
 * The lattice (vertices, per-point vertex ids and weights, blur neighbours) depends only on the
 * features, so build it once and filter many value arrays (all classes of all mean-field iterations).
 */

/** Open-addressing hash map from integer lattice keys (d coordinates) to dense vertex ids. */
class LatticeHash {
  private readonly d: number;
  private keys: Int32Array;
  private table: Int32Array;
  private mask: number;
  size = 0;

  constructor(d: number, expected: number) {
    this.d = d;
    let cap = 16;
    while (cap < 2 * expected) cap *= 2;
    this.table = new Int32Array(cap).fill(-1);
    this.mask = cap - 1;
    this.keys = new Int32Array((cap >>> 1) * d + d);
  }

  private hash(key: Int32Array): number {
    let h = 0;
    for (let k = 0; k < this.d; k++) h = Math.imul(h + key[k], 1664525) + 1013904223;
    h ^= h >>> 15;
    h = Math.imul(h, 0x2c1b3c6d);
    h ^= h >>> 12;
    return h & this.mask;
  }

  private grow(): void {
    const d = this.d;
    const cap = this.table.length * 2;
    this.table = new Int32Array(cap).fill(-1);
    this.mask = cap - 1;
    const keys = new Int32Array((cap >>> 1) * d + d);
    keys.set(this.keys.subarray(0, this.size * d));
    this.keys = keys;
    const scratch = new Int32Array(d);
    for (let e = 0; e < this.size; e++) {
      for (let k = 0; k < d; k++) scratch[k] = keys[e * d + k];
      let h = this.hash(scratch);
      while (this.table[h] >= 0) h = (h + 1) & this.mask;
      this.table[h] = e;
    }
  }

  /** Vertex id of `key`, or -1 when absent (and `create` is false). */
  find(key: Int32Array, create: boolean): number {
    if (create && 2 * (this.size + 1) > this.table.length) this.grow();
    const d = this.d;
    const keys = this.keys;
    let h = this.hash(key);
    while (true) {
      const e = this.table[h];
      if (e < 0) {
        if (!create) return -1;
        keys.set(key.subarray(0, d), this.size * d);
        this.table[h] = this.size;
        return this.size++;
      }
      let same = true;
      const base = e * d;
      for (let k = 0; k < d; k++) {
        if (keys[base + k] !== key[k]) {
          same = false;
          break;
        }
      }
      if (same) return e;
      h = (h + 1) & this.mask;
    }
  }

  key(e: number, out: Int32Array): void {
    const d = this.d;
    for (let k = 0; k < d; k++) out[k] = this.keys[e * d + k];
  }
}

/** Optional per-point scales and accumulation for `PermutohedralLattice.filter`. */
export interface LatticeFilterOptions {
  /** Multiplies each point's values before splatting (length N). */
  inScale?: Float32Array;
  /** Multiplies each point's result after slicing (length N). */
  outScale?: Float32Array;
  /** Add into `out` instead of overwriting it (needs `out`). */
  accumulate?: boolean;
}

/**
 * A permutohedral lattice built over N feature vectors of dimension d; `filter` applies the
 * (approximate, unnormalised) Gaussian kernel matrix K, K_ij ≈ s·exp(-|f_i - f_j|²/2), to
 * multi-channel values. Scale features by 1/σ per dimension before building to get width σ.
 *
 * Reusable beyond the CRF (e.g. bilateral smoothing of affinity maps): build once per image.
 */
export class PermutohedralLattice {
  /** Number of points. */
  readonly N: number;
  /** Feature dimension. */
  readonly d: number;
  /** Number of lattice vertices touched by the points. */
  readonly M: number;
  /** Per point, the ids + 1 of its d+1 enclosing-simplex vertices (slot 0 is the empty vertex): [N, d+1]. */
  readonly offsets: Int32Array;
  /** Per point, the barycentric weights matching `offsets`: [N, d+1]; each row sums to 1. */
  readonly weights: Float32Array;
  /** Slice scale 1/(1 + 2^-d) that makes a lattice vertex's own response 1 (densecrf's "alpha"). */
  get alpha(): number {
    return 1 / (1 + Math.pow(2, -this.d));
  }
  /** Per lattice axis j and vertex i, the two blur neighbours (+1; 0 = absent): [d+1, M, 2]. */
  private readonly neighbours: Int32Array;
  /** The blur neighbours, read-only: for kernels that blur elsewhere (ops/crf_wasm.ts). */
  get blurNeighbours(): Readonly<Int32Array> {
    return this.neighbours;
  }

  private constructor(N: number, d: number, M: number, offsets: Int32Array, weights: Float32Array, neighbours: Int32Array) {
    this.N = N;
    this.d = d;
    this.M = M;
    this.offsets = offsets;
    this.weights = weights;
    this.neighbours = neighbours;
  }

  /**
   * Build the lattice. `features` is [N, d] row-major, already divided by the kernel widths.
   */
  static build(features: Float32Array | Float64Array, N: number, d: number): PermutohedralLattice {
    if (!Number.isInteger(N) || N < 0) throw new Error(`PermutohedralLattice: bad N ${N}`);
    if (!Number.isInteger(d) || d < 1) throw new Error(`PermutohedralLattice: bad d ${d}`);
    if (features.length !== N * d) throw new Error(`PermutohedralLattice: features length ${features.length} != N*d = ${N * d}`);
    const d1 = d + 1;
    const hash = new LatticeHash(d, N);
    const offsets = new Int32Array(N * d1);
    const weights = new Float32Array(N * d1);

    // Scale per embedded axis (the diagonal of E in Adams et al. 2010, p. 5), times the expected
    // standard deviation of the lattice blur, sqrt(2/3)·(d+1) (p. 6), as densecrf does.
    const invStd = Math.sqrt(2 / 3) * d1;
    const scale = new Float64Array(d);
    for (let i = 0; i < d; i++) scale[i] = invStd / Math.sqrt((i + 1) * (i + 2));

    const elevated = new Float64Array(d1);
    const rem0 = new Int32Array(d1);
    const rank = new Int32Array(d1);
    const bary = new Float64Array(d + 2);
    const key = new Int32Array(d);

    for (let p = 0; p < N; p++) {
      const f = p * d;
      // Embed: elevated = E·f, a point of H_d (coordinates sum to 0).
      let sm = 0;
      for (let j = d; j > 0; j--) {
        const cf = features[f + j - 1] * scale[j - 1];
        elevated[j] = sm - j * cf;
        sm += cf;
      }
      elevated[0] = sm;

      // Nearest remainder-0 lattice point: round each coordinate to a multiple of d+1. The
      // coordinate sum of the rounded point, divided by d+1, says how far off H_d it fell.
      let sum = 0;
      for (let i = 0; i <= d; i++) {
        const v = elevated[i] / d1;
        const up = Math.ceil(v) * d1;
        const down = Math.floor(v) * d1;
        rem0[i] = up - elevated[i] < elevated[i] - down ? up : down;
        sum += rem0[i] / d1;
      }

      // Rank the differences (0 = largest); ties broken by index.
      rank.fill(0);
      for (let i = 0; i < d; i++) {
        const di = elevated[i] - rem0[i];
        for (let j = i + 1; j <= d; j++) {
          if (di < elevated[j] - rem0[j]) rank[i]++;
          else rank[j]++;
        }
      }
      // Bring the rounded point back onto H_d by moving the extreme coordinates by ±(d+1).
      for (let i = 0; i <= d; i++) {
        rank[i] += sum;
        if (rank[i] < 0) {
          rank[i] += d1;
          rem0[i] += d1;
        } else if (rank[i] > d) {
          rank[i] -= d1;
          rem0[i] -= d1;
        }
      }

      // Barycentric coordinates within the simplex (Adams et al. 2010, p. 10).
      bary.fill(0);
      for (let i = 0; i <= d; i++) {
        const v = (elevated[i] - rem0[i]) / d1;
        bary[d - rank[i]] += v;
        bary[d - rank[i] + 1] -= v;
      }
      bary[0] += 1 + bary[d + 1];

      // The simplex's vertices: remainder-r vertex = rem0 + canonical_r permuted by rank, where
      // canonical_r has r in its first d+1-r coordinates and r-(d+1) in the rest.
      for (let r = 0; r <= d; r++) {
        for (let i = 0; i < d; i++) key[i] = rem0[i] + (rank[i] <= d - r ? r : r - d1);
        offsets[p * d1 + r] = hash.find(key, true) + 1;
        weights[p * d1 + r] = bary[r];
      }
    }

    // Blur neighbours along each of the d+1 lattice directions. A step along direction j adds
    // (1, ..., 1, -d, 1, ..., 1) (the -d at j) in R^(d+1); only the first d coordinates are keyed.
    // The relation is symmetric (u is v's first neighbour along j iff v is u's second), so one
    // lookup per vertex and direction fills both: half the hash lookups of the build.
    const M = hash.size;
    const neighbours = new Int32Array(d1 * M * 2);
    const k0 = new Int32Array(d);
    const n1 = new Int32Array(d);
    for (let v = 0; v < M; v++) {
      hash.key(v, k0);
      for (let j = 0; j <= d; j++) {
        for (let k = 0; k < d; k++) n1[k] = k0[k] - 1;
        if (j < d) n1[j] = k0[j] + d;
        const u = hash.find(n1, false);
        if (u >= 0) {
          neighbours[(j * M + v) * 2] = u + 1;
          neighbours[(j * M + u) * 2 + 1] = v + 1;
        }
      }
    }
    return new PermutohedralLattice(N, d, M, offsets, weights, neighbours);
  }

  /**
   * Splat `values` ([N, C] row-major, each point's row times `inScale[p]` when given) onto the
   * vertex buffer `buf` ([(M+1)·C], vertex v at (v+1)·C), adding to what is there.
   */
  splat(values: Float32Array, C: number, inScale: Float32Array | null, buf: Float32Array): void {
    const { N, offsets, weights } = this;
    const d1 = this.d + 1;
    for (let p = 0; p < N; p++) {
      const src = p * C;
      const s = inScale === null ? 1 : inScale[p];
      for (let r = 0; r < d1; r++) {
        const o = offsets[p * d1 + r] * C;
        const w = weights[p * d1 + r] * s;
        for (let c = 0; c < C; c++) buf[o + c] += w * values[src + c];
      }
    }
  }

  /**
   * Blur a splatted vertex buffer ([(M+1)·C]) along the d+1 lattice directions, ping-ponging with
   * `scratch` (same size); returns whichever of the two holds the result. Slot 0 (the empty
   * vertex) of both must be zero.
   */
  blur(buf: Float32Array, scratch: Float32Array, C: number): Float32Array {
    const { d, M } = this;
    const nb = this.neighbours;
    let cur = buf;
    let nxt = scratch;
    for (let j = 0; j <= d; j++) {
      const base = j * M * 2;
      for (let v = 0; v < M; v++) {
        const o = (v + 1) * C;
        const a = nb[base + 2 * v] * C;
        const b = nb[base + 2 * v + 1] * C;
        for (let c = 0; c < C; c++) nxt[o + c] = cur[o + c] + 0.5 * (cur[a + c] + cur[b + c]);
      }
      const t = cur;
      cur = nxt;
      nxt = t;
    }
    return cur;
  }

  /**
   * Filter `values` ([N, channels] row-major) with the lattice's Gaussian kernel (self included):
   *     out_i = outScale_i · Σ_j K_ij · inScale_j · values_j        (`accumulate`: out_i += …)
   * The optional per-point scales (length N) fuse a diagonal normalisation D^-1/2 K D^-1/2 or
   * D^-1 K into splat and slice, so callers need no extra passes over the N·channels values.
   * Writes into `out` when given (must not alias `values`), else allocates; returns it.
   */
  filter(values: Float32Array, channels: number, out?: Float32Array, opts: LatticeFilterOptions = {}): Float32Array {
    const { N, d, M } = this;
    const C = channels;
    if (!(Number.isInteger(C) && C >= 1)) throw new Error(`PermutohedralLattice.filter: bad channel count ${C}`);
    if (values.length !== N * C) throw new Error(`PermutohedralLattice.filter: values length ${values.length} != N*channels = ${N * C}`);
    const result = out ?? new Float32Array(N * C);
    if (result.length !== N * C) throw new Error('PermutohedralLattice.filter: out has the wrong length');
    if (result === values || (result.buffer === values.buffer && result.byteOffset < values.byteOffset + values.byteLength && values.byteOffset < result.byteOffset + result.byteLength)) {
      throw new Error('PermutohedralLattice.filter: out must not alias values');
    }
    const { inScale, outScale } = opts;
    const accumulate = opts.accumulate === true && out !== undefined;
    if (inScale && inScale.length !== N) throw new Error('PermutohedralLattice.filter: inScale must have length N');
    if (outScale && outScale.length !== N) throw new Error('PermutohedralLattice.filter: outScale must have length N');
    const d1 = d + 1;
    const offsets = this.offsets;
    const weights = this.weights;
    // Vertex v's values live at (v+1)*C; slot 0 stays zero and stands for "no vertex".
    const cur = new Float32Array((M + 1) * C);
    const nxt = new Float32Array((M + 1) * C);

    this.splat(values, C, inScale ?? null, cur);
    // Blur: [1/2, 1, 1/2] along each lattice direction in turn.
    const blurred = this.blur(cur, nxt, C);

    // Slice, scaled so a lattice vertex's own response is 1.
    const alpha = this.alpha;
    if (!accumulate) result.fill(0);
    for (let p = 0; p < N; p++) {
      const dst = p * C;
      const s = outScale ? outScale[p] * alpha : alpha;
      for (let r = 0; r < d1; r++) {
        const o = offsets[p * d1 + r] * C;
        const w = weights[p * d1 + r] * s;
        for (let c = 0; c < C; c++) result[dst + c] += w * blurred[o + c];
      }
    }
    return result;
  }
}
