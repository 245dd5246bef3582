/**
 * Worker thread of the refine pool (pool.ts): runs refineImage on the messages it gets and posts
 * the result back, its arrays transferred (no copy). One image at a time per worker.
 */
import { parentPort } from 'node:worker_threads';
import { messageOf } from '../../pipeline/errors.js';
import { type RefineInput, type RefineSettings, refineImage } from './refine.js';

export interface RefineRequest {
  id: number;
  input: RefineInput;
  settings: RefineSettings;
}

if (!parentPort) throw new Error('stages/refine/worker.ts runs as a worker thread (see pool.ts)');
const port = parentPort;
port.on('message', ({ id, input, settings }: RefineRequest) => {
  try {
    const r = refineImage(input, settings);
    port.postMessage({ id, result: r }, [r.mask.buffer, r.confidence.buffer, r.before.buffer, r.crf.buffer] as ArrayBuffer[]);
  } catch (err) {
    port.postMessage({ id, error: messageOf(err) });
  }
});
