/**
 * The random walk's inner loop (ops/randomwalk.ts) as plain loops over typed arrays, issue 25.
 *
 * One application of T reads, for every pixel, its D directed taps (the K forward offsets, their
 * negatives and the self-loop: 69 at radius 5) from a pixel-major map whose channels come in
 * blocks of 4, and sums them in registers. TensorFlow's ops did the same work as a pad, an unfold
 * and one multiply + sum per dy row, each writing a full intermediate: memory-bound, about 250
 * map-sized passes per application. Here the map (16 bytes a pixel) stays in cache and the
 * weights stream once: 2.3-3.1x less time per application at 250x188, radius 5 (interleaved in
 * one process, bench/randomwalk.ts), the same maps within float rounding (sums are in doubles).
 *
 * Layout: a map is `blocks` Float32Arrays, each [rows, stride, 4] on the grid padded by ry rows
 * above and below and rx columns left and right (stride = w + 2 rx), zero in the margins, so a
 * tap never needs a bounds check: out-of-grid neighbours read 0 and also have weight 0.
 */

/** T in pixel-major form: weights[p * D + o] = T_ij for j = pixel p, i = p + tap o. */
export interface PackedTransition {
  height: number;
  width: number;
  ry: number;
  rx: number;
  /** Padded row length, w + 2 rx. */
  stride: number;
  /** Taps per pixel. */
  taps: number;
  /** Offset of tap o in a block, in floats: 4 (dy * stride + dx). */
  delta: Int32Array;
  /** [h * w, taps] */
  weights: Float32Array;
}

/** A map on the padded grid: ceil(C / 4) blocks of [rows, stride, 4]. */
export type BlockMap = Float32Array[];

/** Zero blocks for `channels` channels on the padded grid of `t`. */
export function emptyBlocks(t: PackedTransition, channels: number): BlockMap {
  const size = (t.height + 2 * t.ry) * t.stride * 4;
  return Array.from({ length: Math.ceil(channels / 4) }, () => new Float32Array(size));
}

/** Channel-major [C, h, w] values into blocks (channels C.. of the blocks untouched). */
export function toBlocks(t: PackedTransition, x: ArrayLike<number>, C: number, into: BlockMap): BlockMap {
  const { height: h, width: w, ry, rx, stride } = t;
  for (let c = 0; c < C; c++) {
    const b = into[c >> 2];
    const lane = c & 3;
    for (let y = 0; y < h; y++) {
      const row = ((y + ry) * stride + rx) * 4 + lane;
      const src = (c * h + y) * w;
      for (let i = 0; i < w; i++) b[row + 4 * i] = x[src + i];
    }
  }
  return into;
}

/** Channel c of blocks as an [h, w] row-major array. */
export function channelOf(t: PackedTransition, m: BlockMap, c: number): Float32Array {
  const { height: h, width: w, ry, rx, stride } = t;
  const out = new Float32Array(h * w);
  const b = m[c >> 2];
  for (let y = 0; y < h; y++) {
    const row = ((y + ry) * stride + rx) * 4 + (c & 3);
    for (let i = 0; i < w; i++) out[y * w + i] = b[row + 4 * i];
  }
  return out;
}

/**
 * out = src T on one block, or with `cheb` the Chebyshev recurrence step in place:
 * out = 2 src T - out (out holds v_{k-1} on entry, v_{k+1} on exit) and sum += ck * out.
 */
export function applyBlock(t: PackedTransition, src: Float32Array, out: Float32Array, cheb: { sum: Float32Array; ck: number } | null): void {
  const { height: h, width: w, ry, rx, stride, taps: D, delta, weights } = t;
  const sum = cheb?.sum;
  const ck = cheb?.ck ?? 0;
  let wi = 0;
  for (let y = 0; y < h; y++) {
    let q = ((y + ry) * stride + rx) * 4;
    for (let x = 0; x < w; x++, q += 4) {
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let o = 0; o < D; o++) {
        const wt = weights[wi++];
        const s = q + delta[o];
        a0 += wt * src[s];
        a1 += wt * src[s + 1];
        a2 += wt * src[s + 2];
        a3 += wt * src[s + 3];
      }
      if (cheb) {
        a0 = 2 * a0 - out[q];
        a1 = 2 * a1 - out[q + 1];
        a2 = 2 * a2 - out[q + 2];
        a3 = 2 * a3 - out[q + 3];
        if (ck !== 0) {
          sum![q] += ck * a0;
          sum![q + 1] += ck * a1;
          sum![q + 2] += ck * a2;
          sum![q + 3] += ck * a3;
        }
      }
      out[q] = a0;
      out[q + 1] = a1;
      out[q + 2] = a2;
      out[q + 3] = a3;
    }
  }
}

/** x T^steps by `steps` applications, one after the other; x is consumed. */
export function powerWalkBlocks(t: PackedTransition, x: BlockMap, steps: number): BlockMap {
  return x.map((b0) => {
    let cur: Float32Array = b0;
    let next: Float32Array = new Float32Array(b0.length);
    for (let s = 0; s < steps; s++) {
      applyBlock(t, cur, next, null);
      [cur, next] = [next, cur];
    }
    return cur;
  });
}

/** sum_k c_k x T_k(T) by v_{k+1} = 2 v_k T - v_{k-1} (c.length >= 2); x is consumed. */
export function chebyshevWalkBlocks(t: PackedTransition, x: BlockMap, c: Float64Array): BlockMap {
  return x.map((v0) => {
    let prev: Float32Array = v0;
    let cur: Float32Array = new Float32Array(v0.length);
    applyBlock(t, prev, cur, null);
    const sum = new Float32Array(v0.length);
    for (let i = 0; i < sum.length; i++) sum[i] = c[0] * prev[i] + c[1] * cur[i];
    for (let k = 2; k < c.length; k++) {
      applyBlock(t, cur, prev, { sum, ck: c[k] });
      [prev, cur] = [cur, prev];
    }
    return sum;
  });
}
