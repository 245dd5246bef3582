/**
 * orderedMap (pipeline/concurrency.ts) on hand cases: input order with out-of-order completion,
 * never more than `concurrency` running (with a control: an unbounded map fails that check), the
 * window under a slow consumer, errors (a failing call, a failing source) and an early break.
 * And it is the one helper: no other product file builds its own p-queue.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mulberry32 } from '../../data/synth.js';
import { orderedMap } from '../../pipeline/concurrency.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function collect<T>(gen: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of gen) out.push(x);
  return out;
}

type MapImpl = <T, R>(items: Iterable<T>, fn: (item: T, i: number) => Promise<R>, opts: { concurrency: number }) => AsyncIterable<R>;

/** The control: every call started at once, results awaited in order (what an unbounded Promise.all does). */
const unboundedMap: MapImpl = async function* <T, R>(items: Iterable<T>, fn: (item: T, i: number) => Promise<R>) {
  const all = [...items].map((x, i) => fn(x, i));
  for (const p of all) yield await p;
};

/** Most calls running at once when `map` maps 20 items of uneven delays with concurrency 3. */
async function maxRunning(map: MapImpl): Promise<{ max: number; got: number[] }> {
  const delays = [9, 1, 5, 2, 8, 1, 1, 7, 3, 4, 6, 2, 9, 1, 3, 5, 2, 8, 4, 1];
  let running = 0;
  let max = 0;
  const got = await collect(map(delays.keys(), async (i) => {
    running++;
    max = Math.max(max, running);
    await sleep(delays[i]!);
    running--;
    return i;
  }, { concurrency: 3 }));
  return { max, got };
}

/** Rejections nobody handled while a test ran (there must be none). */
let unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
beforeEach(() => {
  unhandled = [];
  process.on('unhandledRejection', onUnhandled);
});
afterEach(async () => {
  await sleep(20);
  process.off('unhandledRejection', onUnhandled);
  expect(unhandled).toEqual([]);
});

describe('orderedMap', () => {
  it('yields in input order while completing out of order, within the window', async () => {
    const rng = mulberry32(3);
    const delays = Array.from({ length: 24 }, () => Math.floor(rng() * 15));
    let running = 0;
    let maxRunning = 0;
    let started = 0;
    const completed: number[] = [];
    const gen = orderedMap(
      delays.keys(),
      async (i) => {
        started++;
        running++;
        maxRunning = Math.max(maxRunning, running);
        await sleep(delays[i]);
        running--;
        completed.push(i);
        return i * 10;
      },
      { concurrency: 3 },
    );
    const got: number[] = [];
    for await (const v of gen) {
      // Never more than window (= 2 * concurrency) started beyond what was consumed, this one included.
      expect(started - got.length).toBeLessThanOrEqual(6 + 1);
      got.push(v);
      await sleep(2); // a slow consumer must not let the producer run ahead
    }
    expect(got).toEqual(delays.map((_, i) => i * 10));
    expect(completed).not.toEqual([...completed].sort((a, b) => a - b)); // the test really saw reordering
    expect(maxRunning).toBe(3);
  });

  it('never runs more than `concurrency` calls; an unbounded map fails the same check (control)', async () => {
    const bounded = await maxRunning(orderedMap);
    expect(bounded.got).toEqual([...Array(20).keys()]);
    expect(bounded.max).toBe(3);
    const control = await maxRunning(unboundedMap);
    expect(control.got).toEqual([...Array(20).keys()]);
    expect(control.max).toBeGreaterThan(3);
  });

  it('maps an async source in order and holds at most the window under a slow consumer', async () => {
    let pulled = 0;
    async function* rows() {
      for (let i = 0; i < 30; i++) {
        await sleep(i % 3);
        pulled++;
        yield i;
      }
    }
    const got: number[] = [];
    for await (const v of orderedMap(rows(), async (i) => { await sleep((7 * i) % 5); return -i; }, { concurrency: 2, window: 5 })) {
      expect(pulled - got.length).toBeLessThanOrEqual(5 + 1); // window + the one being consumed
      got.push(v);
      await sleep(3);
    }
    expect(got).toEqual([...Array(30).keys()].map((i) => -i));
  });

  it('pulls the input lazily (bounded memory on long inputs)', async () => {
    let pulled = 0;
    function* endless() {
      for (let i = 0; ; i++) {
        pulled++;
        yield i;
      }
    }
    const got: number[] = [];
    for await (const v of orderedMap(endless(), async (i) => i, { concurrency: 2 })) {
      got.push(v);
      if (got.length === 10) break;
    }
    expect(got).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(pulled).toBeLessThanOrEqual(10 + 4 + 1);
  });

  it('an early break stops intake, settles the running calls and closes the source', async () => {
    let pulled = 0;
    let running = 0;
    let started = 0;
    let closed = false;
    async function* endless() {
      try {
        for (let i = 0; ; i++) {
          pulled++;
          yield i;
        }
      } finally {
        closed = true;
      }
    }
    for await (const v of orderedMap(endless(), async (i) => {
      started++;
      running++;
      await sleep(i % 2 === 0 ? 8 : 1);
      running--;
      return i;
    }, { concurrency: 3 })) {
      if (v === 4) break;
    }
    expect(running).toBe(0);
    expect(closed).toBe(true);
    expect(pulled).toBeLessThanOrEqual(5 + 6 + 1);
    const startedAtExit = started;
    await sleep(30);
    expect(started).toBe(startedAtExit); // no work outlives the loop
    expect(started).toBeLessThan(pulled); // the queued items were dropped, not run
  });

  it('throws the failing item in its turn and leaves nothing running', async () => {
    let running = 0;
    const got: number[] = [];
    const run = async () => {
      for await (const v of orderedMap(
        [0, 1, 2, 3, 4, 5, 6, 7],
        async (i) => {
          running++;
          await sleep(i === 5 ? 1 : 10);
          running--;
          if (i === 5) throw new Error('boom 5');
          return i;
        },
        { concurrency: 4 },
      )) {
        got.push(v);
      }
    };
    await expect(run()).rejects.toThrow('boom 5');
    expect(got).toEqual([0, 1, 2, 3, 4]);
    expect(running).toBe(0);
  });

  it('the first failure stops intake at once: nothing is pulled or started after it', async () => {
    let pulled = 0;
    let startedAfterFailure = 0;
    let failed = false;
    let running = 0;
    const endless = function* () {
      for (let i = 0; ; i++) {
        pulled++;
        yield i;
      }
    };
    const run = collect(orderedMap(endless(), async (i) => {
      if (failed) startedAfterFailure++;
      running++;
      await sleep(i === 2 ? 1 : 15);
      running--;
      if (i === 2) {
        failed = true;
        throw new Error('boom 2');
      }
      return i;
    }, { concurrency: 3, window: 8 }));
    await expect(run).rejects.toThrow('boom 2');
    expect(startedAfterFailure).toBe(0);
    expect(running).toBe(0);
    expect(pulled).toBeLessThanOrEqual(8); // the first window, then no more
  });

  it('two failures: the earlier item\'s error is thrown whatever finished first', async () => {
    const run = (slowFirst: boolean) => collect(orderedMap([0, 1, 2, 3], async (i) => {
      await sleep(i === 1 ? (slowFirst ? 15 : 1) : i === 3 ? (slowFirst ? 1 : 15) : 2);
      if (i === 1 || i === 3) throw new Error(`boom ${i}`);
      return i;
    }, { concurrency: 4 }));
    await expect(run(true)).rejects.toThrow('boom 1');
    await expect(run(false)).rejects.toThrow('boom 1');
  });

  it('a source that throws: the items before it are yielded, then its error', async () => {
    async function* broken() {
      yield 1;
      yield 2;
      throw new Error('source broke');
    }
    const got: number[] = [];
    const run = async () => {
      for await (const v of orderedMap(broken(), async (i) => { await sleep(3 - i); return i * 2; }, { concurrency: 2 })) got.push(v);
    };
    await expect(run()).rejects.toThrow('source broke');
    expect(got).toEqual([2, 4]);
  });

  it('rejects a bad concurrency or window', async () => {
    await expect(collect(orderedMap([1], async (x) => x, { concurrency: 0 }))).rejects.toThrow(RangeError);
    await expect(collect(orderedMap([1], async (x) => x, { concurrency: 1.5 }))).rejects.toThrow(RangeError);
    await expect(collect(orderedMap([1], async (x) => x, { concurrency: 4, window: 2 }))).rejects.toThrow(RangeError);
    expect(await collect(orderedMap([1, 2], async (x) => x, { concurrency: 1, window: 1 }))).toEqual([1, 2]);
  });
});

/** Files that import p-queue themselves (a queue of their own instead of orderedMap). */
const importsPQueue = (text: string) => /\bfrom\s+['"]p-queue['"]|import\(\s*['"]p-queue['"]\s*\)/.test(text);

describe('one concurrency helper', () => {
  it('no product file but pipeline/concurrency.ts imports p-queue', async () => {
    expect(importsPQueue("import PQueue from 'p-queue';")).toBe(true); // control
    expect(importsPQueue("const { default: Q } = await import('p-queue');")).toBe(true); // control
    expect(importsPQueue('// p-queue completes tasks out of order')).toBe(false);
    const found: string[] = [];
    for (const dir of ['bin', 'cli', 'data', 'eval', 'nn', 'ops', 'pipeline', 'stages']) {
      for (const f of (await fs.readdir(dir, { recursive: true })).map((r) => path.join(dir, r))) {
        if (/\.(ts|mjs|js)$/.test(f) && importsPQueue(await fs.readFile(f, 'utf8'))) found.push(f);
      }
    }
    expect(found.sort()).toEqual(['pipeline/concurrency.ts']);
  });
});
