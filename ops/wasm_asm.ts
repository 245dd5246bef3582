/**
 * A small assembler for a subset of the WebAssembly text format (WAT), so that hand-written SIMD
 * kernels (ops/crf_wasm.ts) ship as readable text and need no compiler or package: the bytes are
 * produced when the module is first loaded.
 *
 * The subset: one `(module ...)` with `(memory (export "name") pages)` and `(func $name
 * (export "name") (param $p type)* (result type)? (local $l type)* instr*)` where the body is FLAT
 * (one instruction after another, as `wasm-objdump` prints it; no folded s-expressions).
 * Value types i32, f32, v128. Blocks are `block $label` / `loop $label` / `if $label` ... `end`
 * without results; branches name a label (`br_if $done`). Immediates: locals and functions by
 * `$name`, `offset=` on loads and stores, lane indices, `v128.const f32x4 a b c d` / `i32x4 ...`.
 * `;;` starts a comment. An unknown instruction or name is an error naming it.
 * Encoding follows the WebAssembly core spec 2.0 (binary format, chapter 5) and its SIMD opcodes.
 */

/** Opcodes without immediates: name -> bytes (0xfd-prefixed ones are SIMD, LEB128 sub-opcode). */
const PLAIN: Record<string, number[]> = {
  'unreachable': [0x00], 'nop': [0x01], 'return': [0x0f], 'drop': [0x1a], 'select': [0x1b],
  'i32.eqz': [0x45], 'i32.eq': [0x46], 'i32.ne': [0x47], 'i32.lt_s': [0x48], 'i32.lt_u': [0x49],
  'i32.gt_s': [0x4a], 'i32.gt_u': [0x4b], 'i32.le_s': [0x4c], 'i32.le_u': [0x4d], 'i32.ge_s': [0x4e], 'i32.ge_u': [0x4f],
  'f32.eq': [0x5b], 'f32.lt': [0x5d], 'f32.gt': [0x5e],
  'i32.add': [0x6a], 'i32.sub': [0x6b], 'i32.mul': [0x6c], 'i32.and': [0x71], 'i32.or': [0x72], 'i32.shl': [0x74], 'i32.shr_u': [0x76],
  'f32.abs': [0x8b], 'f32.neg': [0x8c], 'f32.add': [0x92], 'f32.sub': [0x93], 'f32.mul': [0x94], 'f32.div': [0x95], 'f32.min': [0x96], 'f32.max': [0x97],
  'i32x4.splat': [0xfd, 0x11], 'f32x4.splat': [0xfd, 0x13],
  'f32x4.eq': [0xfd, 0x41], 'f32x4.lt': [0xfd, 0x43], 'f32x4.gt': [0xfd, 0x44],
  'v128.not': [0xfd, 0x4d], 'v128.and': [0xfd, 0x4e], 'v128.or': [0xfd, 0x50], 'v128.xor': [0xfd, 0x51], 'v128.bitselect': [0xfd, 0x52],
  'f32x4.ceil': [0xfd, 0x67], 'f32x4.floor': [0xfd, 0x68], 'f32x4.nearest': [0xfd, 0x6a],
  'i32x4.shl': [0xfd, 0xab, 0x01], 'i32x4.add': [0xfd, 0xae, 0x01], 'i32x4.sub': [0xfd, 0xb1, 0x01],
  'f32x4.abs': [0xfd, 0xe0, 0x01], 'f32x4.neg': [0xfd, 0xe1, 0x01], 'f32x4.add': [0xfd, 0xe4, 0x01], 'f32x4.sub': [0xfd, 0xe5, 0x01],
  'f32x4.mul': [0xfd, 0xe6, 0x01], 'f32x4.div': [0xfd, 0xe7, 0x01], 'f32x4.min': [0xfd, 0xe8, 0x01], 'f32x4.max': [0xfd, 0xe9, 0x01],
  'i32x4.trunc_sat_f32x4_s': [0xfd, 0xf8, 0x01], 'f32x4.convert_i32x4_s': [0xfd, 0xfa, 0x01],
};

/** Loads and stores: name -> [opcode bytes, natural alignment log2]. */
const MEMORY: Record<string, [number[], number]> = {
  'i32.load': [[0x28], 2], 'f32.load': [[0x2a], 2], 'i32.store': [[0x36], 2], 'f32.store': [[0x38], 2],
  'v128.load': [[0xfd, 0x00], 4], 'v128.load32_splat': [[0xfd, 0x09], 2], 'v128.store': [[0xfd, 0x0b], 4],
};

/** Lane instructions: name -> opcode bytes; the immediate is one lane byte. */
const LANE: Record<string, number[]> = { 'f32x4.extract_lane': [0xfd, 0x1f], 'f32x4.replace_lane': [0xfd, 0x20] };

const VALTYPE: Record<string, number> = { i32: 0x7f, f32: 0x7d, v128: 0x7b };

type Sexp = string | Sexp[];

function tokenize(src: string): string[] {
  const out: string[] = [];
  const re = /\s+|;;[^\n]*|\(|\)|"[^"]*"|[^\s()";]+/g;
  let m: RegExpExecArray | null;
  let at = 0;
  while ((m = re.exec(src)) !== null) {
    if (m.index !== at) throw new Error(`wasm_asm: unexpected text at ${at}: ${JSON.stringify(src.slice(at, at + 20))}`);
    at = re.lastIndex;
    const t = m[0];
    if (!/^\s/.test(t) && !t.startsWith(';;')) out.push(t);
  }
  return out;
}

function parse(tokens: string[]): Sexp {
  const stack: Sexp[][] = [[]];
  for (const t of tokens) {
    if (t === '(') stack.push([]);
    else if (t === ')') {
      const done = stack.pop();
      if (!done || stack.length === 0) throw new Error('wasm_asm: unbalanced ")"');
      stack[stack.length - 1].push(done);
    } else stack[stack.length - 1].push(t);
  }
  if (stack.length !== 1 || stack[0].length !== 1) throw new Error('wasm_asm: expected one (module ...)');
  return stack[0][0];
}

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) return [...out, b];
    out.push(b | 0x80);
  }
}

function f32Bytes(x: number): number[] {
  return [...new Uint8Array(Float32Array.of(x).buffer)];
}

function str(s: string): number[] {
  const b = [...new TextEncoder().encode(s)];
  return [...uleb(b.length), ...b];
}

function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}

function vec(items: number[][]): number[] {
  return [...uleb(items.length), ...items.flat()];
}

interface Func {
  name: string;
  exportAs?: string;
  params: { name: string; type: string }[];
  result?: string;
  locals: { name: string; type: string }[];
  body: string[];
}

function readFunc(f: Sexp[]): Func {
  const fn: Func = { name: String(f[1]), params: [], locals: [], body: [] };
  for (const item of f.slice(2)) {
    if (typeof item === 'string') {
      fn.body.push(item);
      continue;
    }
    const [kind, a, b] = item;
    if (fn.body.length > 0) throw new Error(`wasm_asm: ${fn.name}: "(${String(kind)} ...)" after the first instruction (the body must be flat)`);
    if (kind === 'export') fn.exportAs = String(a).replace(/"/g, '');
    else if (kind === 'param') fn.params.push({ name: String(a), type: String(b) });
    else if (kind === 'local') fn.locals.push({ name: String(a), type: String(b) });
    else if (kind === 'result') fn.result = String(a);
    else throw new Error(`wasm_asm: ${fn.name}: unsupported "(${String(kind)} ...)"`);
  }
  for (const v of [...fn.params, ...fn.locals]) if (!(v.type in VALTYPE)) throw new Error(`wasm_asm: ${fn.name}: unknown type ${v.type} of ${v.name}`);
  return fn;
}

/** Immediate of `v128.const`: `f32x4 a b c d` or `i32x4 a b c d`; returns bytes and tokens used. */
function v128Const(tokens: string[], i: number): number[] {
  const shape = tokens[i];
  const lanes = tokens.slice(i + 1, i + 5).map(Number);
  if (lanes.length !== 4 || lanes.some((x) => Number.isNaN(x))) throw new Error(`wasm_asm: bad v128.const ${tokens.slice(i, i + 5).join(' ')}`);
  if (shape === 'f32x4') return lanes.flatMap(f32Bytes);
  if (shape === 'i32x4') return [...new Uint8Array(Int32Array.from(lanes).buffer)];
  throw new Error(`wasm_asm: v128.const shape ${shape} (f32x4 or i32x4)`);
}

/** The code bytes of one function body; labels and names resolved. */
function encodeBody(fn: Func, funcIndex: Map<string, number>): number[] {
  const vars = new Map([...fn.params, ...fn.locals].map((v, i) => [v.name, i]));
  const labels: string[] = [];
  const out: number[] = [];
  const t = fn.body;
  const where = (i: number) => `${fn.name}: instruction ${i} (${t[i]})`;
  const varIndex = (i: number) => {
    const v = vars.get(t[i]);
    if (v === undefined) throw new Error(`wasm_asm: ${where(i - 1)}: unknown local ${t[i]}`);
    return v;
  };
  for (let i = 0; i < t.length; i++) {
    const op = t[i];
    if (op === 'block' || op === 'loop' || op === 'if') {
      out.push(op === 'block' ? 0x02 : op === 'loop' ? 0x03 : 0x04, 0x40);
      labels.push(t[i + 1]?.startsWith('$') ? t[++i] : '');
    } else if (op === 'else') out.push(0x05);
    else if (op === 'end') {
      if (labels.length === 0) throw new Error(`wasm_asm: ${where(i)}: end without a block`);
      labels.pop();
      out.push(0x0b);
    } else if (op === 'br' || op === 'br_if') {
      const depth = labels.length - 1 - labels.lastIndexOf(t[++i]);
      if (depth >= labels.length) throw new Error(`wasm_asm: ${where(i - 1)}: unknown label ${t[i]}`);
      out.push(op === 'br' ? 0x0c : 0x0d, ...uleb(depth));
    } else if (op === 'local.get' || op === 'local.set' || op === 'local.tee') {
      out.push(op === 'local.get' ? 0x20 : op === 'local.set' ? 0x21 : 0x22, ...uleb(varIndex(++i)));
    } else if (op === 'call') {
      const f = funcIndex.get(t[++i]);
      if (f === undefined) throw new Error(`wasm_asm: ${where(i - 1)}: unknown function ${t[i]}`);
      out.push(0x10, ...uleb(f));
    } else if (op === 'i32.const') out.push(0x41, ...sleb(Number(t[++i]) | 0));
    else if (op === 'f32.const') out.push(0x43, ...f32Bytes(Number(t[++i])));
    else if (op === 'v128.const') {
      out.push(0xfd, 0x0c, ...v128Const(t, i + 1));
      i += 5;
    } else if (op in MEMORY) {
      const [code, align] = MEMORY[op];
      let offset = 0;
      if (t[i + 1]?.startsWith('offset=')) offset = Number(t[++i].slice(7));
      out.push(...code, ...uleb(align), ...uleb(offset));
    } else if (op in LANE) out.push(...LANE[op], Number(t[++i]));
    else if (op in PLAIN) out.push(...PLAIN[op]);
    else throw new Error(`wasm_asm: ${where(i)}: unknown instruction`);
  }
  if (labels.length !== 0) throw new Error(`wasm_asm: ${fn.name}: ${labels.length} block(s) not ended`);
  // Locals: one (count, type) entry each, then the body and the function's own end.
  const locals = vec(fn.locals.map((l) => [1, VALTYPE[l.type]]));
  const code = [...locals, ...out, 0x0b];
  return [...uleb(code.length), ...code];
}

/** WebAssembly binary of a module in the WAT subset above. */
export function assemble(src: string): Uint8Array {
  const mod = parse(tokenize(src));
  if (!Array.isArray(mod) || mod[0] !== 'module') throw new Error('wasm_asm: expected (module ...)');
  const funcs: Func[] = [];
  let memory: { exportAs?: string; pages: number } | null = null;
  for (const field of mod.slice(1)) {
    if (!Array.isArray(field)) throw new Error(`wasm_asm: unexpected ${field} in the module`);
    if (field[0] === 'func') funcs.push(readFunc(field));
    else if (field[0] === 'memory') {
      const exp = field.find((x): x is Sexp[] => Array.isArray(x) && x[0] === 'export');
      memory = { exportAs: exp ? String(exp[1]).replace(/"/g, '') : undefined, pages: Number(field[field.length - 1]) };
    } else throw new Error(`wasm_asm: unsupported module field (${String(field[0])} ...)`);
  }
  const funcIndex = new Map(funcs.map((f, i) => [f.name, i]));
  const types = funcs.map((f) => [0x60, ...vec(f.params.map((p) => [VALTYPE[p.type]])), ...vec(f.result ? [[VALTYPE[f.result]]] : [])]);
  const exports: number[][] = funcs.flatMap((f, i) => (f.exportAs ? [[...str(f.exportAs), 0x00, ...uleb(i)]] : []));
  if (memory?.exportAs) exports.push([...str(memory.exportAs), 0x02, 0x00]);
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(types)),
    ...section(3, vec(funcs.map((_, i) => uleb(i)))),
    ...(memory ? section(5, vec([[0x00, ...uleb(memory.pages)]])) : []),
    ...section(7, vec(exports)),
    ...section(10, vec(funcs.map((f) => encodeBody(f, funcIndex)))),
  ];
  return Uint8Array.from(bytes);
}

/** The WebAssembly JS API used here (tsconfig's libs have no DOM, so no WebAssembly types). */
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: unknown };
}
const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** The exports of the module `wat`, assembled and instantiated; null where this engine does not validate it (no WebAssembly SIMD). */
export function instantiate<T>(wat: string): T | null {
  const bytes = assemble(wat);
  return WA.validate(bytes) ? (new WA.Instance(new WA.Module(bytes)).exports as T) : null;
}
