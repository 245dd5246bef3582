// Worker thread entry (workerpool.ts): register tsx in this thread, as bin/tagseg.js does for the
// main one, then load the TypeScript task module named in workerData. Plain JS because a worker
// starts without tsx's hooks.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.module);
