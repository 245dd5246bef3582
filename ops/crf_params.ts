/** Dense CRF keys (crf.ts), shared by refine.crf and segment.crf: constraints here, defaults and docs in each section. */
import { z } from 'zod';
import { type KeySpec, group, keys } from '../pipeline/params_spec.js';

const CRF = {
  iterations: z.number().int().min(0),
  gaussian_sxy: z.number().gt(0),
  gaussian_compat: z.number().min(0),
  bilateral_sxy: z.number().gt(0),
  bilateral_srgb: z.number().gt(0),
  bilateral_compat: z.number().min(0),
};

/** The `crf` group of a section; iterations 0 = no CRF. */
export function crfGroup(doc: string, spec: KeySpec<typeof CRF>) {
  return group(doc, keys(CRF, spec));
}
