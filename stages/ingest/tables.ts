/**
 * Layout of the two tables ingest writes. Every later stage reads these; bump SCHEMA_VERSION in
 * pipeline/arrow.ts when a column changes.
 *
 * cache/dataset.arrow  one row per image: the manifest (small; no pixels)
 * cache/images.arrow   one row per image: pixels and mask at the working size
 */
import type { ColumnSpec } from '../../pipeline/arrow.js';

export const DATASET_COLUMNS: ColumnSpec[] = [
  { name: 'id', type: 'utf8', doc: 'image id, unique across splits' },
  { name: 'split', type: 'utf8', doc: 'train / val / test ...' },
  { name: 'image_path', type: 'utf8', doc: 'source image, relative to dataset.root (absolute only outside it)' },
  { name: 'mask_path', type: 'utf8', nullable: true, doc: 'ground-truth palette PNG, relative to dataset.root like image_path; null if none' },
  { name: 'orig_width', type: 'int32', doc: 'after EXIF orientation' },
  { name: 'orig_height', type: 'int32' },
  { name: 'width', type: 'int32', doc: 'working size (long side = ingest.size)' },
  { name: 'height', type: 'int32' },
  { name: 'tags', type: 'list<int32>', doc: 'class indices of the image-level tags' },
  { name: 'tag_names', type: 'list<utf8>', doc: 'class names of the tags' },
];

export const IMAGES_COLUMNS: ColumnSpec[] = [
  { name: 'id', type: 'utf8' },
  { name: 'split', type: 'utf8' },
  { name: 'width', type: 'int32', doc: 'working width' },
  { name: 'height', type: 'int32', doc: 'working height' },
  { name: 'tags', type: 'list<int32>' },
  { name: 'pixels', type: 'binary', tensor: { dtype: 'uint8', shape: '[height, width, 3]' }, doc: 'sRGB, row-major' },
  {
    name: 'mask',
    type: 'binary',
    nullable: true,
    tensor: { dtype: 'uint8', shape: '[height, width]' },
    doc: 'ground-truth class indices at the working size (nearest), 255 = void; null without ground truth',
  },
];

/** Extra metadata stored with both tables (no dataset root: the tables do not depend on where the data lies). */
export interface DatasetExtra {
  background: number | null;
  void: number;
  working_size: number;
}
