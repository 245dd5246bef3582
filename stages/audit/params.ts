/** params.yaml `audit`: the pseudo-mask suspicion ranking and its report. */
import { z } from 'zod';
import { artifact } from '../../pipeline/artifacts.js';
import { group, key } from '../../pipeline/params_spec.js';
import { shardsKey } from '../../pipeline/shard.js';

const weight = (value: number, doc = '') => key(z.number().min(0), value, doc, { float: true });

export const auditParams = z.strictObject({
  rca_map: key(
    z.enum(['propagated', 'cams']),
    'propagated',
    'contrast_cams.arrow column taken as the RCA labels: propagated (RCA + random walk) | cams (RCA alone)',
  ),
  cam_threshold: key(z.number().min(0).max(1), 0.15, 'with a background class: constant bg score for the CAM labels (IRN cam_eval_thres 0.15)'),
  random_walk_threshold: key(z.number().min(0).max(1), 0.25, 'same for the random-walk labels (IRN sem_seg_bg_thres 0.25)'),
  rca_threshold: key(z.number().min(0).max(1), 0.25, 'same for the RCA labels'),
  edge_quantile: key(z.number().min(0).max(1), 0.9, "a strong image edge = Sobel magnitude in the image's top 10%"),
  edge_floor: key(z.number().min(0), 16, '... and above this (3x3 Sobel on 0-255 grey; a ~4-level step), so flat images have none'),
  edge_tolerance: key(z.number().int().min(0), 2, 'mask outline pixels within this many px of a strong edge count as aligned'),
  large_area: key(z.number().gt(0).max(1), 0.3, 'tag consistency: a class covering >= this fraction ...'),
  low_confidence: key(z.number().min(0).max(1), 0.5, '... with mean confidence below this is flagged large_low_confidence'),
  weights: group('suspicion score = weighted mean of these terms (stages/audit/suspicion.ts)', {
    ignore: weight(1),
    low_confidence: weight(1),
    disagreement: weight(1),
    empty_tags: weight(1),
    fragmentation: weight(0.5, 'lower: several real instances of a class also fragment a mask'),
    misalignment: weight(0.5, 'lower: edges inside textured objects blur this term'),
    large_low_confidence: weight(0.5),
  }),
  bad_miou: key(
    z.number().min(0).max(1),
    0.5,
    'with ground truth: an image whose pseudo-mask mIoU is below this counts as bad (scores the ranking) ...',
  ),
  bad_coverage: key(z.number().min(0).max(1), 0.5, '... or one that labels (not ignore) less than this share of the ground truth'),
  top: key(z.number().int().min(1), 20, 'most suspicious images listed in metrics/audit.json (and scored against ground truth)'),
  thumb_size: key(z.number().int().min(16), 160, 'report thumbnails: long side in pixels'),
  full_overlays: key(z.boolean(), true, 'report: the final mask over each original image at full size (img/full/)'),
  shards: shardsKey('audit', artifact('auditClasses')),
});

/** The sections this folder owns. */
export const sections = { audit: auditParams };
