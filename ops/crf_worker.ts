/** Worker thread of the CRF pool (crf_pool.ts): the marginals go back transferred (no copy). */
import { crfOfProbs } from './crf_pool.js';
import { serveTasks } from './workerpool.js';

serveTasks('ops/crf_worker.ts', crfOfProbs, (q: Float32Array) => [q.buffer as ArrayBuffer]);
