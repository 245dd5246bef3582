/**
 * cache/cams.arrow: one row per image of every split (tags exist for every ingested image).
 * Maps are stored at stride 4 of the working size: height = ceil(image_height / 4),
 * width = ceil(image_width / 4). Upsample bilinearly (half-pixel centres; evaluate.ts
 * resizeBilinear) to compare with masks. Table metadata `extra`: background, stride, dtype,
 * scales, flip, model dir. The affinity and contrast stages write their maps in the same layout.
 */
import type { ColumnSpec } from '../pipeline/arrow.js';

export function camColumns(dtype: 'float16' | 'float32'): ColumnSpec[] {
  return [
    { name: 'id', type: 'utf8' },
    { name: 'split', type: 'utf8' },
    { name: 'tags', type: 'list<int32>', doc: 'dataset class index of each stored channel, in order (foreground tags only)' },
    { name: 'height', type: 'int32', doc: 'map height = ceil(image_height / stride)' },
    { name: 'width', type: 'int32', doc: 'map width = ceil(image_width / stride)' },
    { name: 'image_height', type: 'int32', doc: 'working height of the image' },
    { name: 'image_width', type: 'int32', doc: 'working width of the image' },
    {
      name: 'cams',
      type: 'binary',
      tensor: { dtype, shape: '[tags, height, width]' },
      doc: 'ReLU CAMs summed over scales and flips, each channel divided by its max (all-zero channels stay 0)',
    },
  ];
}

export interface CamsExtra {
  background: number | null;
  stride: number;
  dtype: 'float16' | 'float32';
  scales: number[];
  flip: boolean;
  model: string;
}
