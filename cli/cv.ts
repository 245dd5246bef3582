/**
 * The evaluation protocol (issue 22): k-fold cross-validation of the segment stage over the images
 * of `dataset.train_split` that have a ground-truth mask. Recipe choices are made on it, and the
 * README's figures come from it.
 *
 * - Folds: the masked ids sorted by a seeded hash of the id (labels.ts idHash, seed `foldSeed`,
 *   default 0; ties by id), then dealt round-robin, so fold sizes differ by at most one and the
 *   assignment depends only on the id set, never on file order. Train-split images without a mask
 *   are neither trained on nor scored (the oracle could not train on them).
 * - Runs: for each fold k and seed s, the segment stage (runSegment with an explicit split) trains
 *   on the labels of the other folds (pseudo-masks, or ground truth with `oracle`) with params
 *   `seed` = base seed + s, and is scored on fold k against its masks at the original resolution.
 *   Seeds vary the segment stage only; the pseudo-masks are the workspace's. The segmenter's
 *   backbone starts from a CAM model trained without fold k (CvCam 'fold', foldCam), so nothing it
 *   starts from has classified the photos it is scored on; `cam: 'workspace'` keeps models/cam.
 * - Scores: full coverage (every pixel with valid ground truth counts, an ignore prediction is
 *   wrong) first; the pseudo-masks of the held-out fold are scored too (full coverage,
 *   labelled-pixel mIoU, coverage). Summary (cv_summary.ts): mean ± sd over seeds of each seed's
 *   fold average; pseudo-masks mean ± sd over folds.
 * - Resumable: each finished (fold, seed) is kept as `<out>/<recipe>/fold<k>-seed<s>.json` and
 *   skipped on rerun; a killed run resumes its segment training from its last epoch checkpoint
 *   (`fold<k>-seed<s>.work/`: its model and checkpoint store, apart from the stage's). `<recipe>`
 *   hashes the protocol version, the segment params after overrides, the base seed, the split, the
 *   fold count and seed, and the contents of the inputs (images.arrow, the cam weights; in pseudo
 *   mode pseudo_masks.arrow and the review); not the code: after a code change that alters
 *   results, use a new `out`.
 * - `oof` (pseudo mode): the folds cover every train-split image, masked or not (a dataset without
 *   ground truth is audited too; held-out images without a mask are not scored against one), and
 *   each run also scores its held-out fold's pseudo-masks under its own model (cv_oof.ts), kept in
 *   its record; at the end review/label_quality.csv (eval/label_quality.ts) gets one row per image.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { DECISIONS_FILE } from '../data/review.js';
import { storeOf } from '../nn/train_store.js';
import { hashTable, readAll } from '../pipeline/arrow.js';
import { TagsegError } from '../pipeline/errors.js';
import { ensureDir, exists, hashFile, writeFileAtomic } from '../pipeline/fsutil.js';
import { log } from '../pipeline/log.js';
import { type Params, loadParams } from '../stages/params.js';
import { CAM_OUTPUTS } from '../stages/cam/io.js';
import { camTrainingHash, formatCamTrain, runCamTrain } from '../stages/cam/train_stage.js';
import { INGEST_OUTPUTS } from '../stages/ingest/ingest.js';
import { REFINE_OUTPUTS } from '../stages/refine/tables.js';
import { SEGMENT_OUTPUTS, type SegScores, runSegment } from '../stages/segment/index.js';
import { idHash } from '../stages/segment/labels.js';
import { type SegmentKeyed, segmentKeyed } from '../stages/segment/params.js';
import { type OofScore, oofScores, writeOofTable } from './cv_oof.js';
import { type CvSummary, summariseCv } from './cv_summary.js';

/** Bumped when the protocol's rules change, so older results are not mixed with new ones. */
export const CV_PROTOCOL_VERSION = 1;

/** cheap: for choosing (short schedule, one seed); full: for reported tables. */
export const CV_PRESETS = {
  cheap: { folds: 3, seeds: 1, epochsFactor: 0.5 },
  full: { folds: 3, seeds: 3, epochsFactor: 1 },
} as const;
export type CvPreset = keyof typeof CV_PRESETS;

const INPUTS = { dataset: INGEST_OUTPUTS.dataset, images: INGEST_OUTPUTS.images, pseudo: REFINE_OUTPUTS.masks, cam: CAM_OUTPUTS.model } as const;

export interface CvOptions {
  /** Workspace: params.yaml, cache/, models/cam (after `tagseg repro refine`). */
  root: string;
  folds: number;
  seeds: number;
  /** segment.epochs x this, rounded, at least 1 (the cheap preset's shortened schedule). */
  epochsFactor: number;
  /** Train on the ground-truth masks (the oracle) instead of the pseudo-masks. */
  oracle?: boolean;
  /** What each run's segmenter starts from (CvCam); default 'fold'. */
  cam?: CvCam;
  /** `segment.*` and `seed` overrides of the trained recipe (`--set`). */
  sets?: readonly string[];
  /** Seed of the fold assignment; default 0. */
  foldSeed?: number;
  /** Results folder; default <root>/runs/cv. */
  out?: string;
  /** Out-of-fold label quality of every train-split image (pseudo mode): see the file comment. */
  oof?: boolean;
  /** Folder of corrected masks used instead of `dataset.corrections` (the reviewer benchmark); '' = none. */
  corrections?: string;
  /** After each (fold, seed): its record, and whether it was trained now (false: kept from before). */
  onRun?: (r: CvRun, trained: boolean) => void;
}

/** One (fold, seed): what `fold<k>-seed<s>.json` holds. */
export interface CvRun {
  protocol: number;
  recipe: string;
  fold: number;
  seed: number;
  /** Where the scores come from, in words. */
  split: string;
  labels: 'pseudo' | 'gt';
  epochs: number;
  trainImages: number;
  heldOutImages: number;
  /** The network on the held-out fold (its miou, at full coverage, is the headline). */
  segmenter: SegScores;
  /** The pseudo-masks of the held-out fold (pseudo mode only). */
  pseudo_masks: SegScores | null;
  /** Epoch its training resumed from (> 0: an interrupted run continued). */
  resumedFrom: number;
  /** Training images whose pseudo-mask a corrected mask replaced (the review; the reviewer benchmark). */
  corrected?: number;
  /** The `--oof` recipe whose identical training this run's record was taken from. */
  adopted_from?: string;
  /** `oof` recipes: the held-out images' label quality under this run's model. */
  oof?: OofScore[];
  seconds: number;
}

/**
 * The CAM model a run's segment stage starts from (its backbone, frozen up to segment.frozen_stages):
 * 'fold' (the default): cam_train again without the held-out fold's images (foldCam), as a model
 * of the pipeline never saw the photos it is later used on; 'workspace': models/cam, trained on the
 * held-out fold's tags too (the protocol before this choice existed; a segmenter that starts from it
 * has learnt to classify the very photos it is scored on).
 */
export type CvCam = 'fold' | 'workspace';

/** The recipe a protocol run trains and what keys its results. */
export interface CvRecipe {
  protocol: number;
  labels: 'pseudo' | 'gt';
  seed: number;
  train_split: string;
  folds: number;
  fold_seed: number;
  /** segmentKeyed: self_train only where it changes the training. */
  segment: SegmentKeyed;
  data: Record<string, string>;
  /** Only in `oof` recipes: folds over every train-split image, held-out label quality kept. */
  oof?: true;
  /** Only in 'fold' recipes (CvCam); absent: the workspace's models/cam. */
  cam?: 'fold';
}

/** Deal `ids` into k folds (see the file comment); each fold keeps the input order. */
export function assignFolds(ids: readonly string[], k: number, foldSeed: number): string[][] {
  if (!Number.isInteger(k) || k < 2) throw new TagsegError(`the protocol needs at least 2 folds, got ${k}`, { hint: 'use --folds 2 or more' });
  if (ids.length < k) throw new TagsegError(`${ids.length} images with masks cannot fill ${k} folds`, { hint: 'use fewer --folds' });
  const h = new Map(ids.map((id) => [id, idHash(id, foldSeed)]));
  const ranked = [...ids].sort((a, b) => h.get(a)! - h.get(b)! || (a < b ? -1 : a > b ? 1 : 0));
  const foldOf = new Map(ranked.map((id, i) => [id, i % k]));
  return Array.from({ length: k }, (_, f) => ids.filter((id) => foldOf.get(id) === f));
}

/** params.yaml + the overrides, checked to touch only what the protocol retrains; epochs scaled; labels set. */
export async function cvParams(root: string, o: Pick<CvOptions, 'sets' | 'epochsFactor' | 'oracle' | 'corrections'>): Promise<Params> {
  for (const s of o.sets ?? []) {
    const key = s.split('=')[0].trim();
    if (key !== 'seed' && !key.startsWith('segment.')) {
      throw new TagsegError(`--set ${s}: the protocol retrains only the segment stage, so it takes segment.* and seed overrides`, { hint: `for ${key}, set it in params.yaml and rerun the pipeline (tagseg repro) first` });
    }
  }
  if (!(o.epochsFactor > 0)) throw new TagsegError(`the epochs factor must be > 0, got ${o.epochsFactor}`);
  const p = await loadParams(path.join(root, 'params.yaml'), [...(o.sets ?? [])]);
  const epochs = Math.max(1, Math.round(p.segment.epochs * o.epochsFactor));
  const dataset = o.corrections === undefined ? p.dataset : { ...p.dataset, corrections: o.corrections };
  return { ...p, dataset, segment: { ...p.segment, epochs, labels: o.oracle ? 'gt' : p.segment.labels } };
}

/**
 * sha256 of a pipeline output the protocol reads (a table by its rows, so a part folder from
 * `refine.shards` keys the same as one file); missing: an error saying which stage to run.
 */
async function hashInput(file: string, table = true): Promise<string> {
  if (!(await exists(file))) throw new TagsegError('not found', { file, hint: 'the protocol needs the pipeline run up to refine: tagseg repro refine' });
  return table ? hashTable(file) : hashFile(file);
}

/**
 * What of the review reaches pseudo-mask training (stages/segment/review.ts): the decisions file's
 * bytes and the corrected masks of the protocol's images (any change to decisions starts a new recipe).
 */
async function reviewKey(root: string, p: Params, ids: readonly string[]): Promise<string> {
  const decisions = path.resolve(root, DECISIONS_FILE);
  const dir = p.dataset.corrections ? path.resolve(root, p.dataset.corrections) : null;
  const mine = new Set(ids.map((id) => `${id}.png`));
  const names = dir && (await exists(dir)) ? (await fs.readdir(dir)).filter((n) => mine.has(n)).sort() : [];
  const fixes = await Promise.all(names.map(async (n) => `${n}=${await hashFile(path.join(dir!, n))}`));
  const h = createHash('sha256').update((await exists(decisions)) ? await hashFile(decisions) : 'none');
  return h.update(JSON.stringify(fixes)).digest('hex').slice(0, 16);
}

/**
 * The recipe of `p` in label mode `labels` over the protocol's `ids`, and its 16-hex key. With
 * cam 'fold' the CAM models' training hash stands for models/cam's weights.
 */
export async function cvRecipe(root: string, p: Params, labels: 'pseudo' | 'gt', folds: number, foldSeed: number, ids: readonly string[], oof = false, cam: CvCam = 'fold'): Promise<{ recipe: CvRecipe; hash: string }> {
  const at = (rel: string) => path.resolve(root, rel);
  const data: Record<string, string> = { [INPUTS.images]: await hashInput(at(INPUTS.images)) };
  if (cam === 'fold') data.cam_train = await camTrainingHash({ params: p, path: at });
  else data[INPUTS.cam] = await hashInput(path.join(at(INPUTS.cam), 'weights', 'weights.bin'), false);
  if (labels === 'pseudo') {
    data[INPUTS.pseudo] = await hashInput(at(INPUTS.pseudo));
    data.review = await reviewKey(root, p, ids);
  }
  const recipe: CvRecipe = {
    protocol: CV_PROTOCOL_VERSION, labels, seed: p.seed, train_split: p.dataset.train_split, folds, fold_seed: foldSeed,
    segment: segmentKeyed({ ...p.segment, labels }), data, ...(oof ? { oof: true as const } : {}), ...(cam === 'fold' ? { cam } : {}),
  };
  return { recipe, hash: createHash('sha256').update(JSON.stringify(recipe)).digest('hex').slice(0, 16) };
}

/**
 * The protocol's ids of the train split (images.arrow order): the masked ones, or with `all` (oof)
 * every one; and the count without a mask (left out, or with `all` trained on but not scored).
 */
export async function protocolIds(root: string, split: string, all: boolean): Promise<{ ids: string[]; unmasked: number }> {
  const file = path.resolve(root, INPUTS.dataset);
  if (!(await exists(file))) throw new TagsegError('not found', { file, hint: 'the protocol needs the pipeline run up to refine: tagseg repro refine' });
  const rows = (await readAll(file, { stage: 'ingest' })).filter((r) => r.split === split);
  const ids = rows.filter((r) => all || r.mask_path).map((r) => r.id as string);
  if (ids.length === 0) throw new TagsegError(`no image of split '${split}' ${all ? 'exists' : 'has a ground-truth mask; the protocol scores held-out folds against masks'}`, { file, hint: 'check dataset.train_split' });
  return { ids, unmasked: rows.filter((r) => !r.mask_path).length };
}

/** Run (or resume) the protocol; returns the summary, also written to `<out>/<recipe>/summary.json`. */
export async function runCv(o: CvOptions): Promise<CvSummary> {
  const root = path.resolve(o.root);
  const foldSeed = o.foldSeed ?? 0;
  if (!Number.isInteger(o.seeds) || o.seeds < 1) throw new TagsegError(`--seeds must be a positive integer, got ${o.seeds}`);
  const p = await cvParams(root, o);
  if (o.oof && p.segment.labels !== 'pseudo') throw new TagsegError('--oof scores the pseudo-masks under models trained on them; it needs segment.labels: pseudo', { hint: 'drop --oracle (or --oof)' });
  const oof = Boolean(o.oof);
  const { ids, unmasked } = await protocolIds(root, p.dataset.train_split, oof);
  const folds = assignFolds(ids, o.folds, foldSeed);
  const cam = o.cam ?? 'fold';
  const { recipe, hash } = await cvRecipe(root, p, p.segment.labels, o.folds, foldSeed, ids, oof, cam);
  const out = path.resolve(root, o.out ?? 'runs/cv');
  const dir = path.join(out, hash);
  await ensureDir(dir);
  await writeFileAtomic(path.join(dir, 'protocol.json'), `${JSON.stringify({ recipe, folds }, null, 1)}\n`);
  const seeds = Array.from({ length: o.seeds }, (_, i) => p.seed + i);
  // the same training with out-of-fold scoring, when its folds are these: its finished runs count
  const oofTwin = !oof && unmasked === 0 && p.segment.labels === 'pseudo' ? await cvRecipe(root, p, 'pseudo', o.folds, foldSeed, ids, true, cam) : null;
  const runs: CvRun[] = [];
  for (let k = 0; k < folds.length; k++) {
    for (const seed of seeds) {
      const file = path.join(dir, `fold${k}-seed${seed}.json`);
      const own = await readRun(file, hash, oof);
      const adopted = !own && oofTwin ? await adoptOofRun(file, hash, oofTwin, k, seed) : null;
      const kept = own ?? adopted;
      if (!kept && (await exists(file))) log.warn(`cv: ${file} is not a finished run of recipe ${hash}; running it again`);
      const r = kept ?? (await runOne({ root, out, dir, hash, p, folds, cam }, k, seed, oof));
      if (!own) {
        await writeFileAtomic(file, `${JSON.stringify(r, null, 1)}\n`);
        await fs.rm(cvWorkDir(dir, k, seed), { recursive: true, force: true });
      }
      runs.push(r);
      o.onRun?.(r, !kept);
    }
  }
  const { twin, twinRuns } = await findTwin(root, p, out, { folds: o.folds, foldSeed, ids, seeds, oof, unmasked, cam });
  const labelQuality = oof ? await writeOofTable(root, dir, runs, hash) : null;
  const summary = { ...summariseCv({
    recipe, hash, dir: path.relative(root, dir) || '.', seeds, folds, unmasked, runs,
    twin: twin && twinRuns ? { hash: twin.hash, dir: path.relative(root, path.join(out, twin.hash)), runs: twinRuns } : null,
  }), ...(labelQuality ? { label_quality: labelQuality } : {}) };
  await writeFileAtomic(path.join(dir, 'summary.json'), `${JSON.stringify(summary, null, 1)}\n`);
  return summary;
}

/**
 * The finished runs of the other label mode on the same folds and seeds (weak <-> oracle), for the
 * weak / oracle ratio. An `--oof` pseudo run has the same folds as the masked-only protocol when
 * every train-split image has a mask (MSRC-v2), so then it pairs with the oracle both ways.
 */
async function findTwin(root: string, p: Params, out: string, o: { folds: number; foldSeed: number; ids: readonly string[]; seeds: number[]; oof: boolean; unmasked: number; cam: CvCam }) {
  const other = p.segment.labels === 'gt' ? 'pseudo' : 'gt';
  const sameFolds = o.unmasked === 0;
  // the twin's oof flag: an oracle may pair with either pseudo form when the folds match; an oof run only then
  const twinOof = other === 'pseudo' && sameFolds ? [false, true] : [false];
  for (const oof of o.oof && !sameFolds ? [] : twinOof) {
    const twin = await cvRecipe(root, p, other, o.folds, o.foldSeed, o.ids, oof, o.cam).catch(() => null);
    const twinRuns = twin ? await readRuns(path.join(out, twin.hash), twin.hash, o.folds, o.seeds) : null;
    if (twin && twinRuns) return { twin, twinRuns };
  }
  return { twin: null, twinRuns: null };
}

/** The folder of an unfinished (fold, seed): its segment model and epoch checkpoints. */
export const cvWorkDir = (dir: string, k: number, seed: number) => path.join(dir, `fold${k}-seed${seed}.work`);

/**
 * runSegment's `path` for a protocol run: the workspace's files, but models/segment and the
 * segment checkpoint store inside `work`, so a protocol run and the stage's own unfinished
 * training never evict each other's state (the store keeps one unfinished run); with `cam`, the
 * CAM model it starts from is that folder instead of models/cam.
 */
export function cvRunPaths(root: string, work: string, cam: string | null = null): (rel: string) => string {
  const moved: [string, string][] = [[SEGMENT_OUTPUTS.model, path.join(work, 'model')], [storeOf('segment'), path.join(work, 'checkpoints')]];
  if (cam) moved.push([INPUTS.cam, cam]);
  return movedPaths(root, moved);
}

/** Project-relative paths resolved in `root`, but those under a `from` of `moved` in its `to`. */
function movedPaths(root: string, moved: readonly [string, string][]): (rel: string) => string {
  return (rel) => {
    for (const [from, to] of moved) if (rel === from || rel.startsWith(`${from}/`)) return path.join(to, rel.slice(from.length));
    return path.resolve(root, rel);
  };
}

/**
 * The CAM model of fold k's runs (CvCam 'fold'): cam_train on the train split without the held-out
 * fold, in `<out>/cam/<key>/model`, beside its checkpoint store (a killed training resumes). Shared
 * by every seed, label mode and segment recipe of the same CAM training; trained once, then
 * recognised by the training hash its config records (the key is made from that hash). Two
 * protocols started at once on one `out` would train the same fold's model in one store: run them
 * one after the other.
 */
export async function foldCam(root: string, out: string, p: Params, heldOut: readonly string[]): Promise<string> {
  const hash = await camTrainingHash({ params: p, path: (rel) => path.resolve(root, rel), exclude: heldOut });
  const dir = path.join(out, 'cam', createHash('sha256').update(hash).digest('hex').slice(0, 16));
  const model = path.join(dir, 'model');
  if (await trainedWith(model, hash)) return model;
  log.info(`cv: training the CAM model without the ${heldOut.length} held-out images (${path.relative(root, dir)})`);
  const r = await runCamTrain({ params: p, exclude: heldOut, path: movedPaths(root, [[INPUTS.cam, model], [storeOf('cam_train'), path.join(dir, 'checkpoints')]]) });
  log.info(formatCamTrain(r));
  return model;
}

/** Whether the model folder holds a finished training of `hash` (nn/stage_training.ts records it). */
async function trainedWith(model: string, hash: string): Promise<boolean> {
  try {
    return (JSON.parse(await fs.readFile(path.join(model, 'config.json'), 'utf8')) as { paramsHash?: string }).paramsHash === hash;
  } catch {
    return false;
  }
}

/** The training and held-out ids of fold k. */
export const foldSplit = (folds: string[][], k: number) => ({ train: folds.filter((_, f) => f !== k).flat(), val: folds[k] });

/** What every run of one protocol shares. */
interface ProtocolRun {
  root: string;
  out: string;
  dir: string;
  hash: string;
  p: Params;
  folds: string[][];
  cam: CvCam;
}

/** Train and score one (fold, seed); its work folder goes once the record is written. */
async function runOne(o: ProtocolRun, k: number, seed: number, oof: boolean): Promise<CvRun> {
  const { root, dir, p, folds } = o;
  const work = cvWorkDir(dir, k, seed);
  const split = foldSplit(folds, k);
  const cam = o.cam === 'fold' ? await foldCam(root, o.out, p, split.val) : null;
  log.info(`cv: fold ${k} seed ${seed}: training on ${split.train.length} images, scoring ${split.val.length} held out (${path.relative(root, work)})`);
  const at = cvRunPaths(root, work, cam);
  const r = await runSegment({ params: { ...p, seed }, path: at, split });
  const scores = oof ? await oofScores({ images: at(INPUTS.images), pseudo: at(INPUTS.pseudo), model: at(SEGMENT_OUTPUTS.model) }, split.val) : null;
  return {
    protocol: CV_PROTOCOL_VERSION, recipe: o.hash, fold: k, seed,
    split: `${p.dataset.train_split}, fold ${k} of ${folds.length} held out`,
    labels: r.labels, epochs: r.epochs, trainImages: r.trainImages, heldOutImages: r.val.images,
    segmenter: r.val, pseudo_masks: r.pseudo_val ?? null, resumedFrom: r.training.resumedFrom, seconds: Math.round(r.seconds * 10) / 10,
    ...(r.review?.corrected ? { corrected: r.review.corrected } : {}),
    ...(scores ? { oof: scores } : {}),
  };
}

/** A finished run's record, or null when absent or not of this recipe (then it is redone). */
async function readRun(file: string, hash: string, oof = false): Promise<CvRun | null> {
  if (!(await exists(file))) return null;
  try {
    const r = JSON.parse(await fs.readFile(file, 'utf8')) as CvRun;
    // miou null: a fold of images without masks (oof), finished but not scored
    const scored = typeof r.segmenter?.miou === 'number' || (oof && r.segmenter?.miou === null);
    if (r.recipe === hash && r.protocol === CV_PROTOCOL_VERSION && scored && (!oof || Array.isArray(r.oof))) return r;
  } catch {
    // a hand-edited or foreign file: not a finished run
  }
  return null;
}

/**
 * A finished (fold, seed) of the `--oof` form of this recipe, as this recipe's run: when every
 * train-split image has a mask its folds are these and it trained the same model; it only scored
 * more (the out-of-fold label quality, dropped here). Kept under this recipe once adopted.
 */
async function adoptOofRun(file: string, hash: string, twin: { hash: string }, k: number, seed: number): Promise<CvRun | null> {
  const from = path.join(path.dirname(path.dirname(file)), twin.hash, path.basename(file));
  const r = await readRun(from, twin.hash, true);
  if (!r || r.fold !== k || r.seed !== seed) return null;
  const { oof: _scores, ...run } = r;
  log.info(`cv: fold ${k} seed ${seed}: the same training was run with --oof (${twin.hash}); its record is kept for this recipe`);
  return { ...run, recipe: hash, adopted_from: twin.hash };
}

/** Every (fold, seed) of a recipe folder, or null if any is missing (a twin protocol not run to the end). */
async function readRuns(dir: string, hash: string, folds: number, seeds: number[]): Promise<CvRun[] | null> {
  const runs: CvRun[] = [];
  for (let k = 0; k < folds; k++) {
    for (const seed of seeds) {
      const r = await readRun(path.join(dir, `fold${k}-seed${seed}.json`), hash);
      if (!r) return null;
      runs.push(r);
    }
  }
  return runs;
}
