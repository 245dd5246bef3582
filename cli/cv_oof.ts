/**
 * Out-of-fold label quality (`tagseg cv --oof`): each protocol run's model, which never trained on
 * its held-out fold, gives its probabilities on that fold's images; each image's pseudo-mask is
 * scored under them (eval/label_quality.ts, cleanlab's softmin). The probabilities are the
 * network's (segment.scales x flip averaged, as the stage infers), before any CRF: confident
 * learning wants a model's calibrated probabilities, and the CRF's marginals are sharpened towards
 * the image's edges rather than the labels' likelihood. Scored at the working size, where the
 * network sees the image, with the pseudo-mask resized by nearest neighbour (as segment trains).
 */
import * as path from 'node:path';
import { LABEL_QUALITY_FILE } from '../data/review.js';
import { writeFileAtomic } from '../pipeline/fsutil.js';
import { stat } from './cv_summary.js';
import { type LabelQualityRow, formatLabelQuality, maskQuality } from '../eval/label_quality.js';
import { TableReader } from '../pipeline/arrow.js';
import { TagsegError } from '../pipeline/errors.js';
import { batchProbs } from '../stages/segment/infer.js';
import { labelsAtWorkingSize } from '../stages/segment/labels.js';
import { loadSegModel } from '../stages/segment/net.js';

/** One held-out image's score under one (fold, seed) model: what a run record keeps. */
export interface OofScore {
  id: string;
  quality: number | null;
  self_confidence: number | null;
  pixels: number;
}

export interface OofInputs {
  /** images.arrow and pseudo_masks.arrow (the pipeline's, never the run's). */
  images: string;
  pseudo: string;
  /** The run's saved segment model folder. */
  model: string;
}

/** The pseudo-masks of `ids` (original size). */
async function pseudoMasksOf(file: string, ids: ReadonlySet<string>): Promise<Map<string, { mask: Uint8Array; height: number; width: number }>> {
  const reader = await TableReader.open(file, { stage: 'refine' });
  const out = new Map<string, { mask: Uint8Array; height: number; width: number }>();
  try {
    for await (const row of reader.rows()) {
      if (ids.has(row.id as string)) out.set(row.id as string, { mask: row.mask as Uint8Array, height: row.height as number, width: row.width as number });
    }
  } finally {
    await reader.close();
  }
  return out;
}

/** Scores of the held-out `ids` under the model of `io.model`, in images.arrow order. */
export async function oofScores(io: OofInputs, ids: readonly string[]): Promise<OofScore[]> {
  const want = new Set(ids);
  const pseudo = await pseudoMasksOf(io.pseudo, want);
  const net = await loadSegModel(io.model);
  const K = net.config.classes.length;
  const out: OofScore[] = [];
  const reader = await TableReader.open(io.images, { stage: 'ingest' });
  try {
    for await (const row of reader.rows()) {
      const id = row.id as string;
      if (!want.has(id)) continue;
      const pm = pseudo.get(id);
      if (!pm) throw new TagsegError(`image '${id}' has no pseudo-mask`, { file: io.pseudo, hint: 'rerun `tagseg run refine`' });
      const H = row.height as number;
      const W = row.width as number;
      const labels = labelsAtWorkingSize(pm.mask, pm.height, pm.width, H, W, K, { file: io.pseudo, id });
      const probs = await batchProbs(net, [row.pixels as Uint8Array], H, W, { scales: net.config.scales, flip: net.config.flip });
      const q = maskQuality(probs, labels, K);
      out.push({ id, quality: q.quality, self_confidence: q.selfConfidence, pixels: q.pixels });
    }
  } finally {
    await reader.close();
    net.dispose();
  }
  if (out.length !== want.size) throw new TagsegError(`${want.size - out.length} held-out images are not in images.arrow`, { file: io.images, hint: 'rerun the protocol after ingest: its folds are stale' });
  return out;
}

/** The table rows: per image, its fold's scores averaged over the seeds that scored it. */
export function oofTable(runs: readonly { fold: number; seed: number; oof?: OofScore[] | null }[], recipe: string): LabelQualityRow[] {
  const acc = new Map<string, { fold: number; q: number[]; c: number[]; pixels: number; seeds: number }>();
  for (const r of runs) {
    for (const s of r.oof ?? []) {
      const a = acc.get(s.id) ?? { fold: r.fold, q: [], c: [], pixels: s.pixels, seeds: 0 };
      if (a.fold !== r.fold) throw new TagsegError(`image '${s.id}' is held out in folds ${a.fold} and ${r.fold}`);
      if (s.quality !== null) a.q.push(s.quality);
      if (s.self_confidence !== null) a.c.push(s.self_confidence);
      a.seeds++;
      acc.set(s.id, a);
    }
  }
  const mean = (v: number[]) => (v.length ? v.reduce((x, y) => x + y, 0) / v.length : null);
  return [...acc].map(([id, a]) => ({ id, label_quality: mean(a.q), self_confidence: mean(a.c), labelled_pixels: a.pixels, fold: a.fold, seeds: a.seeds, recipe }));
}

/**
 * The table into the protocol's folder and to review/label_quality.csv, which the audit reads (the
 * latest --oof run wins); what the summary says of it.
 */
export async function writeOofTable(root: string, dir: string, runs: Parameters<typeof oofTable>[0], hash: string): Promise<{ file: string; images: number; mean: number | null }> {
  const rows = oofTable(runs, hash);
  const table = formatLabelQuality(rows);
  await writeFileAtomic(path.join(dir, 'label_quality.csv'), table);
  await writeFileAtomic(path.join(root, LABEL_QUALITY_FILE), table);
  return { file: LABEL_QUALITY_FILE, images: rows.length, mean: stat(rows.map((r) => r.label_quality)).mean };
}
