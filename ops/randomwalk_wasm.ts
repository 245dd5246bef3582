/**
 * The random walk's propagation (ops/randomwalk.ts `propagate`) in WebAssembly SIMD: one fused
 * pass per application of T instead of ~4 (2 ry + 1) TensorFlow ops, four grid columns at a time.
 * It computes what the TensorFlow step computes, with the terms summed in another order (float32
 * throughout): maps agree to float rounding (test/ops/randomwalk_wasm.test.ts).
 * Deterministic: the same bytes on every thread and machine (no fused multiply-add, no relaxed SIMD).
 *
 * Layout in the module's memory (floats; W = the transition's padded width, P = W + 2 rx):
 * - maps [h + 2 ry, C, P]: row y + ry, channel c, column x + rx holds x_c(y, x); the border is 0;
 * - weights [h, J, W], J = G (2 rx + 1): for pixel (y, x), the weight of its neighbour j = (group
 *   g, dx = k - rx), i.e. the transition's groups side by side;
 * - xoff i32 [J]: byte offset of neighbour j from the pixel's own column in row y:
 *   ((ry + dy_g) C P + k) * 4.
 * A pass writes out = alpha (x T) - beta out for a block of at most 8 channels (their accumulators
 * stay in registers), so the Chebyshev recurrence v_{k+1} = 2 v_k T - v_{k-1} overwrites v_{k-1}.
 */
import { instantiate } from './wasm_asm.js';

/** Channels per pass: their accumulators live in registers. */
const BLOCK = 8;

function rep(n: number, f: (i: number) => string): string {
  return Array.from({ length: n }, (_, i) => f(i)).join('\n');
}

/**
 * WAT of `pass<b>` for a block of b channels: for rows y < h, columns x < W in steps of 4,
 * channels c0..c0+b-1: out = alpha sum_j w_j src(pixel + xoff_j) - beta out. Byte strides: cs
 * (one channel row, P floats), rs (one map row, C P floats); top: the byte offset of row ry,
 * column rx.
 */
function passWat(b: number): string {
  return String.raw`
  (func $pass${b} (export "pass${b}") (param $src i32) (param $out i32) (param $wts i32) (param $xoff i32) (param $J i32)
      (param $h i32) (param $W i32) (param $cs i32) (param $rs i32) (param $c0 i32) (param $top i32) (param $alpha f32) (param $beta f32)
    (local $y i32) (local $x i32) (local $j i32) (local $base i32) (local $wp i32) (local $wstep i32) (local $p i32) (local $o i32)
    (local $wv v128) (local $va v128) (local $vb v128)
    ${rep(b, (i) => `(local $a${i} v128)`)}
    local.get $alpha f32x4.splat local.set $va
    local.get $beta f32x4.splat local.set $vb
    local.get $W i32.const 2 i32.shl local.set $wstep
    block $rows_done loop $rows
      local.get $y local.get $h i32.ge_u br_if $rows_done
      i32.const 0 local.set $x
      block $cols_done loop $cols
        local.get $x local.get $W i32.ge_u br_if $cols_done
        ${rep(b, (i) => `v128.const i32x4 0 0 0 0 local.set $a${i}`)}
        ;; base: src row y, channel c0, column x (neighbour j adds xoff_j); wp: weights (y, 0, x)
        local.get $src local.get $y local.get $rs i32.mul i32.add local.get $c0 local.get $cs i32.mul i32.add
        local.get $x i32.const 2 i32.shl i32.add local.set $base
        local.get $wts local.get $y local.get $J i32.mul local.get $W i32.mul local.get $x i32.add i32.const 2 i32.shl i32.add local.set $wp
        i32.const 0 local.set $j
        block $nb_done loop $nb
          local.get $j local.get $J i32.ge_u br_if $nb_done
          local.get $wp v128.load local.set $wv
          local.get $base local.get $xoff local.get $j i32.const 2 i32.shl i32.add i32.load i32.add local.set $p
          ${rep(b, (i) => `${i > 0 ? 'local.get $p local.get $cs i32.add local.set $p ' : ''}local.get $a${i} local.get $p v128.load local.get $wv f32x4.mul f32x4.add local.set $a${i}`)}
          local.get $wp local.get $wstep i32.add local.set $wp
          local.get $j i32.const 1 i32.add local.set $j
          br $nb
        end end
        ;; o: out row y + ry, channel c0, column x + rx
        local.get $out local.get $top i32.add local.get $y local.get $rs i32.mul i32.add local.get $c0 local.get $cs i32.mul i32.add
        local.get $x i32.const 2 i32.shl i32.add local.set $o
        ${rep(b, (i) => `${i > 0 ? 'local.get $o local.get $cs i32.add local.set $o ' : ''}local.get $o local.get $a${i} local.get $va f32x4.mul local.get $o v128.load local.get $vb f32x4.mul f32x4.sub v128.store`)}
        local.get $x i32.const 4 i32.add local.set $x
        br $cols
      end end
      local.get $y i32.const 1 i32.add local.set $y
      br $rows
    end end)`;
}

/** The module: pass1..pass8 and `axpy` (y += a x over n floats, n % 4 = 0). */
const WALK_WAT = String.raw`
(module
  (memory (export "memory") 1)
  ${rep(BLOCK, (i) => passWat(i + 1))}

  (func $axpy (export "axpy") (param $y i32) (param $x i32) (param $n i32) (param $a f32)
    (local $end i32) (local $va v128)
    local.get $a f32x4.splat local.set $va
    local.get $y local.get $n i32.const 2 i32.shl i32.add local.set $end
    block $done loop $l
      local.get $y local.get $end i32.ge_u br_if $done
      local.get $y local.get $y v128.load local.get $x v128.load local.get $va f32x4.mul f32x4.add v128.store
      local.get $y i32.const 16 i32.add local.set $y
      local.get $x i32.const 16 i32.add local.set $x
      br $l
    end end)
)`;

type Pass = (src: number, out: number, wts: number, xoff: number, J: number, h: number, W: number, cs: number, rs: number, c0: number, top: number, alpha: number, beta: number) => void;

interface WalkExports {
  memory: { buffer: ArrayBuffer; grow(pages: number): number };
  axpy(y: number, x: number, n: number, a: number): void;
  [pass: `pass${number}`]: Pass;
}

/** This thread's instance, compiled on first use; null where WebAssembly SIMD is unavailable. */
let instance: WalkExports | null | undefined;

function walkExports(): WalkExports | null {
  if (instance === undefined) {
    instance = instantiate<WalkExports>(WALK_WAT);
  }
  return instance;
}

/** The transition as the wasm walk reads it (from ops/randomwalk.ts's Transition). */
export interface WalkTransition {
  height: number;
  width: number;
  /** W: a multiple of 16 (weights beyond `width` are 0). */
  paddedWidth: number;
  ry: number;
  rx: number;
  /** Per dy group: its dy and weights [h, 2 rx + 1, W] (the group tensor's data). */
  groups: { dy: number; weights: Float32Array }[];
}

/** Where walkWasm's data lies in the module's memory (byte offsets) and the strides of its maps. */
interface WalkLayout { J: number; xoffAt: number; maps: number[]; mapLen: number; P: number; cs: number; rs: number; top: number }

/** Copy the weights, neighbour offsets and x [C, h, w] into the module's memory (see the file comment). */
function loadWalk(m: WalkExports, x: Float32Array, C: number, t: WalkTransition): WalkLayout {
  const { height: h, width: w, paddedWidth: W, ry, rx } = t;
  const kw = 2 * rx + 1;
  const J = t.groups.length * kw;
  const P = W + 2 * rx;
  const mapLen = Math.ceil(((h + 2 * ry) * C * P) / 4) * 4;
  // Regions (16-aligned): weights, xoff, then 3 maps (cur, prev / next, sum).
  const xoffAt = h * J * W * 4;
  const maps = [0, 1, 2].map((i) => Math.ceil((xoffAt + J * 4) / 16) * 16 + i * mapLen * 4);
  const need = maps[2] + mapLen * 4;
  const have = m.memory.buffer.byteLength;
  if (need > have) m.memory.grow(Math.ceil((need - have) / 65536));
  const mem = m.memory.buffer;
  const wts = new Float32Array(mem, 0, h * J * W);
  const xoff = new Int32Array(mem, xoffAt, J);
  t.groups.forEach((g, gi) => {
    for (let y = 0; y < h; y++) wts.set(g.weights.subarray(y * kw * W, (y + 1) * kw * W), (y * J + gi * kw) * W);
    for (let k = 0; k < kw; k++) xoff[gi * kw + k] = ((ry + g.dy) * C * P + k) * 4;
  });
  for (const at of maps) new Float32Array(mem, at, mapLen).fill(0);
  const x0 = new Float32Array(mem, maps[0], mapLen);
  for (let c = 0; c < C; c++) {
    for (let y = 0; y < h; y++) x0.set(x.subarray((c * h + y) * w, (c * h + y + 1) * w), ((y + ry) * C + c) * P + rx);
  }
  return { J, xoffAt, maps, mapLen, P, cs: P * 4, rs: C * P * 4, top: ry * C * P * 4 + rx * 4 };
}

/**
 * x [C, h, w] -> x T^walk by `walk` plain steps, or, given coefficients, sum_k walk_k v_k where
 * v_0 = x, v_1 = x T and v_{k+1} = 2 v_k T - v_{k-1} (Chebyshev). null where WebAssembly SIMD is
 * unavailable.
 */
export function walkWasm(x: Float32Array, C: number, t: WalkTransition, walk: number | Float64Array): Float32Array | null {
  const m = walkExports();
  if (!m) return null;
  const L = loadWalk(m, x, C, t);
  /** out = alpha (src T) - beta out, 8 channels at a time. */
  const apply = (src: number, out: number, alpha: number, beta: number) => {
    for (let c0 = 0; c0 < C; c0 += BLOCK) m[`pass${Math.min(BLOCK, C - c0)}`](src, out, 0, L.xoffAt, L.J, t.height, t.paddedWidth, L.cs, L.rs, c0, L.top, alpha, beta);
  };
  let [cur, other, sum] = L.maps;
  if (typeof walk === 'number') {
    for (let s = 0; s < walk; s++) {
      apply(cur, other, 1, 0);
      [cur, other] = [other, cur];
    }
    sum = cur;
  } else {
    const coef = walk;
    const steps = coef.length - 1;
    m.axpy(sum, cur, L.mapLen, coef[0]); // v_0 = x
    let prev = cur;
    cur = other;
    if (steps >= 1) {
      apply(prev, cur, 1, 0); // v_1 = x T
      m.axpy(sum, cur, L.mapLen, coef[1]);
    }
    for (let k = 2; k <= steps; k++) {
      apply(cur, prev, 2, 1); // prev <- 2 v_{k-1} T - v_{k-2} = v_k
      [prev, cur] = [cur, prev];
      if (coef[k] !== 0) m.axpy(sum, cur, L.mapLen, coef[k]);
    }
  }
  return readWalk(new Float32Array(m.memory.buffer, sum, L.mapLen), C, t, L.P);
}

/** The interior of a padded map [h + 2 ry, C, P] as [C, h, w]. */
function readWalk(res: Float32Array, C: number, t: WalkTransition, P: number): Float32Array {
  const { height: h, width: w, ry, rx } = t;
  const out = new Float32Array(C * h * w);
  for (let c = 0; c < C; c++) {
    for (let y = 0; y < h; y++) {
      const at = ((y + ry) * C + c) * P + rx;
      out.set(res.subarray(at, at + w), (c * h + y) * w);
    }
  }
  return out;
}
