/**
 * YAML values as DVC sees them, and YAML text as DVC writes it.
 *
 * DVC reads params.yaml and dvc.lock with ruamel.yaml (YAML 1.2 rules) into Python values, and
 * writes dvc.lock with ruamel's round-trip dumper (block style, width 80, unicode allowed, sequences
 * inside mappings not indented). For tagseg's runner to write a dvc.lock that DVC reads as
 * unchanged, and byte for byte the same file, both sides are reproduced here:
 *   - `parsePy` keeps the Python type of each scalar: `1.0` stays a float (`PyFloat`) and is written
 *     back as `1.0`, `1` an int; strings are resolved with ruamel's 1.2 resolver.
 *   - `dumpPy` is a block emitter following ruamel's scalar analysis, quoting and line folding.
 * Not reproduced: line breaks other than `\n` in single-quoted strings, and documents other
 * than a block mapping at the top (all dvc.lock needs).
 */
import YAML, { type Document, isAlias, isMap, isScalar, isSeq, type Node } from 'yaml';
import { TagsegError } from '../pipeline/errors.js';

/** A Python float (JS numbers cannot tell `1.0` from `1`). */
export class PyFloat {
  constructor(readonly value: number) {}
}

/** A scalar written as is, unquoted (a YAML timestamp that DVC would load as a date). */
export class PyRaw {
  constructor(readonly text: string) {}
}

export type PyValue = string | number | bigint | boolean | null | PyFloat | PyRaw | PyValue[] | PyMap;
export interface PyMap {
  [key: string]: PyValue;
}

// ruamel's YAML 1.2 implicit resolvers (resolver.py): a plain scalar matching one is not a string.
const BOOL = /^(?:true|True|TRUE|false|False|FALSE)$/;
const FLOAT = /^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)|[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$/;
const INT = /^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+)$/;
const NULL = /^(?:~|null|Null|NULL|)$/;
const TIMESTAMP =
  /^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$/;
const OTHER = /^(?:<<|=)$/;

/** True when ruamel would read the plain scalar `s` as something other than a string. */
function resolvesToNonString(s: string): boolean {
  return BOOL.test(s) || FLOAT.test(s) || INT.test(s) || NULL.test(s) || TIMESTAMP.test(s) || OTHER.test(s);
}

/** The Python value of a plain scalar's source text. */
function plainValue(src: string): PyValue {
  if (NULL.test(src)) return null;
  if (BOOL.test(src)) return src[0] === 't' || src[0] === 'T';
  if (INT.test(src)) {
    const t = src.replace(/_/g, '');
    const neg = t.startsWith('-');
    const body = t.replace(/^[-+]/, '');
    const big = BigInt(body); // decimal (leading zeros too), or 0b / 0o / 0x as JS reads them
    const v = neg ? -big : big;
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  if (FLOAT.test(src)) {
    const t = src.replace(/_/g, '').toLowerCase();
    if (t.endsWith('.nan')) return new PyFloat(NaN);
    if (t.endsWith('.inf')) return new PyFloat(t.startsWith('-') ? -Infinity : Infinity);
    return new PyFloat(Number(t));
  }
  if (TIMESTAMP.test(src)) return new PyRaw(src);
  return src;
}

function toPy(node: unknown, file: string, doc: Document): PyValue {
  if (node === null || node === undefined) return null;
  if (isAlias(node)) return toPy(node.resolve(doc), file, doc);
  if (isScalar(node)) {
    if (node.type === 'PLAIN' && typeof node.source === 'string' && !node.tag) return plainValue(node.source);
    const v = node.value;
    if (typeof v === 'number') return Number.isInteger(v) ? v : new PyFloat(v);
    return v as PyValue;
  }
  if (isSeq(node)) return node.items.map((i) => toPy(i, file, doc));
  if (isMap(node)) {
    const out: PyMap = {};
    for (const pair of node.items) {
      const k = isScalar(pair.key) ? pair.key.value : pair.key;
      if (typeof k !== 'string' && typeof k !== 'number' && typeof k !== 'boolean') {
        throw new TagsegError('mapping keys must be scalars', { file });
      }
      out[String(k)] = toPy(pair.value, file, doc);
    }
    return out;
  }
  throw new TagsegError('unsupported YAML node (custom tag?)', { file });
}

/** Parse YAML text into Python-typed values (throws a TagsegError naming `file`). */
export function parsePy(text: string, file: string): PyValue {
  const doc = YAML.parseDocument(text);
  if (doc.errors.length) throw new TagsegError(`invalid YAML: ${doc.errors[0]!.message}`, { file });
  return toPy(doc.contents as Node | null, file, doc);
}

/** Python's repr of a float (shortest round trip; exponent below 1e-4 and from 1e16). */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mant, expText] = x.toExponential().split('e') as [string, string];
  const exp = Number(expText);
  const neg = mant.startsWith('-');
  const digits = mant.replace(/^-/, '').replace('.', '');
  let body: string;
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    body = `${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  } else if (exp < 0) body = `0.${'0'.repeat(-exp - 1)}${digits}`;
  else if (digits.length > exp + 1) body = `${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`;
  else body = `${digits}${'0'.repeat(exp + 1 - digits.length)}.0`;
  return (neg ? '-' : '') + body;
}

/** Python's `str()` of a scalar, which DVC uses to interpolate `${...}` (bools as true/false). */
export function pyStr(v: PyValue): string {
  if (v instanceof PyFloat) return pyFloatRepr(v.value);
  if (v instanceof PyRaw) return v.text;
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (v === null) return 'None';
  return String(v);
}

/** Python equality of two values (1 == 1.0, as DVC compares params). */
export function pyEqual(a: PyValue, b: PyValue): boolean {
  const num = (v: PyValue) => (v instanceof PyFloat ? v.value : typeof v === 'number' || typeof v === 'bigint' ? Number(v) : undefined);
  const na = num(a);
  const nb = num(b);
  if (na !== undefined || nb !== undefined) return na === nb;
  if (a instanceof PyRaw || b instanceof PyRaw) return a instanceof PyRaw && b instanceof PyRaw && a.text === b.text;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => pyEqual(x, b[i]!));
  }
  if (isMapValue(a) || isMapValue(b)) {
    if (!isMapValue(a) || !isMapValue(b)) return false;
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && pyEqual(a[k]!, b[k]!));
  }
  return a === b;
}

function isMapValue(v: PyValue): v is PyMap {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof PyFloat) && !(v instanceof PyRaw);
}

// ---------------------------------------------------------------------------------------------
// Emitter

const WIDTH = 80;
const BREAKS = '\n\x85\u2028\u2029';
const WS = `\0 \t\r${BREAKS}`;

interface Analysis {
  empty: boolean;
  multiline: boolean;
  blockPlain: boolean;
  singleQuoted: boolean;
}

/** ruamel's Emitter.analyze_scalar, reduced to what block context needs. */
function analyze(s: string): Analysis {
  if (!s) return { empty: true, multiline: false, blockPlain: true, singleQuoted: true };
  const chars = [...s];
  let block = s.startsWith('---') || s.startsWith('...');
  let lineBreaks = false;
  let special = false;
  let leadingSpace = false;
  let leadingBreak = false;
  let trailingSpace = false;
  let trailingBreak = false;
  let breakSpace = false;
  let spaceBreak = false;
  let precededByWs = true;
  let followedByWs = chars.length === 1 || WS.includes(chars[1]!);
  let prevSpace = false;
  let prevBreak = false;
  chars.forEach((ch, i) => {
    if (i === 0) {
      if ('#,[]{}&*!|>\'"%@`'.includes(ch)) block = true;
      if ('?:'.includes(ch) && followedByWs) block = true;
      if (ch === '-' && followedByWs) block = true;
    } else {
      if (ch === ':' && followedByWs) block = true;
      if (ch === '#' && precededByWs) block = true;
    }
    if (BREAKS.includes(ch)) lineBreaks = true;
    const cp = ch.codePointAt(0)!;
    if (!(ch === '\n' || (cp >= 0x20 && cp <= 0x7e))) {
      const printable = cp === 0x85 || (cp >= 0xa0 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) || cp >= 0x10000;
      if (!printable || cp === 0xfeff) special = true;
    }
    if (ch === ' ') {
      if (i === 0) leadingSpace = true;
      if (i === chars.length - 1) trailingSpace = true;
      if (prevBreak) breakSpace = true;
      prevSpace = true;
      prevBreak = false;
    } else if (BREAKS.includes(ch)) {
      if (i === 0) leadingBreak = true;
      if (i === chars.length - 1) trailingBreak = true;
      if (prevSpace) spaceBreak = true;
      prevSpace = false;
      prevBreak = true;
    } else {
      prevSpace = false;
      prevBreak = false;
    }
    precededByWs = WS.includes(ch);
    followedByWs = i + 2 >= chars.length || WS.includes(chars[i + 2]!);
  });
  let blockPlain = !(leadingSpace || leadingBreak || trailingSpace || trailingBreak);
  let singleQuoted = true;
  if (breakSpace || special || spaceBreak) blockPlain = singleQuoted = false;
  if (lineBreaks || block) blockPlain = false;
  return { empty: false, multiline: lineBreaks, blockPlain, singleQuoted };
}

type Style = 'plain' | 'single' | 'double';

function chooseStyle(s: string, simpleKey: boolean): Style {
  const a = analyze(s);
  if (!resolvesToNonString(s) && !(simpleKey && (a.empty || a.multiline)) && a.blockPlain) return 'plain';
  if (s.includes("'") || s.includes('\n')) return 'double';
  if (a.singleQuoted && !(simpleKey && a.multiline)) return 'single';
  return 'double';
}

const ESCAPES: Record<string, string> = {
  '\0': '0', '\x07': 'a', '\x08': 'b', '\t': 't', '\n': 'n', '\x0b': 'v', '\x0c': 'f', '\r': 'r',
  '\x1b': 'e', '"': '"', '\\': '\\', '\x85': 'N', '\xa0': '_', '\u2028': 'L', '\u2029': 'P',
};

class Writer {
  text = '';
  column = 0;

  write(s: string): void {
    this.text += s;
    this.column += [...s].length;
  }

  /** New line at `indent` (ruamel's write_indent). */
  newline(indent: number): void {
    this.text += `\n${' '.repeat(indent)}`;
    this.column = indent;
  }

  /** A scalar after `: ` or `- `; `indent` is where folded lines continue. */
  scalar(v: PyValue, indent: number, simpleKey = false): void {
    if (typeof v !== 'string') {
      this.write(scalarText(v));
      return;
    }
    const style = chooseStyle(v, simpleKey);
    if (style === 'plain') this.plain(v, indent, !simpleKey);
    else if (style === 'single') this.singleQuoted(v, indent, !simpleKey);
    else this.doubleQuoted(v, indent, !simpleKey);
  }

  /** ruamel's write_plain: a word that would pass the width starts a new line; a single space
   *  at or past the width becomes the line break. */
  private plain(s: string, indent: number, split: boolean): void {
    const words = s.split(/( +)/);
    for (const part of words) {
      if (!part) continue;
      if (part[0] === ' ') {
        if (part.length === 1 && this.column >= WIDTH && split) this.newline(indent);
        else this.write(part);
      } else {
        if (part.length + this.column > WIDTH && this.column > indent && split) this.newline(indent);
        this.write(part);
      }
    }
  }

  private singleQuoted(s: string, indent: number, split: boolean): void {
    this.write("'");
    const parts = s.split(/( +)/);
    let offset = 0;
    for (const part of parts) {
      if (!part) continue;
      const start = offset;
      offset += part.length;
      if (part[0] === ' ' && part.length === 1 && this.column > WIDTH && split && start !== 0 && offset !== s.length) {
        this.newline(indent);
      } else this.write(part.replace(/'/g, "''"));
    }
    this.write("'");
  }

  /** ruamel's write_double_quoted: escapes, and folding at a space or escape past the width
   *  (a backslash keeps the break out of the value where a plain fold would change it). */
  private doubleQuoted(s: string, indent: number, split: boolean): void {
    const t = [...s];
    const slice = (a: number, b: number) => t.slice(a, b).join('');
    this.write('"');
    let start = 0;
    for (let end = 0; end <= t.length; end++) {
      const ch = end < t.length ? t[end]! : null;
      if (ch === null || needsEscape(ch)) {
        if (start < end) {
          this.write(slice(start, end));
          start = end;
        }
        if (ch !== null) {
          this.write(escapeChar(ch));
          start = end + 1;
        }
      }
      if (end > 0 && end < t.length - 1 && (ch === ' ' || start >= end) && this.column + (end - start) > WIDTH && split) {
        const backslash = needsBackslash(t, start, end);
        const data = slice(start, end) + (backslash ? '\\' : '');
        if (start < end) start = end;
        this.write(data);
        this.newline(indent);
        if (t[start] === ' ') {
          if (!backslash) start += 1; // the fold itself reads back as this space
          else this.write('\\');
        }
      }
    }
    this.write('"');
  }
}

function needsEscape(ch: string): boolean {
  const cp = ch.codePointAt(0)!;
  const printable = (cp >= 0x20 && cp <= 0x7e) || (cp >= 0xa0 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) || cp >= 0x10000;
  return !printable || '"\\\x85\u2028\u2029\ufeff'.includes(ch);
}

function escapeChar(ch: string): string {
  const cp = ch.codePointAt(0)!;
  if (ch in ESCAPES) return `\\${ESCAPES[ch]}`;
  if (cp <= 0xff) return `\\x${cp.toString(16).toUpperCase().padStart(2, '0')}`;
  if (cp <= 0xffff) return `\\u${cp.toString(16).toUpperCase().padStart(4, '0')}`;
  return `\\U${cp.toString(16).toUpperCase().padStart(8, '0')}`;
}

/** Whether a double-quoted fold at `end` needs a trailing backslash (ruamel's look-ahead rule). */
function needsBackslash(t: string[], start: number, end: number): boolean {
  let spacePos = t.indexOf(' ', end);
  if (spacePos === -1) return true;
  const nl = t.slice(end, spacePos).indexOf('\n');
  if (nl !== -1) spacePos = end + nl;
  const next = t[spacePos + 1];
  if (next === undefined) return true;
  if (t[spacePos] === '\n' && next !== ' ') return true;
  const word = t.slice(end, spacePos);
  return word.includes('"') || word.includes("'") || next === ' ' || next === '\n' || t.slice(end - 1, end + 1).join('') === '  ' || start === end;
}

function scalarText(v: PyValue): string {
  if (v instanceof PyFloat) {
    if (Number.isNaN(v.value)) return '.nan';
    if (!Number.isFinite(v.value)) return v.value > 0 ? '.inf' : '-.inf';
    return pyFloatRepr(v.value).toLowerCase();
  }
  if (v instanceof PyRaw) return v.text;
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : pyFloatRepr(v);
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (v === null) return '';
  throw new Error('not a scalar');
}

function isEmptyCollection(v: PyValue): boolean {
  return (Array.isArray(v) && v.length === 0) || (isMapValue(v) && Object.keys(v).length === 0);
}

function emitValue(w: Writer, v: PyValue, indent: number, inSequence: boolean): void {
  if (isEmptyCollection(v)) w.write(Array.isArray(v) ? ' []' : ' {}');
  else if (Array.isArray(v)) {
    // In a mapping the dashes stay at the key's column; in a sequence they follow the dash.
    if (inSequence) w.write(' ');
    emitSequence(w, v, inSequence ? indent + 2 : indent, inSequence);
  } else if (isMapValue(v)) {
    if (inSequence) w.write(' ');
    emitMapping(w, v, indent + 2, inSequence);
  } else {
    if (v !== null || inSequence) w.write(' ');
    w.scalar(v, indent + 2);
  }
}

function emitMapping(w: Writer, m: PyMap, indent: number, inline: boolean): void {
  Object.entries(m).forEach(([k, v], i) => {
    if (i > 0 || !inline) w.newline(indent);
    w.scalar(k, indent, true);
    w.write(':');
    emitValue(w, v, indent, false);
  });
}

function emitSequence(w: Writer, items: PyValue[], indent: number, inline: boolean): void {
  items.forEach((v, i) => {
    if (i > 0 || !inline) w.newline(indent);
    w.write('-');
    emitValue(w, v, indent, true);
  });
}

/** YAML text of a mapping exactly as DVC's `dump_yaml` (ruamel round-trip dumper) writes it. */
export function dumpPy(m: PyMap): string {
  const w = new Writer();
  emitMapping(w, m, 0, true);
  return `${w.text}\n`;
}
