/** A toy stage for test/pipeline/toy_stage.test.ts: params seed + toy in, toy/out.json out. */
import { writeFileAtomic } from '../../../pipeline/fsutil.js';
import type { Stage } from '../../../pipeline/stage.js';
import type { ToyRunParams } from './params.js';

export { sections } from './params.js';

const OUT = 'toy/out.json';

export const stage: Stage = {
  name: 'toy',
  summary: 'repeat toy.word toy.times times -> toy/out.json',
  io: () => ({ reads: [], writes: [OUT], metrics: [], plots: [], params: ['seed', 'toy'] }),
  async run(ctx) {
    const p = ctx.params as unknown as ToyRunParams;
    const text = Array.from({ length: p.toy.times }, () => p.toy.word).join(' ');
    await writeFileAtomic(ctx.path(OUT), `${JSON.stringify({ seed: p.seed, text })}\n`);
    return { text };
  },
};
