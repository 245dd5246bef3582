/**
 * Worker thread of the refine pool (pool.ts, ops/workerpool.ts): runs refineImage on the messages
 * it gets and posts the result back, its arrays transferred (no copy).
 */
import { serveTasks } from '../../ops/workerpool.js';
import { type RefineInput, type RefineSettings, type RefinedImage, refineImage } from './refine.js';

export interface RefineRequest {
  input: RefineInput;
  settings: RefineSettings;
}

serveTasks('stages/refine/worker.ts', ({ input, settings }: RefineRequest) => refineImage(input, settings),
  (r: RefinedImage) => [r.mask.buffer, r.confidence.buffer, r.before.buffer, r.crf.buffer] as ArrayBuffer[]);
