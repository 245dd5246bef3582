/**
 * cache/contrast_cams.arrow: one row per row of cams.arrow (every split, same order), the columns
 * of cams.arrow (maps/cams_table.ts; `cams` = the RCA refined CAMs before propagation, each
 * channel divided by its max, stride 4) plus `propagated`: the same maps after the affinity stage's
 * random walk. Metadata `extra` as affinity_cams.arrow: background, stride, dtype, model and the
 * walk settings.
 */
import type { ColumnSpec } from '../../pipeline/arrow.js';
import { camColumns } from '../../maps/cams_table.js';

export function contrastColumns(dtype: 'float16' | 'float32'): ColumnSpec[] {
  return [
    ...camColumns(dtype),
    {
      name: 'propagated',
      type: 'binary',
      tensor: { dtype, shape: '[tags, height, width]' },
      doc: 'RCA CAMs after the affinity random walk, each channel divided by its max',
    },
  ];
}
