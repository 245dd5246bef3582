/**
 * The dense CRF of a probability map as a worker-pool task (workerpool.ts): `predict` runs each
 * image's CRF on a free core while the main thread decodes and runs the network on the next
 * images. One function, crfOfProbs, serves the inline path, the workers and segmentBatch, so the
 * marginals are the same bytes wherever they are computed.
 */
import { type DenseCrfOptions, denseCrf, unaryFromProbs } from './crf.js';
import { WorkerPool } from './workerpool.js';

export interface CrfRequest {
  /** Probabilities [H, W, K], pixel-major. */
  probs: Float32Array;
  /** RGB [H, W, 3] at the same grid. */
  rgb: Uint8Array;
  H: number;
  W: number;
  K: number;
  crf: DenseCrfOptions;
}

/** Dense CRF marginals [H, W, K] of `probs` (unary -log p) on the image `rgb`. */
export function crfOfProbs({ probs, rgb, H, W, K, crf }: CrfRequest): Float32Array {
  return denseCrf(unaryFromProbs(probs, K), rgb, H, W, K, crf);
}

/** The CRF task of the pool (crf_worker.ts serves it). */
export const CRF_TASK = { name: 'crf', module: new URL('./crf_worker.ts', import.meta.url), run: crfOfProbs };

/**
 * A pool of `size` CRF threads (1 = inline on the calling thread), each with the next image queued
 * behind its current one: predict's main thread runs the network for a whole batch at a time, during
 * which an idle thread could not be handed its next image.
 */
export function crfPool(size: number): WorkerPool<CrfRequest, Float32Array> {
  return new WorkerPool(size, CRF_TASK, { queue: 2 });
}
