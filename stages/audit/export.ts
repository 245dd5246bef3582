/**
 * `tagseg export`: hand a selection of images to the people and tools that fix masks.
 *
 *   relabel   CSV: id, image_path, pseudo_mask_path, suspicion, reasons, decision (one row per image)
 *   fiftyone  a FiftyOne ImageSegmentationDirectory: data/<id>.<ext> (the original images) and
 *             labels/<id>.png (8-bit greyscale, pixel = class index, 255 = ignore; FiftyOne reads
 *             masks with OpenCV, which would expand a palette PNG to colours), plus
 *             mask_targets.json ({index: class name}) for `dataset.default_mask_targets`
 *   cvat      a CVAT "Segmentation mask 1.1" zip (VOC layout): labelmap.txt
 *             (`# label:color_rgb:parts:actions`), ImageSets/Segmentation/default.txt,
 *             SegmentationClass/<id>.png (RGB, each class in its labelmap colour), JPEGImages/
 *             (the original images, so the archive can seed a task)
 *
 * Selection (selectItems): by decision, split, minimum suspicion, then the top k by rank; with a
 * class, images are ranked by that class's suspicion instead. Inputs: cache/audit_images.arrow
 * (ranking), cache/audit.arrow (per-class suspicion), cache/dataset.arrow (image paths, classes),
 * outputs/pseudo_masks/<id>.png (refine) and review/decisions.csv.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { encode as encodePng } from 'fast-png';
import { strToU8, zipSync } from 'fflate';
import { VOID_INDEX, classPalette, decodeIndexedPng, paletteColour } from '../../data/palette.js';
import { type Decision, DECISIONS_FILE, csvField, isDecision, readDecisions, reviewByImage } from '../../data/review.js';
import { readAll, readInfo } from '../../pipeline/arrow.js';
import { artifact } from '../../pipeline/artifacts.js';
import { TagsegError } from '../../pipeline/errors.js';
import { ensureDir, exists, replaceDirAtomic, tempPathFor, writeFileAtomic } from '../../pipeline/fsutil.js';
import { pngName } from '../../data/mask_png.js';
import { AUDIT_OUTPUTS } from './columns.js';
import { removeTree } from '../../pipeline/remove_tree.js';

export const PSEUDO_MASK_DIR = artifact('pseudoMaskPngs');
const DATASET = artifact('dataset');

export interface ReviewItem {
  id: string;
  split: string;
  rank: number;
  suspicion: number;
  /** Per-class suspicion by class name (cache/audit.arrow), where the audit wrote one. */
  classSuspicion: Map<string, number>;
  reasons: string[];
  imagePath: string;
  pseudoMaskPath: string;
  /** Whole-image decision, then per-class ones as `decision:class`, '|'-joined; '' = none. */
  decision: string;
  imageDecision: Decision | null;
  classDecisions: Map<string, Decision>;
}

export interface ReviewProject {
  classes: string[];
  background: number | null;
  items: ReviewItem[];
}

/** Every audited image with its ranking, paths and decisions, in rank order. */
export async function loadReviewProject(root: string): Promise<ReviewProject> {
  const at = (rel: string) => path.join(root, rel);
  for (const f of [AUDIT_OUTPUTS.images, DATASET]) {
    if (!(await exists(at(f)))) throw new TagsegError('table not found', { file: at(f), hint: 'run the pipeline up to the audit first (`tagseg repro audit`)' });
  }
  const info = await readInfo(at(DATASET));
  const bg = info.meta.extra?.background;
  const dataset = new Map((await readAll(at(DATASET), { stage: 'ingest' })).map((r) => [r.id as string, r.image_path as string]));
  const perClass = new Map<string, Map<string, number>>();
  if (await exists(at(AUDIT_OUTPUTS.classes))) {
    const cols = (await readInfo(at(AUDIT_OUTPUTS.classes))).columns.map((c) => c.name);
    if (cols.includes('suspicion')) {
      for (const r of await readAll(at(AUDIT_OUTPUTS.classes), { stage: 'audit' })) {
        if (r.suspicion === null) continue;
        const m = perClass.get(r.id as string) ?? new Map<string, number>();
        m.set(r.class_name as string, r.suspicion as number);
        perClass.set(r.id as string, m);
      }
    }
  }
  const review = reviewByImage(await readDecisions(at(DECISIONS_FILE)));
  const items = (await readAll(at(AUDIT_OUTPUTS.images), { stage: 'audit' })).map((r): ReviewItem => {
    const id = r.id as string;
    const imagePath = dataset.get(id);
    if (!imagePath) throw new TagsegError(`image '${id}' is not in ${DATASET}`, { file: at(AUDIT_OUTPUTS.images), hint: 'the audit is older than the dataset; rerun `tagseg repro audit`' });
    const rv = review.get(id);
    const classDecisions = rv?.classes ?? new Map<string, Decision>();
    const decision = [...(rv?.decision ? [rv.decision] : []), ...[...classDecisions].map(([c, d]) => `${d}:${c}`)].join('|');
    return {
      id, split: r.split as string, rank: r.rank as number, suspicion: r.suspicion as number, reasons: (r.reasons as string[]) ?? [],
      classSuspicion: perClass.get(id) ?? new Map(), imagePath, pseudoMaskPath: path.resolve(root, PSEUDO_MASK_DIR, pngName(id)),
      decision, imageDecision: rv?.decision ?? null, classDecisions,
    };
  });
  items.sort((a, b) => a.rank - b.rank);
  return { classes: info.meta.classes, background: typeof bg === 'number' ? bg : null, items };
}

export interface Selection {
  /** Keep images with one of these decisions (whole image, or any class of it). */
  decisions?: string[];
  split?: string;
  minSuspicion?: number;
  /** Rank by this class's suspicion (images without a row for it are dropped). */
  class?: string;
  /** Keep the first k after ranking. */
  top?: number;
}

/** The images of `s`, most suspicious first. */
export function selectItems(p: ReviewProject, s: Selection): ReviewItem[] {
  for (const d of s.decisions ?? []) if (!isDecision(d)) throw new TagsegError(`--decision '${d}' is not one of accept, reject, relabel`);
  if (s.class !== undefined && !p.classes.includes(s.class)) throw new TagsegError(`--class '${s.class}' is not a class of the dataset (${p.classes.join(', ')})`);
  const score = (it: ReviewItem) => (s.class === undefined ? it.suspicion : (it.classSuspicion.get(s.class) ?? -1));
  let out = p.items.filter((it) => {
    if (s.decisions?.length && !s.decisions.some((d) => it.imageDecision === d || [...it.classDecisions.values()].includes(d as Decision))) return false;
    if (s.split !== undefined && it.split !== s.split) return false;
    if (s.class !== undefined && !it.classSuspicion.has(s.class)) return false;
    return score(it) >= (s.minSuspicion ?? 0);
  });
  if (s.class !== undefined) out = [...out].sort((a, b) => score(b) - score(a) || a.rank - b.rank);
  return s.top !== undefined ? out.slice(0, s.top) : out;
}

export const RELABEL_COLUMNS = ['id', 'image_path', 'pseudo_mask_path', 'suspicion', 'reasons', 'decision'] as const;

/** The relabel list: RFC 4180 CSV, reasons '|'-joined, suspicion to 4 decimals. */
export function relabelCsv(items: readonly ReviewItem[]): string {
  const rows = items.map((it) => [it.id, it.imagePath, it.pseudoMaskPath, it.suspicion.toFixed(4), it.reasons.join('|'), it.decision]);
  return [RELABEL_COLUMNS, ...rows].map((r) => r.map(csvField).join(',')).join('\n') + '\n';
}

async function readPseudoMask(it: ReviewItem) {
  if (!(await exists(it.pseudoMaskPath))) throw new TagsegError('pseudo-mask not found', { file: it.pseudoMaskPath, hint: 'rerun `tagseg repro refine`' });
  return decodeIndexedPng(await fs.readFile(it.pseudoMaskPath), it.pseudoMaskPath);
}

const imageName = (it: ReviewItem) => `${pngName(it.id).slice(0, -4)}${path.extname(it.imagePath).toLowerCase()}`;

/** FiftyOne ImageSegmentationDirectory at `out` (replaced whole). Returns the number of samples. */
export async function exportFiftyOne(p: ReviewProject, items: readonly ReviewItem[], out: string): Promise<number> {
  const staged = tempPathFor(out);
  await ensureDir(path.join(staged, 'data'));
  await ensureDir(path.join(staged, 'labels'));
  try {
    for (const it of items) {
      const m = await readPseudoMask(it);
      await fs.copyFile(it.imagePath, path.join(staged, 'data', imageName(it)));
      await fs.writeFile(path.join(staged, 'labels', pngName(it.id)), encodePng({ width: m.width, height: m.height, data: m.data, depth: 8, channels: 1 }));
    }
    const targets = Object.fromEntries(p.classes.map((c, i) => [String(i), c]));
    await fs.writeFile(path.join(staged, 'mask_targets.json'), `${JSON.stringify({ ...targets, [String(VOID_INDEX)]: 'ignore' }, null, 1)}\n`);
    await replaceDirAtomic(staged, out);
  } catch (err) {
    await removeTree(staged);
    throw err;
  }
  return items.length;
}

/**
 * CVAT's labelmap: the dataset's classes in their tagseg palette colours. CVAT (Datumaro's VOC
 * reader) takes (0, 0, 0) as background / not annotated; ignore pixels are written in that
 * colour, so a dataset without a black class gets a `background:0,0,0::` line first.
 */
export function cvatLabelmap(classes: readonly string[], background: number | null): { text: string; colours: [number, number, number][]; voidColour: [number, number, number] } {
  const pal = classPalette(background);
  const colours = classes.map((_, c) => paletteColour(pal, c));
  for (const c of classes) {
    if (/[:\r\n]/.test(c)) throw new TagsegError(`class name '${c}' contains ':' or a line break, which labelmap.txt cannot hold`);
  }
  const lines = ['# label:color_rgb:parts:actions'];
  if (!colours.some((c) => c[0] === 0 && c[1] === 0 && c[2] === 0)) lines.push(`${classes.includes('background') ? 'void' : 'background'}:0,0,0::`);
  classes.forEach((name, i) => lines.push(`${name}:${colours[i].join(',')}::`));
  return { text: `${lines.join('\n')}\n`, colours, voidColour: [0, 0, 0] };
}

/** The files of a CVAT "Segmentation mask 1.1" archive for `items` (name -> bytes). */
export async function cvatFiles(p: ReviewProject, items: readonly ReviewItem[]): Promise<Record<string, Uint8Array>> {
  const lm = cvatLabelmap(p.classes, p.background);
  const files: Record<string, Uint8Array> = {
    'labelmap.txt': strToU8(lm.text),
    'ImageSets/Segmentation/default.txt': strToU8(items.map((it) => `${it.id}\n`).join('')),
  };
  for (const it of items) {
    const m = await readPseudoMask(it);
    const rgb = new Uint8Array(m.width * m.height * 3);
    for (let i = 0; i < m.data.length; i++) rgb.set(m.data[i] === VOID_INDEX ? lm.voidColour : lm.colours[m.data[i]], 3 * i);
    files[`SegmentationClass/${pngName(it.id)}`] = encodePng({ width: m.width, height: m.height, data: rgb, depth: 8, channels: 3 });
    files[`JPEGImages/${imageName(it)}`] = new Uint8Array(await fs.readFile(it.imagePath));
  }
  return files;
}

/** Fixed timestamp in the archive: the same selection gives the same bytes. */
const ZIP_MTIME = new Date('2000-01-01T00:00:00Z');

/** The CVAT archive as a zip at `out` (PNGs and images stored, text deflated). */
export async function exportCvat(p: ReviewProject, items: readonly ReviewItem[], out: string): Promise<number> {
  const files = await cvatFiles(p, items);
  const entries = Object.fromEntries(Object.entries(files).map(([k, v]) => [k, [v, { level: k.endsWith('.txt') ? 6 : 0, mtime: ZIP_MTIME }] as const]));
  await ensureDir(path.dirname(out));
  await writeFileAtomic(out, zipSync(entries as Parameters<typeof zipSync>[0]));
  return items.length;
}

export async function exportRelabel(items: readonly ReviewItem[], out: string): Promise<number> {
  await ensureDir(path.dirname(out));
  await writeFileAtomic(out, relabelCsv(items));
  return items.length;
}
