/**
 * Worker threads for refineImage (ops/workerpool.ts): the dense CRF is synchronous JS, so on one
 * thread the refine stage uses one core. The pool runs up to `size` images at a time; the caller
 * (orderedMap) restores the row order, so the output is the same as with one thread: refineImage
 * is deterministic. Size 1 runs inline on the calling thread, with no worker at all.
 */
import { WorkerPool } from '../../ops/workerpool.js';
import { type RefinedImage, type RefineInput, type RefineSettings, refineImage } from './refine.js';
import type { RefineRequest } from './worker.js';

export class RefinePool {
  private readonly pool: WorkerPool<RefineRequest, RefinedImage>;

  /** `size` threads (at most the machine's cores; at least 1; 1 = inline). */
  constructor(size: number) {
    this.pool = new WorkerPool(size, {
      name: 'refine',
      module: new URL('./worker.ts', import.meta.url),
      run: ({ input, settings }) => refineImage(input, settings),
    });
  }

  /** Threads in use (1 = inline). */
  get size(): number {
    return this.pool.size;
  }

  /** refineImage(input, settings) on a free thread. `input`'s arrays are copied to the worker. */
  run(input: RefineInput, settings: RefineSettings): Promise<RefinedImage> {
    return this.pool.run({ input, settings });
  }

  /** Stops every thread (pending runs are rejected). */
  close(): Promise<void> {
    return this.pool.close();
  }
}
