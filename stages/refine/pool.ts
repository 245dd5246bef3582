/**
 * Worker threads for refineImage: the dense CRF is synchronous JS, so on one thread the refine
 * stage uses one core however many images it decodes at once (p-queue bounds I/O, not CPU:
 * ecosystem.md). The pool runs up to `size` images at a time, each in its own thread; results
 * come back in whatever order they finish, and the caller (orderedMap) restores the row order,
 * so the output is the same as with one thread: refineImage is deterministic.
 *
 * Workers start from worker_boot.mjs, which registers tsx and loads worker.ts (the CLI runs
 * TypeScript from the tree). Size 1 runs inline on the calling thread, with no worker at all.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { TagsegError } from '../../pipeline/errors.js';
import { type RefinedImage, type RefineInput, type RefineSettings, refineImage } from './refine.js';
import type { RefineRequest } from './worker.js';

interface Pending {
  resolve(r: RefinedImage): void;
  reject(e: Error): void;
}

export class RefinePool {
  private readonly idle: Worker[] = [];
  /** Callers waiting for a free thread; null when the pool failed or closed. */
  private readonly waiting: Array<(w: Worker | null) => void> = [];
  private readonly pending = new Map<number, Pending>();
  private readonly workers: Worker[] = [];
  private nextId = 0;
  private failure: Error | null = null;
  private closed = false;

  /** `size` threads (at most the machine's cores; at least 1; 1 = inline). */
  constructor(size: number) {
    const n = Math.max(1, Math.min(size, availableParallelism()));
    if (n === 1) return;
    for (let i = 0; i < n; i++) {
      const w = new Worker(new URL('./worker_boot.mjs', import.meta.url));
      w.on('message', (m: { id: number; result?: RefinedImage; error?: string }) => {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        this.release(w);
        if (!p) return;
        if (m.result) p.resolve(m.result);
        else p.reject(new TagsegError(`refine worker: ${m.error ?? 'no result'}`));
      });
      w.on('error', (err) => this.fail(err));
      w.on('exit', (code) => {
        if (code !== 0) this.fail(new Error(`refine worker exited with code ${code}`));
      });
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  /** Threads in use (1 = inline). */
  get size(): number {
    return Math.max(1, this.workers.length);
  }

  /** refineImage(input, settings) on a free thread. `input`'s arrays are copied to the worker. */
  async run(input: RefineInput, settings: RefineSettings): Promise<RefinedImage> {
    if (this.closed) throw new TagsegError('refine pool closed');
    if (this.workers.length === 0) return refineImage(input, settings);
    if (this.failure) throw this.failure;
    const w = this.idle.pop() ?? (await new Promise<Worker | null>((resolve) => this.waiting.push(resolve)));
    if (!w) throw this.failure ?? new Error('refine pool closed');
    const id = this.nextId++;
    return new Promise<RefinedImage>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      const req: RefineRequest = { id, input, settings };
      w.postMessage(req);
    });
  }

  /** Stops every thread (pending runs are rejected). */
  async close(): Promise<void> {
    this.closed = true;
    const ws = this.workers.splice(0);
    this.fail(new Error('refine pool closed'));
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
