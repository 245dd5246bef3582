/**
 * The params.yaml sections every stage may read (seed, dataset) and the synthetic dataset's
 * (synth, read by `tagseg synth --from-params`): their one owner. A stage run validates these
 * with its own sections (pipeline/params_core.ts `stageSpec`).
 */
import { z } from 'zod';
import { key } from './params_spec.js';

export const seedParams = key(z.number().int().min(0).max(2 ** 32 - 1), 0, 'global seed for every RNG');

export const datasetParams = z.strictObject({
  root: key(z.string().min(1), 'datasets/synthetic', 'a VOC-layout folder, or a folder of images + CSV (format: csv)'),
  format: key(z.enum(['voc', 'csv']), 'voc', 'voc | csv'),
  csv: key(z.string().min(1), 'tags.csv', 'csv format only: image_id,tags file, relative to root'),
  splits: key(z.array(z.string().min(1)), [], 'VOC ImageSets/Segmentation/<split>.txt to import; [] = all but trainval'),
  train_split: key(z.string().min(1), 'train', 'split whose tags train the classifier and whose masks score pseudo-masks'),
  classes: key(
    z.string(),
    '',
    "classes.json fixing the class indices (project-relative); '' = the dataset's, else VOC's 21 (voc) or the sorted tags (csv: written to classes.json and set here)",
  ),
  // Built-in runner only: DVC needs the dep to exist. Defaulted so older params.yaml files stay valid.
  corrections: key(
    z.string().default('review/corrections'),
    'review/corrections',
    'hand-fixed masks <id>.png (VOC PNGs, project-relative) replacing pseudo-masks in segment; empty folder = none',
  ),
});

export const synthParams = z.strictObject({
  out: key(z.string().min(1), 'datasets/synthetic'),
  images: key(z.number().int().min(1), 240),
  size: key(z.number().int().min(8), 128),
  // Label masks are uint8 with 0 = background and 255 = ignore.
  classes: key(z.number().int().min(1).max(254), 4),
  val_fraction: key(z.number().min(0).lt(1), 0.25),
});

export const SHARED_SECTIONS = { seed: seedParams, dataset: datasetParams, synth: synthParams };
