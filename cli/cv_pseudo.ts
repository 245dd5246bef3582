/**
 * `tagseg cv --choose refine.<key>=v1,v2,...`: the evaluation protocol's choice of pseudo-mask
 * (refine) settings by nested cross-validation (issue 22 item 1). Nothing is retrained: refine is
 * per image and reads only the map tables, the images and its params.
 *
 * - Candidates: the grid over the --choose keys (refine.* settings that change the masks, checked
 *   against the params schema); every other setting, the CRF's included, is params.yaml's.
 * - Per candidate, refine's own computation (stages/refine refineImages: same maps, CRF, pool) on
 *   the protocol's images (cli/cv.ts protocolIds: the train split's images with a mask); each
 *   image's pseudo-mask goes to `masks/<id>.png` and its confusion matrix against the ground truth
 *   (original size, eval/metrics.ts) to a line of `images.jsonl`, as it is done, in
 *   `<out>/refine/<candidate>/`. A rerun reads them back and refines only the missing images, so
 *   the command can be stopped and continued, and another grid reuses the candidates it shares.
 *   `<candidate>` hashes the protocol version, the refine settings that change the masks, the split
 *   and the contents of what refine reads (dataset.arrow, the map tables, the originals and masks
 *   of the protocol's images); not the code: after a code change that alters masks, use a new --out.
 * - Choice (cv_pseudo_summary.ts): the folds of `tagseg cv` (assignFolds: --folds, --fold-seed);
 *   per fold, the candidate with the best full-coverage mIoU on the other folds' pooled images,
 *   scored on the held-out fold. `<out>/refine/choice-<hash>/`: protocol.json, summary.json.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { resolveDatasetPath } from '../data/manifest.js';
import { pngName } from '../data/mask_png.js';
import { classPalette, encodeIndexedPng } from '../data/palette.js';
import { ConfusionMatrix } from '../eval/metrics.js';
import { artifact } from '../pipeline/artifacts.js';
import { hashTable, readAll, readInfo } from '../pipeline/arrow.js';
import { TagsegError } from '../pipeline/errors.js';
import { ensureDir, exists, hashFile, writeFileAtomic } from '../pipeline/fsutil.js';
import { log, progress } from '../pipeline/log.js';
import { type Params, getParam, loadParams } from '../stages/params.js';
import { SOURCE_MAPS, refineImages } from '../stages/refine/index.js';
import { assignFolds, protocolIds } from './cv.js';
import { NOTES, type PseudoCandidate, type PseudoChoiceSummary, nestedChoice, poolScore } from './cv_pseudo_summary.js';

/** Bumped when the choice's rules or records change, so older work is not mixed with new. */
export const CV_PSEUDO_VERSION = 1;

/** refine keys that do not change the masks: not chosen, not in a candidate's hash. */
const NOT_MASK_KEYS = ['concurrency', 'shards', 'mostly_ignore'];

export interface PseudoChoiceOptions {
  /** Workspace run up to the maps refine reads (tagseg repro refine). */
  root: string;
  folds: number;
  /** Seed of the fold assignment; default 0. */
  foldSeed?: number;
  /** `refine.<key>=v1,v2,...`, one per key (a single value fixes the key for every candidate). */
  choose: readonly string[];
  /** Results folder; default <root>/runs/cv (the work goes to <out>/refine). */
  out?: string;
  /** After each candidate: images refined now, and kept from an earlier run. */
  onCandidate?: (c: { label: string; dir: string; refined: number; kept: number }) => void;
}

interface Candidate { label: string; sets: string[]; params: Params; hash: string; dir: string }

const chooseError = (raw: string, reason: string, hint?: string) => new TagsegError(`${raw}: ${reason}`, { file: '--choose', hint });

/** The --choose arguments as keys and values, each value checked against the schema. */
async function parseChoices(file: string, choose: readonly string[]): Promise<{ keys: string[]; values: string[][] }> {
  if (choose.length === 0) throw new TagsegError('no --choose key', { hint: 'e.g. --choose refine.bg_threshold=0.15,0.25,0.35' });
  const keys: string[] = [];
  const values: string[][] = [];
  for (const raw of choose) {
    const eq = raw.indexOf('=');
    const key = raw.slice(0, Math.max(0, eq)).trim();
    if (eq <= 0) throw chooseError(raw, 'not key=v1,v2,...', 'e.g. --choose refine.bg_threshold=0.15,0.25,0.35');
    if (!key.startsWith('refine.')) throw chooseError(raw, 'only refine.* settings (the pseudo-masks\') are chosen here', 'segment.* recipes: tagseg cv --set; other stages: set them in params.yaml and rerun the pipeline');
    if (NOT_MASK_KEYS.includes(key.slice('refine.'.length))) throw chooseError(raw, `${key} does not change the masks`, 'choose settings that change the masks, e.g. refine.bg_threshold, refine.ignore_margin, refine.crf.bilateral_sxy');
    if (keys.includes(key)) throw chooseError(raw, `${key} is given twice`, 'list all its values in one --choose, comma-separated');
    const vs = raw.slice(eq + 1).split(',').map((v) => v.trim());
    if (vs.some((v) => v === '') || new Set(vs).size !== vs.length) throw chooseError(raw, 'values must be distinct and non-empty', 'e.g. refine.bg_threshold=0.15,0.25');
    for (const v of vs) {
      await loadParams(file, [`${key}=${v}`]).catch((err: unknown) => {
        throw err instanceof TagsegError ? chooseError(raw, err.reason, err.hint) : err;
      });
    }
    keys.push(key);
    values.push(vs);
  }
  return { keys, values };
}

/** The refine settings that change the masks. */
function maskSettings(p: Params): Record<string, unknown> {
  return Object.fromEntries(Object.entries(p.refine).filter(([k]) => !NOT_MASK_KEYS.includes(k)));
}

/** Contents of what refine can read for the protocol's `ids`: the tables (by file), and each image's original and mask (`images`). */
async function dataKey(root: string, p: Params, ids: readonly string[]): Promise<Record<string, string>> {
  const at = (rel: string) => path.resolve(root, rel);
  const out: Record<string, string> = {};
  for (const t of new Set([artifact('dataset'), artifact('cams'), ...Object.values(SOURCE_MAPS).map((m) => m.table)])) {
    out[t] = (await exists(at(t))) ? await hashTable(at(t)) : 'none';
  }
  const want = new Set(ids);
  const h = createHash('sha256');
  for (const r of await readAll(at(artifact('dataset')), { stage: 'ingest' })) {
    if (!want.has(r.id as string)) continue;
    const file = (rel: string) => hashFile(resolveDatasetPath(at(p.dataset.root), rel));
    h.update(`${r.id as string}:${await file(r.image_path as string)}:${await file(r.mask_path as string)}\n`);
  }
  out.images = h.digest('hex');
  return out;
}

/** Each grid point's params and work folder (`out`/<hash>). */
async function candidates(file: string, out: string, grid: { keys: string[]; values: string[][] }, data: Record<string, string>): Promise<Candidate[]> {
  const points = grid.values.reduce<string[][]>((acc, vs) => acc.flatMap((a) => vs.map((v) => [...a, v])), [[]]);
  const list: Candidate[] = [];
  for (const point of points) {
    const sets = grid.keys.map((k, i) => `${k}=${point[i]}`);
    const params = await loadParams(file, sets);
    // What this candidate reads: a rerun of another source's stage leaves it as it is.
    const reads = [artifact('dataset'), artifact('cams'), SOURCE_MAPS[params.refine.source].table, 'images'];
    const key = { protocol: CV_PSEUDO_VERSION, train_split: params.dataset.train_split, refine: maskSettings(params), data: Object.fromEntries(reads.map((r) => [r, data[r]])) };
    const hash = createHash('sha256').update(JSON.stringify(key)).digest('hex').slice(0, 16);
    const label = grid.keys.map((k, i) => `${k.slice('refine.'.length)}=${point[i]}`).join(' ');
    const twin = list.find((c) => c.hash === hash);
    if (twin) throw new TagsegError(`candidates '${twin.label}' and '${label}' are the same settings`, { file: '--choose', hint: 'list each value once' });
    list.push({ label, sets, params, hash, dir: path.join(out, hash) });
  }
  return list;
}

/**
 * The records of `file` (one JSON line per finished image); a line cut short by a killed run, and
 * what follows it, is dropped from the file, so appending goes on from a whole line.
 */
async function readRecords(file: string, numClasses: number): Promise<Map<string, ConfusionMatrix>> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  const out = new Map<string, ConfusionMatrix>();
  const kept: string[] = [];
  for (const line of text.split('\n').filter((l) => l !== '')) {
    try {
      const r = JSON.parse(line) as { id: string; cm: Parameters<typeof ConfusionMatrix.fromJSON>[0] };
      const cm = ConfusionMatrix.fromJSON(r.cm);
      if (typeof r.id !== 'string' || cm.numClasses !== numClasses) break;
      out.set(r.id, cm);
      kept.push(line);
    } catch {
      break;
    }
  }
  const whole = kept.map((l) => `${l}\n`).join('');
  if (whole !== text) {
    log.warn(`cv: ${file}: dropping an unfinished record (an interrupted run); its images are refined again`);
    await writeFileAtomic(file, whole);
  }
  return out;
}

/** Refine the candidate's missing images into its folder; its matrices by id, and how many were refined now. */
async function refineCandidate(root: string, c: Candidate, ids: readonly string[], classes: string[], background: number | null): Promise<{ perImage: Map<string, ConfusionMatrix>; refined: number }> {
  await ensureDir(path.join(c.dir, 'masks'));
  await writeFileAtomic(path.join(c.dir, 'candidate.json'), `${JSON.stringify({ protocol: CV_PSEUDO_VERSION, refine: maskSettings(c.params), train_split: c.params.dataset.train_split }, null, 1)}\n`);
  const file = path.join(c.dir, 'images.jsonl');
  const done = await readRecords(file, classes.length);
  const missing = new Set(ids.filter((id) => !done.has(id)));
  let refined = 0;
  if (missing.size === 0) return { perImage: done, refined };
  log.info(`cv: refine ${c.label}: ${missing.size} images (${done.size} kept) -> ${path.relative(root, c.dir)}`);
  const bar = progress(`refine ${c.label}`, missing.size);
  for await (const m of refineImages({ params: c.params, path: (rel) => path.resolve(root, rel), ids: missing })) {
    if (!m.gt) throw new TagsegError(`image '${m.id}' has no ground-truth mask on split '${c.params.dataset.train_split}'`, { file: artifact('dataset'), hint: 'rerun the pipeline from ingest' });
    const cm = new ConfusionMatrix(classes.length).add(m.mask, m.gt);
    await writeFileAtomic(path.join(c.dir, 'masks', pngName(m.id)), encodeIndexedPng(m.mask, m.width, m.height, classPalette(background)));
    await fs.appendFile(file, `${JSON.stringify({ id: m.id, cm: cm.toJSON() })}\n`);
    done.set(m.id, cm);
    refined++;
    bar.tick();
  }
  bar.stop();
  if (refined !== missing.size) throw new TagsegError(`${missing.size - refined} of the protocol's images have no maps`, { file: artifact('cams'), hint: 'rerun the pipeline up to refine (tagseg repro refine)' });
  return { perImage: done, refined };
}

/** Run (or continue) the choice; returns the summary, also written to `<out>/refine/choice-<hash>/summary.json`. */
export async function runPseudoChoice(o: PseudoChoiceOptions): Promise<PseudoChoiceSummary> {
  const root = path.resolve(o.root);
  const file = path.join(root, 'params.yaml');
  const foldSeed = o.foldSeed ?? 0;
  const grid = await parseChoices(file, o.choose);
  const base = await loadParams(file);
  const { ids } = await protocolIds(root, base.dataset.train_split, false);
  const folds = assignFolds(ids, o.folds, foldSeed);
  const cams = path.resolve(root, artifact('cams'));
  if (!(await exists(cams))) throw new TagsegError('not found', { file: cams, hint: 'the choice needs the maps refine reads: tagseg repro refine' });
  const info = await readInfo(cams);
  const classes = info.meta.classes;
  const background = typeof info.meta.extra?.background === 'number' ? info.meta.extra.background : null;
  const out = path.resolve(root, o.out ?? 'runs/cv', 'refine');
  const list = await candidates(file, out, grid, await dataKey(root, base, ids));
  const perImage: Map<string, ConfusionMatrix>[] = [];
  for (const c of list) {
    const r = await refineCandidate(root, c, ids, classes, background);
    perImage.push(r.perImage);
    o.onCandidate?.({ label: c.label, dir: path.relative(root, c.dir), refined: r.refined, kept: ids.length - r.refined });
  }
  const choice = nestedChoice(perImage, folds, classes.length);
  const hash = createHash('sha256').update(JSON.stringify({ protocol: CV_PSEUDO_VERSION, keys: grid.keys, candidates: list.map((c) => c.hash), folds: o.folds, fold_seed: foldSeed })).digest('hex').slice(0, 16);
  const dir = path.join(out, `choice-${hash}`);
  await ensureDir(dir);
  await writeFileAtomic(path.join(dir, 'protocol.json'), `${JSON.stringify({ keys: grid.keys, candidates: list.map((c) => ({ label: c.label, hash: c.hash })), folds }, null, 1)}\n`);
  const cands: PseudoCandidate[] = list.map((c, i) => ({
    label: c.label,
    settings: Object.fromEntries(grid.keys.map((k) => [k, getParam(c.params, k)])),
    dir: path.relative(root, c.dir),
    all_images: poolScore(perImage[i], ids, classes.length),
    per_fold: folds.map((f) => poolScore(perImage[i], f, classes.length)),
    chosen: choice.chosen[i],
  }));
  const summary: PseudoChoiceSummary = {
    protocol: CV_PSEUDO_VERSION, choice: hash, dir: path.relative(root, dir), keys: grid.keys, fold_seed: foldSeed, fold_sizes: folds.map((f) => f.length),
    split: `${o.folds}-fold nested cross-validation over the ${ids.length} images of split '${base.dataset.train_split}' with a ground-truth mask: each fold's settings are chosen on the other folds' masks and scored on its own`,
    candidates: cands,
    folds: choice.folds.map((f) => ({ fold: f.fold, images: folds[f.fold].length, chosen: list[f.chosen].label, chosen_on: f.chosen_on, held_out: f.held_out })),
    estimate: choice.estimate,
    notes: NOTES,
  };
  await writeFileAtomic(path.join(dir, 'summary.json'), `${JSON.stringify(summary, null, 1)}\n`);
  return summary;
}
