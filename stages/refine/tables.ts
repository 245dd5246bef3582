/**
 * cache/pseudo_masks.arrow: refine's output, one row per row of cams.arrow (every split, same
 * order), masks at the ORIGINAL image size (dataset.arrow orig_height x orig_width), class indices
 * of the dataset (`tagseg.classes`), 255 = ignore. Read by the segment and audit stages; VOC-format
 * palette PNGs of the same masks go to outputs/pseudo_masks/<id>.png (export.ts).
 *
 * Metadata `extra` (RefineExtra): background, source (which maps were refined), the bg rule, the
 * CRF settings, the ignore rule, the part-order pairs.
 */
import { artifact } from '../../pipeline/artifacts.js';
import type { ColumnSpec } from '../../pipeline/arrow.js';

export const REFINE_OUTPUTS = {
  masks: artifact('pseudoMasks'),
  pngs: artifact('pseudoMaskPngs'),
  metrics: artifact('refineMetrics'),
  classesPlot: artifact('refineClassesPlot'),
} as const;

export const PSEUDO_MASK_COLUMNS: ColumnSpec[] = [
  { name: 'id', type: 'utf8' },
  { name: 'split', type: 'utf8' },
  { name: 'height', type: 'int32', doc: 'original image height (after EXIF orientation)' },
  { name: 'width', type: 'int32', doc: 'original image width' },
  { name: 'tags', type: 'list<int32>', doc: 'foreground tags (dataset class indices): the only foreground classes the mask may hold' },
  { name: 'mask', type: 'binary', tensor: { dtype: 'uint8', shape: '[height, width]' }, doc: 'dataset class indices, 255 = ignore' },
  {
    name: 'confidence',
    type: 'binary',
    tensor: { dtype: 'uint8', shape: '[height, width]' },
    doc: 'round(255 x final posterior of the chosen class), before ignoring (also set on ignore pixels)',
  },
  { name: 'class_pixels', type: 'list<int32>', doc: 'pixels per dataset class (length = number of classes), ignore excluded' },
  { name: 'ignore_fraction', type: 'float32', doc: 'fraction of the pixels set to 255' },
  { name: 'mean_margin', type: 'float32', doc: 'mean top1 - top2 posterior margin over the non-ignored pixels (0 when none)' },
  { name: 'flags', type: 'list<utf8>', doc: "image-level sanity flags: 'empty:<class name>' (a tag with no pixel), 'mostly_ignore'" },
];

/** Which maps refine reads: the contrast stage's `propagated` (RCA + random walk), affinity_cams or cams. */
export type RefineSource = 'contrast' | 'affinity' | 'cam';

export interface RefineExtra {
  background: number | null;
  source: RefineSource;
  /** Table and column the maps came from. */
  maps: { table: string; column: string };
  /** null without a background class. */
  bg: { mode: 'threshold' | 'power'; threshold: number; power: number } | null;
  crf: {
    iterations: number;
    gaussian: { sxy: number; compat: number };
    bilateral: { sxy: number; srgb: number; compat: number };
    normalization: 'symmetric';
  };
  ignore: { rule: string; margin: number };
  /** refine.above's 'upper/lower' pairs, as given. */
  above: string[];
  mostly_ignore: number;
}
