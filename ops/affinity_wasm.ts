/**
 * AffinityNet's pair distances and their gradient (nn/affinity_head.ts `affinities`) in
 * WebAssembly SIMD: one pass over the pairs instead of ~6 TensorFlow ops per offset forward and
 * ~9 backward, each over a full [B, h, w, D] map. It computes what the TensorFlow engine computes,
 * with the channel terms summed in another order (float32): values agree to float rounding
 * (test/stages/affinity_head.test.ts). Deterministic (no fused multiply-add, no relaxed SIMD).
 *
 * Layout in the module's memory: x [B, gh, gw, D] (NHWC floats, as TensorFlow holds it), then
 * toff i32 [K]: the byte offset of offset k's target from its source, (dy_k gw + dx_k) D 4; then
 * the pair maps [B, K, ph, pw] (sums out, or the gradient in), then dx [B, gh, gw, D].
 * The source of pair (b, k, y, x) is pixel (y, x + rf) of x; D must be a multiple of 16 (four
 * vectors per step of the channel loop).
 */
import type { Offset } from './randomwalk.js';
import { instantiate } from './wasm_asm.js';

/** Shared prologue: sp, the byte address of source pixel (b, y, x + rf); pair, the index of (b, 0, y, x). */
const SOURCE = String.raw`
        local.get $x local.get $b local.get $gh i32.mul local.get $y i32.add local.get $gw i32.mul
        local.get $xx i32.add local.get $rf i32.add local.get $Db i32.mul i32.add local.set $sp
        local.get $b local.get $K i32.mul local.get $ph i32.mul local.get $y i32.add local.get $pw i32.mul local.get $xx i32.add local.set $pair`;

/** Loops over b < B, y < ph, xx < pw, k < K around `body` (k-th target at tp = sp + toff_k; pair map entry at byte pm). */
function pairLoops(body: string): string {
  return String.raw`
    local.get $D i32.const 2 i32.shl local.set $Db
    local.get $ph local.get $pw i32.mul i32.const 2 i32.shl local.set $kstep
    block $b_done loop $b_loop
      local.get $b local.get $B i32.ge_u br_if $b_done
      i32.const 0 local.set $y
      block $y_done loop $y_loop
        local.get $y local.get $ph i32.ge_u br_if $y_done
        i32.const 0 local.set $xx
        block $x_done loop $x_loop
          local.get $xx local.get $pw i32.ge_u br_if $x_done
          ${SOURCE}
          local.get $maps local.get $pair i32.const 2 i32.shl i32.add local.set $pm
          i32.const 0 local.set $k
          block $k_done loop $k_loop
            local.get $k local.get $K i32.ge_u br_if $k_done
            local.get $sp local.get $toff local.get $k i32.const 2 i32.shl i32.add i32.load i32.add local.set $tp
            ${body}
            local.get $pm local.get $kstep i32.add local.set $pm
            local.get $k i32.const 1 i32.add local.set $k
            br $k_loop
          end end
          local.get $xx i32.const 1 i32.add local.set $xx
          br $x_loop
        end end
        local.get $y i32.const 1 i32.add local.set $y
        br $y_loop
      end end
      local.get $b i32.const 1 i32.add local.set $b
      br $b_loop
    end end`;
}

const PARAMS = '(param $x i32) (param $toff i32) (param $maps i32) (param $B i32) (param $gh i32) (param $gw i32) (param $D i32) (param $ph i32) (param $pw i32) (param $K i32) (param $rf i32)';
const LOCALS = '(local $b i32) (local $y i32) (local $xx i32) (local $k i32) (local $Db i32) (local $kstep i32) (local $sp i32) (local $tp i32) (local $pair i32) (local $pm i32) (local $p i32) (local $q i32) (local $end i32)';

/** sums[b, k, y, x] = sum_c |x_s,c - x_t,c|, four accumulators of 4 channels. */
const DIST_BODY = String.raw`
            v128.const i32x4 0 0 0 0 local.set $a0 v128.const i32x4 0 0 0 0 local.set $a1
            v128.const i32x4 0 0 0 0 local.set $a2 v128.const i32x4 0 0 0 0 local.set $a3
            local.get $sp local.set $p local.get $tp local.set $q
            local.get $sp local.get $Db i32.add local.set $end
            block $c_done loop $c_loop
              local.get $p local.get $end i32.ge_u br_if $c_done
              ${[0, 1, 2, 3].map((i) => `local.get $a${i} local.get $p v128.load offset=${16 * i} local.get $q v128.load offset=${16 * i} f32x4.sub f32x4.abs f32x4.add local.set $a${i}`).join('\n              ')}
              local.get $p i32.const 64 i32.add local.set $p
              local.get $q i32.const 64 i32.add local.set $q
              br $c_loop
            end end
            local.get $a0 local.get $a1 f32x4.add local.get $a2 local.get $a3 f32x4.add f32x4.add local.set $a0
            local.get $pm
            local.get $a0 f32x4.extract_lane 0 local.get $a0 f32x4.extract_lane 1 f32.add
            local.get $a0 f32x4.extract_lane 2 f32.add local.get $a0 f32x4.extract_lane 3 f32.add
            f32.store`;

/**
 * Given g = dL/d(sum) at each pair, dx_s += sign(x_s - x_t) g and dx_t -= sign(x_s - x_t) g,
 * sign(d) g taken as (d > 0 ? g : 0) - (d < 0 ? g : 0), so d = 0 gives 0 as TensorFlow's sign does.
 */
const BACK_BODY = String.raw`
            local.get $pm f32.load local.set $g
            local.get $g f32.const 0 f32.eq i32.eqz if $nonzero
              local.get $g f32x4.splat local.set $vg
              local.get $sp local.set $p local.get $tp local.set $q
              local.get $sp local.get $Db i32.add local.set $end
              block $c_done loop $c_loop
                local.get $p local.get $end i32.ge_u br_if $c_done
                ${[0, 1, 2, 3].map((i) => String.raw`local.get $p v128.load offset=${16 * i} local.get $q v128.load offset=${16 * i} f32x4.sub local.set $d
                local.get $d v128.const i32x4 0 0 0 0 f32x4.gt local.get $vg v128.and
                local.get $d v128.const i32x4 0 0 0 0 f32x4.lt local.get $vg v128.and f32x4.sub local.set $v
                local.get $p local.get $dxo i32.add local.get $p local.get $dxo i32.add v128.load offset=${16 * i} local.get $v f32x4.add v128.store offset=${16 * i}
                local.get $q local.get $dxo i32.add local.get $q local.get $dxo i32.add v128.load offset=${16 * i} local.get $v f32x4.sub v128.store offset=${16 * i}`).join('\n                ')}
                local.get $p i32.const 64 i32.add local.set $p
                local.get $q i32.const 64 i32.add local.set $q
                br $c_loop
              end end
            end`;

const AFFINITY_WAT = String.raw`
(module
  (memory (export "memory") 1)
  (func $dist (export "dist") ${PARAMS}
    ${LOCALS} (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    ${pairLoops(DIST_BODY)})
  ;; dxo: byte distance from x to dx (dx has x's layout)
  (func $back (export "back") ${PARAMS} (param $dxo i32)
    ${LOCALS} (local $g f32) (local $vg v128) (local $d v128) (local $v v128)
    ${pairLoops(BACK_BODY)})
)`;

type PairFn = (x: number, toff: number, maps: number, B: number, gh: number, gw: number, D: number, ph: number, pw: number, K: number, rf: number, dxo?: number) => void;

interface AffinityExports {
  memory: { buffer: ArrayBuffer; grow(pages: number): number };
  dist: PairFn;
  back: PairFn;
}

/** This thread's instance, compiled on first use; null where WebAssembly SIMD is unavailable. */
let instance: AffinityExports | null | undefined;

function affinityExports(): AffinityExports | null {
  if (instance === undefined) instance = instantiate<AffinityExports>(AFFINITY_WAT);
  return instance;
}

/** The pair grid: x [B, gh, gw, D], pairs [B, K, ph, pw] (see the file comment). */
export interface PairGrid {
  B: number;
  gh: number;
  gw: number;
  D: number;
  ph: number;
  pw: number;
  rf: number;
  offsets: readonly Offset[];
}

/** Whether the wasm kernels take this grid (D a multiple of 16) and this thread has SIMD. */
export function pairWasmAvailable(g: PairGrid): boolean {
  return g.D % 16 === 0 && affinityExports() !== null;
}

/** Copy x and the target offsets into the module; returns the module and the byte offsets of its regions. */
function load(x: Float32Array, g: PairGrid): { m: AffinityExports; toff: number; maps: number; dx: number } {
  if (!pairWasmAvailable(g)) throw new Error('affinity_wasm: no WebAssembly SIMD, or D is not a multiple of 16 (check pairWasmAvailable)');
  const m = affinityExports()!;
  const K = g.offsets.length;
  const align = (n: number) => Math.ceil(n / 16) * 16;
  const toff = align(x.byteLength);
  const maps = align(toff + K * 4);
  const dx = align(maps + g.B * K * g.ph * g.pw * 4);
  const need = dx + x.byteLength;
  const have = m.memory.buffer.byteLength;
  if (need > have) m.memory.grow(Math.ceil((need - have) / 65536));
  new Float32Array(m.memory.buffer, 0, x.length).set(x);
  new Int32Array(m.memory.buffer, toff, K).set(g.offsets.map((o) => (o.dy * g.gw + o.dx) * g.D * 4));
  return { m, toff, maps, dx };
}

/** sums [B, K, ph, pw]: sum over channels of |x_source - x_target| for every pair. */
export function pairDistanceSums(x: Float32Array, g: PairGrid): Float32Array {
  const { m, toff, maps } = load(x, g);
  m.dist(0, toff, maps, g.B, g.gh, g.gw, g.D, g.ph, g.pw, g.offsets.length, g.rf);
  return new Float32Array(m.memory.buffer, maps, g.B * g.offsets.length * g.ph * g.pw).slice();
}

/** dL/dx [B, gh, gw, D] from gsum [B, K, ph, pw] = dL/d(sum) of each pair. */
export function pairDistanceGradient(x: Float32Array, gsum: Float32Array, g: PairGrid): Float32Array {
  const { m, toff, maps, dx } = load(x, g);
  new Float32Array(m.memory.buffer, maps, gsum.length).set(gsum);
  new Float32Array(m.memory.buffer, dx, x.length).fill(0);
  m.back(0, toff, maps, g.B, g.gh, g.gw, g.D, g.ph, g.pw, g.offsets.length, g.rf, dx);
  return new Float32Array(m.memory.buffer, dx, x.length).slice();
}
