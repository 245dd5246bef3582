/** params.yaml `ingest`: decoding the dataset into cache/images.arrow. */
import { z } from 'zod';
import { key } from '../../pipeline/params_spec.js';

export const ingestParams = z.strictObject({
  size: key(z.number().int().min(0), 128, 'long side of the working size in pixels (0 = keep original)'),
  concurrency: key(z.number().int().min(1), 4),
  on_error: key(z.enum(['fail', 'skip']), 'fail', 'fail | skip'),
});

/** The sections this folder owns. */
export const sections = { ingest: ingestParams };
