/** The toy stage's params section: one file, declared like a real stage's (stages/<x>/params.ts). */
import { z } from 'zod';
import { key } from '../../../pipeline/params_spec.js';

export const toyParams = z.strictObject({
  word: key(z.string().min(1), 'hello', 'what the toy stage writes'),
  times: key(z.number().int().min(1), 3, 'how many times (>= 1)'),
});

/** The sections this folder owns. */
export const sections = { toy: toyParams };

/** What its run reads: it is not in the static Params type (registered at run time). */
export interface ToyRunParams {
  seed: number;
  toy: z.infer<typeof toyParams>;
}
