/**
 * Worker threads for synchronous, CPU-bound JS (the dense CRF: refine's refineImage, predict's
 * CRF): on one thread such work uses one core however many images are decoded at once (p-queue
 * bounds I/O, not CPU: ecosystem.md). The pool runs up to `size` tasks at a time, each in its own
 * thread; results come back in whatever order they finish, and callers restore their order, so
 * the output is the same as with one thread as long as the task is deterministic. With `queue` > 1
 * each thread also holds up to queue - 1 tasks behind the running one, so it goes on to the next
 * without waiting for the calling thread (predict's is busy in the network for a whole batch).
 *
 * A task is a module that calls serveTasks(fn) (the worker side) and the same fn for the calling
 * thread: size 1 runs it inline, with no worker at all. Workers start from worker_boot.mjs, which
 * registers tsx and loads the task module (the CLI runs TypeScript from the tree).
 */
import { availableParallelism } from 'node:os';
import { Worker, parentPort } from 'node:worker_threads';
import { TagsegError, messageOf } from '../pipeline/errors.js';

export interface WorkerTask<Req, Res> {
  /** What errors call it ("refine" -> "refine worker: ..."). */
  name: string;
  /** The module a worker loads; it calls serveTasks with `run`. */
  module: URL;
  /** The task itself, for the inline (size 1) pool. */
  run(req: Req): Res;
}

interface Pending<Res> {
  resolve(r: Res): void;
  reject(e: Error): void;
}

export class WorkerPool<Req, Res> {
  /** Free task slots, one entry per task a thread may still take. */
  private readonly idle: Worker[] = [];
  /** Callers waiting for a free thread; null when the pool failed or closed. */
  private readonly waiting: Array<(w: Worker | null) => void> = [];
  private readonly pending = new Map<number, Pending<Res>>();
  private readonly workers: Worker[] = [];
  private nextId = 0;
  private failure: Error | null = null;
  private closed = false;

  /** `size` threads (at most the machine's cores; at least 1; 1 = inline), `queue` tasks posted to each at most (default 1). */
  constructor(size: number, private readonly task: WorkerTask<Req, Res>, opts: { queue?: number } = {}) {
    const n = Math.max(1, Math.min(size, availableParallelism()));
    if (n === 1) return;
    for (let i = 0; i < n; i++) {
      const w = new Worker(new URL('./worker_boot.mjs', import.meta.url), { workerData: { module: task.module.href } });
      w.on('message', (m: { id: number; result?: Res; error?: string }) => {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        this.release(w);
        if (!p) return;
        if (m.result) p.resolve(m.result);
        else p.reject(new TagsegError(`${task.name} worker: ${m.error ?? 'no result'}`));
      });
      w.on('error', (err) => this.fail(err));
      w.on('exit', (code) => {
        if (code !== 0) this.fail(new Error(`${task.name} worker exited with code ${code}`));
      });
      this.workers.push(w);
    }
    // `idle` holds a free slot per queued task a thread may take, round robin over the threads.
    for (let q = 0; q < Math.max(1, opts.queue ?? 1); q++) this.idle.push(...this.workers);
  }

  /** Tasks posted to threads and not answered yet. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Threads in use (1 = inline). */
  get size(): number {
    return Math.max(1, this.workers.length);
  }

  /** The task on `req` on a free thread. `req`'s arrays are copied to the worker. */
  async run(req: Req): Promise<Res> {
    if (this.closed) throw new TagsegError(`${this.task.name} pool closed`);
    if (this.workers.length === 0) return this.task.run(req);
    if (this.failure) throw this.failure;
    const w = this.idle.pop() ?? (await new Promise<Worker | null>((resolve) => this.waiting.push(resolve)));
    if (!w) throw this.failure ?? new Error(`${this.task.name} pool closed`);
    const id = this.nextId++;
    return new Promise<Res>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      w.postMessage({ id, req });
    });
  }

  /** Stops every thread (pending runs are rejected). */
  async close(): Promise<void> {
    this.closed = true;
    const ws = this.workers.splice(0);
    this.fail(new Error(`${this.task.name} pool closed`));
    await Promise.all(ws.map((w) => w.terminate()));
  }

  private release(w: Worker): void {
    const next = this.waiting.shift();
    if (next) next(w);
    else this.idle.push(w);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const next of this.waiting.splice(0)) next(null);
  }
}

/**
 * The worker side: run `fn` on each request and post the result back, the buffers `transfer`
 * names moved rather than copied. One task at a time per worker.
 */
export function serveTasks<Req, Res>(module: string, fn: (req: Req) => Res, transfer: (res: Res) => ArrayBuffer[]): void {
  if (!parentPort) throw new Error(`${module} runs as a worker thread (see ops/workerpool.ts)`);
  const port = parentPort;
  port.on('message', ({ id, req }: { id: number; req: Req }) => {
    try {
      const r = fn(req);
      port.postMessage({ id, result: r }, transfer(r));
    } catch (err) {
      port.postMessage({ id, error: messageOf(err) });
    }
  });
}
