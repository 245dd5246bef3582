/**
 * The one concurrency helper of per-image work (decode, refine, render, read): `orderedMap`.
 * Results come back in input order, because the stages write rows in a stable order (DVC assumes
 * deterministic outputs) while p-queue completes tasks out of order; the work in flight is bounded,
 * because a dataset never has to fit in memory.
 */
import PQueue from 'p-queue';

export interface OrderedMapOptions {
  /** Calls of `fn` running at once (an integer >= 1). */
  concurrency: number;
  /**
   * Items started but not yet yielded: running, queued or done and waiting for their turn
   * (default `2 * concurrency`, at least `concurrency`). Bounds memory when the consumer is slower
   * than `fn` (back-pressure): the source is pulled only as the consumer takes results.
   */
  window?: number;
}

type Settled<R> = { ok: true; value: R } | { ok: false; error: unknown } | { ok: 'skipped' };

/**
 * Map `fn` over `items` (sync or async, pulled lazily) with at most `concurrency` calls running
 * and at most `window` results started but not yet yielded, yielding the results in input order.
 *
 * - A failing `fn` stops intake at once: no new item is pulled or started, queued ones are
 *   dropped, the items before it are yielded as usual, and its error is thrown in its turn after
 *   the calls still running have settled (so the same items are yielded and the same error thrown
 *   whatever the timing, and no rejection is left unhandled).
 * - A source that throws: the items pulled before it are mapped and yielded, then its error.
 * - A consumer that stops early (break, throw): items not yet started are dropped, those running
 *   are awaited and the source is closed (its `finally` runs) before the loop exits.
 */
export async function* orderedMap<T, R>(
  items: Iterable<T> | AsyncIterable<T>,
  fn: (item: T, index: number) => Promise<R>,
  opts: OrderedMapOptions,
): AsyncGenerator<R> {
  const window = checkOptions(opts);
  const queue = new PQueue({ concurrency: opts.concurrency });
  const source = Symbol.asyncIterator in items ? items[Symbol.asyncIterator]() : items[Symbol.iterator]();
  const pending: Promise<Settled<R>>[] = [];
  let stop = false; // a call failed or the consumer left: start nothing more
  let done = false; // the source is exhausted or threw
  let sourceError: { error: unknown } | null = null;
  let index = 0;
  const start = (item: T, i: number) =>
    queue.add(async (): Promise<Settled<R>> => {
      if (stop) return { ok: 'skipped' };
      try {
        return { ok: true, value: await fn(item, i) };
      } catch (error) {
        stop = true;
        return { ok: false, error };
      }
    });
  // Keep `window` items started, so decoding goes on while the consumer works.
  const fill = async (): Promise<void> => {
    while (!stop && !done && pending.length < window) {
      let next: IteratorResult<T>;
      try {
        next = await source.next();
      } catch (error) {
        sourceError = { error };
        done = true;
        break;
      }
      if (next.done) done = true;
      else pending.push(start(next.value, index++));
    }
  };
  try {
    await fill();
    while (pending.length > 0) {
      const r = await pending.shift()!;
      // p-queue starts items in input order, so a skipped item always lies after a failed one.
      if (r.ok !== true) throw r.ok === false ? r.error : new Error('orderedMap: a dropped item reached its turn');
      await fill();
      yield r.value;
    }
    if (sourceError) throw (sourceError as { error: unknown }).error;
  } finally {
    stop = true;
    await Promise.all(pending);
    if (!done) await source.return?.();
  }
}

/** The window of `opts`, after checking both numbers (a bad one is a bug in the caller). */
function checkOptions(opts: OrderedMapOptions): number {
  if (!Number.isInteger(opts.concurrency) || opts.concurrency < 1) {
    throw new RangeError(`orderedMap: concurrency must be an integer >= 1, got ${opts.concurrency}`);
  }
  const window = opts.window ?? opts.concurrency * 2;
  if (!Number.isInteger(window) || window < opts.concurrency) {
    throw new RangeError(`orderedMap: window must be an integer >= concurrency (${opts.concurrency}), got ${window}`);
  }
  return window;
}
