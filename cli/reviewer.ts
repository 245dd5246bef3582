/**
 * What the audit is worth (issue 23, "Measure the audit's worth"): a simulated reviewer, who
 * replaces the pseudo-masks of the k most suspect training images by their ground truth, under the
 * CV protocol (cli/cv.ts).
 *
 * - Conditions: no correction; for each fraction f (default 5% and 10%) and each ranking given
 *   (suspect first: the audit's suspicion, the OOF label quality, ...) the first round(f x n) of
 *   the protocol's n images; and, as the control, as many images drawn at random (seeded hash of
 *   the id). Ids a ranking lacks are left out of its order.
 * - Each condition is a corrections folder, `<out>/corrections/<condition>/<id>.png`, holding the
 *   ground-truth mask files of the chosen images (what a reviewer would hand back), given to the
 *   protocol as `dataset.corrections`; the workspace's own corrections are not used, its
 *   decisions are (the same for every condition). A corrected image in the held-out fold is
 *   never trained on in that fold's run and the fold is scored against ground truth, so a
 *   correction never reaches the score of its own image.
 * - Results: each condition's protocol is a `runCv` under `tagseg cv`'s runs/cv (its recipe keys
 *   the corrections; finished runs kept and resumed, no correction shares `tagseg cv`'s runs); the
 *   gain of a condition is its mIoU minus that of no correction, paired per seed (fold averages),
 *   or per fold with one seed (the cheap protocol), mean ± sd; `vs_random` is the gain over the
 *   random draw of the same size; the audit earns its place when that mean exceeds two of its sds.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { resolveDatasetPath } from '../data/manifest.js';
import { readAll } from '../pipeline/arrow.js';
import { artifact } from '../pipeline/artifacts.js';
import { TagsegError } from '../pipeline/errors.js';
import { ensureDir, exists, writeFileAtomic } from '../pipeline/fsutil.js';
import { log } from '../pipeline/log.js';
import { loadParams } from '../stages/params.js';
import { idHash } from '../stages/segment/labels.js';
import { type CvOptions, protocolIds, runCv } from './cv.js';
import { type CvSummary, type Stat, stat } from './cv_summary.js';

export interface ReviewerOptions extends Pick<CvOptions, 'root' | 'folds' | 'seeds' | 'epochsFactor' | 'foldSeed' | 'sets' | 'onRun'> {
  /** Shares of the protocol's images corrected; default [0.05, 0.1]. */
  fractions?: number[];
  /** Rankings to test, suspect first (ids of the train split). */
  rankings: { name: string; ids: readonly string[] }[];
  /** Seed of the random draws; default 0. */
  randomSeed?: number;
  /** Results folder; default <root>/runs/reviewer. */
  out?: string;
  /**
   * The protocol runs' folder; default `tagseg cv`'s runs/cv (recipes key the corrections), so no
   * correction reuses a finished `tagseg cv` (or `--oof`) run of the same recipe.
   */
  cvOut?: string;
  onCondition?: (c: ReviewerCondition) => void;
}

export interface ReviewerCondition {
  name: string;
  ranking: string | null;
  fraction: number;
  /** Images whose pseudo-mask is replaced by ground truth. */
  corrected: string[];
  /** The protocol run (its folder under cvOut). */
  dir: string;
  miou: Stat;
  per_seed: { seed: number; miou: number | null }[];
  /** mIoU minus no correction's, paired by seed (by fold with one seed: ReviewerResult.paired_by). */
  gain: Stat | null;
  /** mIoU minus the random draw's of the same size (rankings only), paired the same way. */
  vs_random: Stat | null;
  /** vs_random's mean > 2 sd (null: no sd). */
  earns_its_place: boolean | null;
}

export interface ReviewerResult {
  images: number;
  folds: number;
  seeds: number[];
  epochs: number;
  /** What gains are paired by, and so what their sd is over. */
  paired_by: 'seed' | 'fold';
  conditions: ReviewerCondition[];
}

/** The protocol's images in a seeded random order (the control). */
export function randomOrder(ids: readonly string[], seed: number): string[] {
  return [...ids].sort((a, b) => idHash(a, seed + 7919) - idHash(b, seed + 7919) || (a < b ? -1 : 1));
}

/** The conditions' names and their corrected ids: none, then per fraction each ranking and random. */
export function reviewerConditions(ids: readonly string[], rankings: ReviewerOptions['rankings'], fractions: readonly number[], seed: number) {
  const mine = new Set(ids);
  const out: { name: string; ranking: string | null; fraction: number; corrected: string[] }[] = [{ name: 'none', ranking: null, fraction: 0, corrected: [] }];
  for (const f of fractions) {
    if (!(f > 0 && f < 1)) throw new TagsegError(`a corrected share must be in (0, 1), got ${f}`);
    const n = Math.max(1, Math.round(f * ids.length));
    const tag = `${Math.round(f * 1000) / 10}pct`;
    for (const r of [...rankings, { name: 'random', ids: randomOrder(ids, seed) }]) {
      const order = [...new Set(r.ids)].filter((id) => mine.has(id));
      if (order.length < n) throw new TagsegError(`ranking '${r.name}' orders ${order.length} of the protocol's images, fewer than the ${n} to correct`);
      out.push({ name: `${r.name}-${tag}`, ranking: r.name, fraction: f, corrected: order.slice(0, n) });
    }
  }
  return out;
}

/** The corrections folder of a condition: each chosen image's ground-truth mask file as <id>.png. */
async function writeCorrections(root: string, dir: string, ids: readonly string[]): Promise<void> {
  const p = await loadParams(path.join(root, 'params.yaml'));
  const rows = new Map((await readAll(path.join(root, artifact('dataset')), { stage: 'ingest' })).map((r) => [r.id as string, r]));
  await ensureDir(dir);
  for (const id of ids) {
    const target = path.join(dir, `${id}.png`);
    if (await exists(target)) continue;
    const mask = rows.get(id)?.mask_path as string | undefined;
    if (!mask) throw new TagsegError(`image '${id}' has no ground-truth mask to correct with`, { file: path.join(root, artifact('dataset')) });
    await writeFileAtomic(target, await fs.readFile(resolveDatasetPath(path.resolve(root, p.dataset.root), mask)));
  }
}

/**
 * a minus b, paired: per seed (fold averages) with several seeds; with one seed per fold, since
 * conditions share their folds and a fold-to-fold spread (4-5 points on MSRC-v2) is not noise.
 */
function diff(a: CvSummary, b: CvSummary): Stat {
  const minus = (x: number | null, y: number | null | undefined) => (x !== null && y !== null && y !== undefined ? x - y : null);
  if (a.seeds.length > 1) return stat(a.segmenter.per_seed.map((x) => minus(x.miou, b.segmenter.per_seed.find((z) => z.seed === x.seed)?.miou)));
  return stat(a.runs.map((x) => minus(x.miou, b.runs.find((z) => z.seed === x.seed && z.fold === x.fold)?.miou)));
}

export async function runReviewer(o: ReviewerOptions): Promise<ReviewerResult> {
  const root = path.resolve(o.root);
  const out = path.resolve(root, o.out ?? 'runs/reviewer');
  const p = await loadParams(path.join(root, 'params.yaml'), [...(o.sets ?? [])]);
  const { ids } = await protocolIds(root, p.dataset.train_split, false);
  const plan = reviewerConditions(ids, o.rankings, o.fractions ?? [0.05, 0.1], o.randomSeed ?? 0);
  const runs: { c: (typeof plan)[number]; s: CvSummary }[] = [];
  for (const c of plan) {
    const dir = path.join(out, 'corrections', c.name);
    await writeCorrections(root, dir, c.corrected);
    log.info(`reviewer: ${c.name}: ${c.corrected.length} masks corrected`);
    const s = await runCv({ ...o, root, oracle: false, oof: false, corrections: c.corrected.length ? path.relative(root, dir) : '', out: o.cvOut ?? 'runs/cv' });
    runs.push({ c, s });
  }
  const none = runs[0].s;
  const conditions = runs.map(({ c, s }): ReviewerCondition => {
    const random = c.ranking && c.ranking !== 'random' ? runs.find((x) => x.c.ranking === 'random' && x.c.fraction === c.fraction)?.s : undefined;
    const vsRandom = random ? diff(s, random) : null;
    return {
      ...c, dir: s.dir, miou: s.segmenter.miou, per_seed: s.segmenter.per_seed,
      gain: c.ranking ? diff(s, none) : null, vs_random: vsRandom,
      earns_its_place: vsRandom && vsRandom.mean !== null && vsRandom.sd !== null ? vsRandom.mean > 2 * vsRandom.sd : null,
    };
  });
  conditions.forEach((c) => o.onCondition?.(c));
  const result: ReviewerResult = { images: ids.length, folds: none.fold_sizes.length, seeds: none.seeds, epochs: none.epochs, paired_by: none.seeds.length > 1 ? 'seed' : 'fold', conditions };
  await writeFileAtomic(path.join(out, 'reviewer.json'), `${JSON.stringify(result, null, 1)}\n`);
  return result;
}

export function formatReviewer(r: ReviewerResult): string {
  const pm = (s: Stat | null) => (s && s.mean !== null ? `${(100 * s.mean).toFixed(1)}${s.sd !== null ? ` ± ${(100 * s.sd).toFixed(1)}` : ''}` : '-');
  return [
    `simulated reviewer: ${r.images} images, ${r.folds} folds x ${r.seeds.length} seed(s), ${r.epochs} epochs; mIoU % (full coverage, held-out folds), mean ± sd`,
    `gains are paired by ${r.paired_by}: their sd is over ${r.paired_by === 'seed' ? 'seeds (each a fold average)' : 'folds (one seed)'}`,
    'condition             corrected  mIoU          gain          vs random     earns its place',
    ...r.conditions.map((c) => `${c.name.padEnd(20)}  ${String(c.corrected.length).padStart(9)}  ${pm(c.miou).padEnd(12)}  ${pm(c.gain).padEnd(12)}  ${pm(c.vs_random).padEnd(12)}  ${c.earns_its_place === null ? '-' : c.earns_its_place ? 'yes' : 'no'}`),
  ].join('\n');
}
