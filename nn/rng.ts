/**
 * Seeded, serialisable PRNG for everything random in training (weight init, augmentation,
 * sampling). DVC assumes deterministic stages, and resuming from a checkpoint must continue the
 * exact random stream, so the whole generator state is four uint32 words that go into the
 * checkpoint's JSON training state.
 *
 * Algorithm: xoshiro128** (Blackman & Vigna, 2018; period 2^128 - 1), seeded through
 * splitmix32 so that nearby seeds (0, 1, 2, ...) give unrelated streams. Math.random is never used.
 */
import { TagsegError } from '../pipeline/errors.js';

/** Serialisable generator state (plain JSON). */
export interface RngState {
  algo: 'xoshiro128**';
  s: [number, number, number, number];
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** splitmix32 step: a well-mixed uint32 from a counter, used only for seeding. */
function splitmix32(state: { x: number }): number {
  state.x = (state.x + 0x9e3779b9) >>> 0;
  let z = state.x;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** 32-bit FNV-1a hash of a string, so seeds can be names ("cam/epoch3"). */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

export class Rng {
  private s: Uint32Array;

  /** `seed`: any integer (its low 32 bits and the high part are both mixed in) or a string. */
  constructor(seed: number | string = 0) {
    let lo: number;
    let hi: number;
    if (typeof seed === 'string') {
      lo = hashString(seed);
      hi = hashString(`${seed}\u0001`);
    } else {
      if (!Number.isFinite(seed)) throw new TagsegError(`Rng seed must be a finite number, got ${seed}`);
      const n = Math.trunc(seed);
      lo = n >>> 0;
      hi = Math.floor(n / 2 ** 32) >>> 0;
    }
    const st = { x: (lo ^ Math.imul(hi, 0x27d4eb2d)) >>> 0 };
    this.s = new Uint32Array([splitmix32(st), splitmix32(st), splitmix32(st), splitmix32(st)]);
    // xoshiro's only forbidden state is all zeros; splitmix32 cannot produce four zeros in a row,
    // but guard anyway.
    if ((this.s[0] | this.s[1] | this.s[2] | this.s[3]) === 0) this.s[0] = 1;
  }

  /** A generator that continues from a saved `state()`. */
  static fromState(state: RngState): Rng {
    const r = new Rng(0);
    r.setState(state);
    return r;
  }

  /** Snapshot of the full state (copy; JSON-serialisable). */
  state(): RngState {
    return { algo: 'xoshiro128**', s: [this.s[0], this.s[1], this.s[2], this.s[3]] };
  }

  setState(state: RngState): void {
    const ok =
      state !== null &&
      typeof state === 'object' &&
      state.algo === 'xoshiro128**' &&
      Array.isArray(state.s) &&
      state.s.length === 4 &&
      state.s.every((v) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff) &&
      state.s.some((v) => v !== 0);
    if (!ok) {
      throw new TagsegError(`invalid Rng state ${JSON.stringify(state)}`, {
        hint: "expected { algo: 'xoshiro128**', s: [four uint32, not all zero] }",
      });
    }
    this.s = new Uint32Array(state.s);
  }

  /** Next uniform uint32. */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform float in [0, 1) with 32 random bits. */
  next(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform float in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Uniform integer in [lo, hi) (hi exclusive). Unbiased (rejection sampling). */
  int(lo: number, hi: number): number {
    const n = Math.floor(hi) - Math.ceil(lo);
    if (!(n > 0)) throw new TagsegError(`Rng.int needs lo < hi, got [${lo}, ${hi})`);
    if (n > 0x100000000) throw new TagsegError(`Rng.int range too large: ${n}`);
    const limit = 0x100000000 - (0x100000000 % n);
    let x = this.nextUint32();
    while (x >= limit) x = this.nextUint32();
    return Math.ceil(lo) + (x % n);
  }

  /** true with probability p. */
  bernoulli(p = 0.5): boolean {
    return this.next() < p;
  }

  /**
   * Standard normal via Box-Muller. No cached second value, so the state stays exactly the four
   * words (two uint32 draws per call).
   */
  normal(mean = 0, std = 1): number {
    const u1 = (this.nextUint32() + 1) / 4294967297; // (0, 1]: log is finite
    const u2 = this.next();
    return mean + std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** Fisher-Yates shuffle in place; returns the array. */
  shuffle<T>(arr: T[]): T[] {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = this.int(0, i + 1);
      const tmp = arr[i];
      arr[i] = arr[j];
      arr[j] = tmp;
    }
    return arr;
  }

  /** An independent child generator (seeded from this one's next outputs; advances this one). */
  fork(): Rng {
    const child = new Rng(0);
    const s: [number, number, number, number] = [this.nextUint32(), this.nextUint32(), this.nextUint32(), this.nextUint32()];
    if (s.every((v) => v === 0)) s[0] = 1;
    child.setState({ algo: 'xoshiro128**', s });
    return child;
  }
}
