/** params.yaml `refine`: maps -> pseudo-masks (background, dense CRF, ignore). */
import { artifact } from '../../pipeline/artifacts.js';
import { z } from 'zod';
import { crfGroup } from '../../ops/crf_params.js';
import { key } from '../../pipeline/params_spec.js';
import { shardsKey } from '../../pipeline/shard.js';

export const refineParams = z.strictObject({
  source: key(
    z.enum(['contrast', 'affinity', 'cam']),
    'contrast',
    'maps to refine: contrast (RCA + random walk: contrast_cams.arrow propagated) | affinity (random walk of the CAMs) | cam',
  ),
  bg: key(z.enum(['threshold', 'power']), 'threshold', 'with a background class: threshold (constant bg score, IRN) | power (bg = (1 - max map)^bg_power, PSA)'),
  bg_threshold: key(z.number().min(0).max(1), 0.25, 'constant bg score (IRN sem_seg_bg_thres 0.25 on random-walk maps)'),
  bg_power: key(z.number().gt(0), 16, 'exponent of (1 - max map) (PSA alpha 4 / 16 / 32)'),
  crf: crfGroup("dense CRF on the original image (PSA crf_inference, with IRN's bilateral kernel)", {
    iterations: [10, 'mean-field iterations (PSA/IRN 10; 0 = no CRF)'],
    gaussian_sxy: [3, 'smoothness kernel width in original pixels (PSA 3)'],
    gaussian_compat: [3, 'its Potts weight (PSA 3)'],
    bilateral_sxy: [50, "appearance kernel width in original pixels (PSA 80, IRN 50; MSRC-v2: PSA's -> 65.8 after the CRF, IRN's -> 70.1, maps 68.3)"],
    bilateral_srgb: [5, 'its colour width, 0-255 RGB (PSA 13, IRN 5)'],
    bilateral_compat: [10, 'its Potts weight (PSA/IRN 10)'],
  }),
  ignore: key(
    z.enum(['none', 'margin', 'disagree', 'either']),
    'either',
    "pixels set to 255: margin (top-two posterior margin < ignore_margin) | disagree (CRF label != the maps' label) | either | none",
  ),
  ignore_margin: key(z.number().min(0).max(1), 0.1, 'minimum top1 - top2 posterior margin kept by margin / either'),
  above: key(
    z.array(z.string().regex(/^[^/]+\/[^/]+$/, "an 'upper/lower' pair of class names, e.g. face/body")),
    [],
    "'upper/lower' class pairs that tags cannot separate (tagged together): where an image's labels put the upper class's pixels lower (mean row), the two swap (MSRC-v2: face/body)",
  ),
  mostly_ignore: key(z.number().min(0).max(1), 0.5, "flag an image 'mostly_ignore' when more than this fraction of it is ignore"),
  concurrency: key(z.number().int().min(1), 4, 'images decoded and refined at once; CRFs run in min(this, cores) worker threads'),
  shards: shardsKey('refine', artifact('pseudoMasks')),
});

/** The sections this folder owns. */
export const sections = { refine: refineParams };
