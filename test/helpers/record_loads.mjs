// `node --import ./test/helpers/record_loads.mjs ...`: appends every file URL the process resolves
// (after tsx's own resolution) to $TAGSEG_LOAD_LOG, so a test can see which modules a command loads.
import { register } from 'node:module';

register('./record_loads_hooks.mjs', import.meta.url);
