/**
 * The dense CRF's mean field (ops/crf.ts) in WebAssembly SIMD: the lattice blur and the fused
 * per-pixel pass (slice, softmax, splat) on four classes at a time. It computes what crf.ts's JS
 * mean field computes, in float32 throughout (the JS one sums messages in float64): marginals agree
 * to 2e-6 on the tests' small scenes (test/ops/crf.test.ts) and to about 1e-4 on 320 px photos,
 * where the whole CRF takes 0.34 s instead of 0.77 (23 classes, uniform unary, 10 iterations, 2026-12-05;
 * 0.38 s instead of 0.86 on the MSRC-v2 segmenter's probabilities).
 * Deterministic: the same bytes on every thread and machine (no fused multiply-add, no relaxed SIMD).
 *
 * Layout in the module's memory: every [·, C] array is stored with C padded to a multiple of 4
 * (`row` bytes per pixel or vertex); padded unary entries are huge, so their probabilities are
 * about 1e-38 and never change a sum. Lattice vertex ids are stored as byte offsets of their row
 * (id + 1 times `row`: row 0 is the zero "no vertex" row, as in permutohedral.ts).
 */
import { instantiate } from './wasm_asm.js';
import type { PermutohedralLattice } from './permutohedral.js';

/** `f(0) f(1) ... f(n-1)`, one per line: the kernels are unrolled over the class vectors of a row. */
function rep(n: number, f: (i: number) => string): string {
  return Array.from({ length: n }, (_, i) => f(i)).join('\n');
}

/** A v128.const of four equal float32 lanes. */
function f4(x: number): string {
  return `v128.const f32x4 ${x} ${x} ${x} ${x}`;
}

/**
 * WAT: for each kernel descriptor $desc (32 bytes from $kern: d1, offsets, weights, sliceScale,
 * inScale or 0, vert, next) and each of pixel $p's d1 vertices in it: $w = the vertex weight times
 * $s (set by `scale`), $base = the vertex row in the buffer whose pointer is at byte `buf` of the
 * descriptor; then `body`. Labels get the suffix `id`.
 */
function eachVertex(id: string, scale: string, buf: number, body: string): string {
  return `local.get $kern local.set $desc
        block $k${id}_done loop $k${id}
          local.get $desc local.get $kend i32.ge_u br_if $k${id}_done
          local.get $desc i32.load local.get $p i32.mul i32.const 2 i32.shl local.tee $off
          local.get $desc i32.load offset=8 i32.add local.set $wt
          local.get $off local.get $desc i32.load offset=4 i32.add local.tee $off
          local.get $desc i32.load i32.const 2 i32.shl i32.add local.set $end
          ${scale}
          block $r${id}_done loop $r${id}
            local.get $off local.get $end i32.ge_u br_if $r${id}_done
            local.get $wt f32.load local.get $s f32.mul f32x4.splat local.set $w
            local.get $off i32.load local.get $desc i32.load offset=${buf} i32.add local.set $base
            ${body}
            local.get $off i32.const 4 i32.add local.set $off
            local.get $wt i32.const 4 i32.add local.set $wt
            br $r${id}
          end end
          local.get $desc i32.const 32 i32.add local.set $desc
          br $k${id}
        end end`;
}

/**
 * The softmax's exp is 0 below this (relative to the pixel's largest class): e^-40 = 4e-18 is
 * invisible in float32 beside that class's share of at least 1 / C. Smaller values, once splatted
 * and blurred, become subnormal floats, which Intel cores compute through microcode assists (on a
 * 2-core Xeon the mean field ran 9x slower for 5 classes, whose 3 padding lanes are all ~0, and
 * 3.5x for 21; `npm run bench -- crf`) and which WebAssembly cannot flush to zero the way
 * TensorFlow's threads do.
 */
const EXP_FLUSH = -40;

/**
 * The kernels, in the WAT subset of wasm_asm.ts, for rows of `nv` vectors (C <= 4·nv classes):
 * each pixel's messages live in nv registers ($a0..), so nothing but the lattice goes through memory.
 */
function crfWat(nv: number): string {
  const row = 16 * nv;
  const regs = rep(nv, (i) => `(local $a${i} v128)`);
  return String.raw`
(module
  (memory (export "memory") 1)

  ;; PermutohedralLattice.blur: out = v + (left + right) / 2 along each of the d1 lattice axes,
  ;; ping-ponging between cur and nxt; returns the buffer holding the result. nb: [d1, M, 2] byte
  ;; offsets of each vertex's two neighbours (0: the zero row).
  (func $blur (export "blur") (param $cur i32) (param $nxt i32) (param $nb i32) (param $M i32) (param $d1 i32) (result i32)
    (local $j i32) (local $o i32) (local $end i32) (local $pa i32) (local $pb i32) (local $t i32) (local $half v128)
    ${f4(0.5)} local.set $half
    block $axes_done loop $axes
      local.get $j local.get $d1 i32.ge_u br_if $axes_done
      i32.const ${row} local.set $o
      local.get $M i32.const 1 i32.add i32.const ${row} i32.mul local.set $end
      block $verts_done loop $verts
        local.get $o local.get $end i32.ge_u br_if $verts_done
        local.get $nb i32.load local.get $cur i32.add local.set $pa
        local.get $nb i32.load offset=4 local.get $cur i32.add local.set $pb
        ${rep(nv, (i) => `local.get $nxt local.get $o i32.add
        local.get $cur local.get $o i32.add v128.load offset=${16 * i}
        local.get $pa v128.load offset=${16 * i} local.get $pb v128.load offset=${16 * i} f32x4.add local.get $half f32x4.mul
        f32x4.add v128.store offset=${16 * i}`)}
        local.get $nb i32.const 8 i32.add local.set $nb
        local.get $o i32.const ${row} i32.add local.set $o
        br $verts
      end end
      local.get $cur local.set $t local.get $nxt local.set $cur local.get $t local.set $nxt
      local.get $j i32.const 1 i32.add local.set $j
      br $axes
    end end
    local.get $cur)

  ;; exp(x) for x <= 0 lane-wise, float32: x = k ln2 + r (Cody-Waite), degree-6 Taylor in r,
  ;; 2^k from the exponent bits. At or below -40 it is 0 (see EXP_FLUSH).
  (func $exp (param $x v128) (result v128)
    (local $k v128) (local $r v128) (local $keep v128)
    local.get $x ${f4(EXP_FLUSH)} f32x4.gt local.set $keep
    local.get $x ${f4(-87)} f32x4.max local.tee $x
    ${f4(Math.LOG2E)} f32x4.mul f32x4.nearest local.set $k
    local.get $x local.get $k ${f4(0.693359375)} f32x4.mul f32x4.sub
    local.get $k ${f4(-2.1219444005469057e-4)} f32x4.mul f32x4.sub local.set $r
    local.get $r ${f4(1 / 720)} f32x4.mul ${f4(1 / 120)} f32x4.add
    local.get $r f32x4.mul ${f4(1 / 24)} f32x4.add
    local.get $r f32x4.mul ${f4(1 / 6)} f32x4.add
    local.get $r f32x4.mul ${f4(0.5)} f32x4.add
    local.get $r f32x4.mul ${f4(1)} f32x4.add
    local.get $r f32x4.mul ${f4(1)} f32x4.add
    local.get $k i32x4.trunc_sat_f32x4_s v128.const i32x4 127 127 127 127 i32x4.add i32.const 23 i32x4.shl
    f32x4.mul local.get $keep v128.and)

  ;; One mean-field pass over the N pixels (crf.ts meanField's loop body) for K kernels, each
  ;; described by 32 bytes at kern (eachVertex). Per pixel: a = Σ_k slice_k of its vert buffer
  ;; (when slice), Q_p = softmax(a - unary_p), then (when splat) Q_p splatted into each next.
  (func $pass (export "pass") (param $N i32) (param $unary i32) (param $Q i32) (param $kern i32) (param $K i32) (param $slice i32) (param $splat i32)
    (local $p i32) (local $desc i32) (local $kend i32) (local $off i32) (local $wt i32) (local $end i32) (local $base i32)
    (local $s f32) (local $w v128) (local $mx v128) (local $sum v128)
    ${regs}
    local.get $kern local.get $K i32.const 5 i32.shl i32.add local.set $kend
    block $pix_done loop $pix
      local.get $p local.get $N i32.ge_u br_if $pix_done
      ${rep(nv, (i) => `v128.const i32x4 0 0 0 0 local.set $a${i}`)}
      local.get $slice if $sl
        ${eachVertex('s', 'local.get $desc i32.load offset=12 local.get $p i32.const 2 i32.shl i32.add f32.load local.set $s', 20,
    rep(nv, (i) => `local.get $a${i} local.get $base v128.load offset=${16 * i} local.get $w f32x4.mul f32x4.add local.set $a${i}`))}
      end
      ;; softmax(a - unary_p), max-subtracted; Q_p stored, and kept in the registers for the splat
      local.get $p i32.const ${row} i32.mul local.tee $base local.get $unary i32.add local.set $off
      ${rep(nv, (i) => `local.get $a${i} local.get $off v128.load offset=${16 * i} f32x4.sub local.set $a${i}`)}
      local.get $a0 local.set $mx
      ${rep(nv, (i) => `local.get $mx local.get $a${i} f32x4.max local.set $mx`)}
      local.get $mx f32x4.extract_lane 0 local.get $mx f32x4.extract_lane 1 f32.max
      local.get $mx f32x4.extract_lane 2 local.get $mx f32x4.extract_lane 3 f32.max f32.max f32x4.splat local.set $mx
      v128.const i32x4 0 0 0 0 local.set $sum
      ${rep(nv, (i) => `local.get $a${i} local.get $mx f32x4.sub call $exp local.tee $a${i} local.get $sum f32x4.add local.set $sum`)}
      f32.const 1
      local.get $sum f32x4.extract_lane 0 local.get $sum f32x4.extract_lane 1 f32.add
      local.get $sum f32x4.extract_lane 2 local.get $sum f32x4.extract_lane 3 f32.add f32.add
      f32.div f32x4.splat local.set $sum
      local.get $base local.get $Q i32.add local.set $off
      ${rep(nv, (i) => `local.get $off local.get $a${i} local.get $sum f32x4.mul local.tee $a${i} v128.store offset=${16 * i}`)}
      local.get $splat if $sp
        ${eachVertex('p', `f32.const 1 local.set $s
          local.get $desc i32.load offset=16 if $has_in
            local.get $desc i32.load offset=16 local.get $p i32.const 2 i32.shl i32.add f32.load local.set $s
          end`, 24, rep(nv, (i) => `local.get $base local.get $base v128.load offset=${16 * i} local.get $a${i} local.get $w f32x4.mul f32x4.add v128.store offset=${16 * i}`))}
      end
      local.get $p i32.const 1 i32.add local.set $p
      br $pix
    end end)
)`;
}

interface CrfExports {
  memory: { buffer: ArrayBuffer; grow(pages: number): number };
  blur(cur: number, nxt: number, nb: number, M: number, d1: number): number;
  pass(N: number, unary: number, Q: number, kern: number, K: number, slice: number, splat: number): void;
}

/** This thread's instance per row width (nv vectors), compiled on first use; null where WebAssembly SIMD is unavailable. */
const instances = new Map<number, CrfExports | null>();

function crfExports(nv: number): CrfExports | null {
  let x = instances.get(nv);
  if (x === undefined) {
    x = instantiate<CrfExports>(crfWat(nv));
    instances.set(nv, x);
  }
  return x;
}

/** One kernel of the mean field: its lattice, splat scale (or null) and slice scale (outScale · alpha · w). */
export interface WasmMeanFieldKernel {
  lattice: PermutohedralLattice;
  inScale: Float32Array | null;
  sliceScale: Float32Array;
}

/** Start offsets of consecutive regions of the given byte sizes, each 16-byte aligned, and the end. */
function layout(sizes: number[]): number[] {
  const at: number[] = [];
  let end = 0;
  for (const s of sizes) {
    at.push(end);
    end += Math.ceil(s / 16) * 16;
  }
  at.push(end);
  return at;
}

/** Views of the module's memory (valid until it grows). */
function views(x: CrfExports) {
  const mem = x.memory.buffer;
  return { f32: (ptr: number, n: number) => new Float32Array(mem, ptr, n), i32: (ptr: number, n: number) => new Int32Array(mem, ptr, n) };
}

/** A kernel's regions: offsets, weights, sliceScale, inScale, neighbours, then its 3 vertex buffers. */
function kernelSizes(k: WasmMeanFieldKernel, N: number, row: number): number[] {
  const d1 = k.lattice.d + 1;
  const vb = (k.lattice.M + 1) * row;
  return [N * d1 * 4, N * d1 * 4, N * 4, N * 4, d1 * k.lattice.M * 8, vb, vb, vb];
}

/** Copy kernel k into its regions `a` (vertex ids as byte offsets of their rows), zero its buffers; its descriptor's 8 ints. */
function copyKernel(x: CrfExports, k: WasmMeanFieldKernel, a: number[], N: number, row: number): number[] {
  const { f32, i32 } = views(x);
  const { lattice } = k;
  const d1 = lattice.d + 1;
  const off = i32(a[0], N * d1);
  for (let i = 0; i < N * d1; i++) off[i] = lattice.offsets[i] * row;
  f32(a[1], N * d1).set(lattice.weights);
  f32(a[2], N).set(k.sliceScale);
  if (k.inScale) f32(a[3], N).set(k.inScale);
  const nb = i32(a[4], d1 * lattice.M * 2);
  const src = lattice.blurNeighbours;
  for (let i = 0; i < nb.length; i++) nb[i] = src[i] * row;
  for (const b of a.slice(5, 8)) f32(b, ((lattice.M + 1) * row) / 4).fill(0);
  // d1, offsets, weights, sliceScale, inScale (0: none), vert (set per iteration), next, -
  return [d1, a[0], a[1], a[2], k.inScale ? a[3] : 0, 0, a[5], 0];
}

/**
 * Mean-field marginals Q [N, C] after T updates Q <- softmax(-U + Σ_k K̂_k Q) from Q = softmax(-U),
 * as crf.ts meanField (each kernel's weight folded into its sliceScale). unary [N, C]. null where
 * WebAssembly SIMD is unavailable (Node 16.4+ has it): the caller runs the JS mean field.
 */
export function meanFieldWasm(unary: Float32Array, N: number, C: number, T: number, kernels: WasmMeanFieldKernel[]): Float32Array | null {
  const nv = Math.ceil(C / 4);
  const x = crfExports(nv);
  if (!x) return null;
  const Cp = 4 * nv;
  const row = Cp * 4;
  const K = kernels.length;
  // Regions: unary, Q, the K descriptors, then each kernel's (kernelSizes).
  const at = layout([N * row, N * row, 32 * K, ...kernels.flatMap((k) => kernelSizes(k, N, row))]);
  const need = at[at.length - 1];
  const have = x.memory.buffer.byteLength;
  if (need > have) x.memory.grow(Math.ceil((need - have) / 65536));
  const { f32, i32 } = views(x);
  const [unaryAt, qAt, descAt] = at;
  const U = f32(unaryAt, N * Cp).fill(1e30);
  for (let p = 0; p < N; p++) U.set(unary.subarray(p * C, (p + 1) * C), p * Cp);
  const regions = kernels.map((_, ki) => at.slice(3 + 8 * ki, 11 + 8 * ki));
  const desc = i32(descAt, 8 * K);
  kernels.forEach((k, ki) => desc.set(copyKernel(x, k, regions[ki], N, row), 8 * ki));
  // [splatted, scratch, next] per kernel; Q = softmax(-U) is splatted into the first.
  const bufs = regions.map((a) => a.slice(5, 8));
  x.pass(N, unaryAt, qAt, descAt, K, 0, T > 0 ? 1 : 0);
  for (let it = 0; it < T; it++) {
    const last = it === T - 1;
    kernels.forEach((k, ki) => {
      const [splatted, scratch, next] = bufs[ki];
      const blurred = x.blur(splatted, scratch, regions[ki][4], k.lattice.M, k.lattice.d + 1);
      if (!last) f32(next, (k.lattice.M + 1) * Cp).fill(0);
      desc[8 * ki + 5] = blurred;
      desc[8 * ki + 6] = next;
      bufs[ki] = [next, blurred, blurred === splatted ? scratch : splatted];
    });
    x.pass(N, unaryAt, qAt, descAt, K, 1, last ? 0 : 1);
  }
  const Qw = f32(qAt, N * Cp);
  const Q = new Float32Array(N * C);
  for (let p = 0; p < N; p++) Q.set(Qw.subarray(p * Cp, p * Cp + C), p * C);
  return Q;
}
