// Worker thread entry (pool.ts): register tsx in this thread, as bin/tagseg.js does for the main
// one, then load the TypeScript worker. Plain JS because a worker starts without tsx's hooks.
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');
