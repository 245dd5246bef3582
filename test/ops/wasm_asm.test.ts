import { describe, expect, it } from 'vitest';
import { assemble } from '../../ops/wasm_asm.js';

/** Instantiate a module of the WAT subset; its exports. */
function load(src: string): Record<string, CallableFunction> & { memory: { buffer: ArrayBuffer } } {
  const WA = (globalThis as unknown as { WebAssembly: { Module: new (b: Uint8Array) => object; Instance: new (m: object) => { exports: unknown } } }).WebAssembly;
  return new WA.Instance(new WA.Module(assemble(src))).exports as Record<string, CallableFunction> & { memory: { buffer: ArrayBuffer } };
}

describe('wasm_asm: the WAT subset assembler of the SIMD kernels', () => {
  it('integer and float scalars, negative constants (signed LEB128), locals by name', () => {
    const x = load(`(module
      (func $f (export "f") (param $a i32) (param $b i32) (result i32) (local $t i32)
        local.get $a i32.const -300 i32.mul local.tee $t local.get $b i32.add)
      (func $g (export "g") (param $x f32) (result f32) local.get $x f32.const 0.25 f32.mul))`);
    expect(x.f(7, 5)).toBe(-2095);
    expect(x.g(3)).toBe(0.75);
  });

  it('labels resolve to depths: a loop summing the floats of memory four lanes at a time', () => {
    const x = load(`(module (memory (export "memory") 1)
      (func $sum (export "sum") (param $p i32) (param $end i32) (result f32) (local $acc v128)
        block $done loop $next
          local.get $p local.get $end i32.ge_u br_if $done
          local.get $acc local.get $p v128.load f32x4.add local.set $acc
          local.get $p i32.const 16 i32.add local.set $p
          br $next
        end end
        local.get $acc f32x4.extract_lane 0 local.get $acc f32x4.extract_lane 3 f32.add))`);
    new Float32Array(x.memory.buffer, 0, 12).set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    // lanes 0 and 3 of the sum: (1 + 5 + 9) + (4 + 8 + 12)
    expect(x.sum(0, 48)).toBe(39);
    expect(x.sum(16, 48)).toBe(34);
  });

  it('SIMD constants, integer lanes, shifts and conversions: 2^k from exponent bits', () => {
    const x = load(`(module
      (func $pow2 (export "pow2") (param $k f32) (result f32)
        local.get $k f32x4.splat i32x4.trunc_sat_f32x4_s v128.const i32x4 127 127 127 127 i32x4.add i32.const 23 i32x4.shl f32x4.extract_lane 2)
      (func $near (export "near") (param $v f32) (result f32)
        local.get $v f32x4.splat v128.const f32x4 -1 -1 -1 -1 f32x4.max f32x4.nearest f32x4.extract_lane 1))`);
    expect(x.pow2(-3)).toBe(0.125);
    expect(x.pow2(10)).toBe(1024);
    expect(x.near(2.5)).toBe(2);
    expect(x.near(-7)).toBe(-1);
  });

  it('if / else and calls between functions', () => {
    const x = load(`(module
      (func $sq (param $v i32) (result i32) local.get $v local.get $v i32.mul)
      (func $f (export "f") (param $a i32) (result i32) (local $r i32)
        local.get $a i32.const 0 i32.lt_s if $neg
          i32.const -1 local.set $r
        else
          local.get $a call $sq local.set $r
        end
        local.get $r))`);
    expect(x.f(-4)).toBe(-1);
    expect(x.f(9)).toBe(81);
  });

  it('errors name what is wrong', () => {
    expect(() => assemble('(module (func $f local.get $nope))')).toThrow(/unknown local \$nope/);
    expect(() => assemble('(module (func $f i32.frobnicate))')).toThrow(/\$f: instruction 0 \(i32.frobnicate\): unknown instruction/);
    expect(() => assemble('(module (func $f block $a br $b end))')).toThrow(/unknown label \$b/);
    expect(() => assemble('(module (func $f block $a))')).toThrow(/not ended/);
    expect(() => assemble('(module (func $f nop (param $x i32)))')).toThrow(/body must be flat/);
  });
});
