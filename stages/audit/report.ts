/**
 * reports/audit/: a self-contained static report (no server: open index.html from the file
 * system, or serve the folder from any static host).
 *
 *   index.html        page + inlined CSS and JS (templates in stages/audit/report/)
 *   data.js           `window.AUDIT = {...}`: a script, not JSON, because fetch() of a local
 *                     file fails under file://
 *   img/<stage>/<file>.jpg   thumbnails, one per view stage (cam, random_walk, rca, final, gt)
 *   img/full/<file>.jpg      the final pseudo-mask over the original image at its original size
 *   img/photo/<file>.jpg     the image at the working size (detail view)
 *   img/heat/<file>_<c>.jpg  the CAM of tagged class c as a heatmap over the image (detail view)
 *   images.csv, audit.csv, classes.csv
 *
 * The page renders one page of rows at a time (pagination) from compact row arrays, so it stays
 * fast with tens of thousands of images (a row costs ~150 bytes of data.js, plus ~60 per class
 * row). A click on a row opens the image's detail view (every stage side by side, its class
 * rows, keyboard review); decisions are kept in the browser and downloaded as decisions.csv.
 */
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ColumnSpec } from '../../pipeline/arrow.js';
import { classPalette, paletteColour, paletteHex } from '../../data/palette.js';
import { BufferedTextFile, writeFileAtomic } from '../../pipeline/fsutil.js';
import { removeTree } from '../../pipeline/remove_tree.js';
import type { ClassRow, ImageRow } from './image.js';
import type { AuditSummary } from './summary.js';

const TEMPLATE_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'report');
export const IMAGE_DIR = 'img';

/** Stages the report can show, in pipeline order, with their labels. */
export const REPORT_STAGES = [
  { key: 'cam', label: 'CAM' },
  { key: 'random_walk', label: 'random walk' },
  { key: 'rca', label: 'RCA' },
  { key: 'final', label: 'pseudo-mask' },
  { key: 'gt', label: 'ground truth' },
] as const;
export type ReportStage = (typeof REPORT_STAGES)[number]['key'];

export interface ReportImage {
  row: ImageRow;
  /** The image's class rows (cache/audit.arrow) for the detail view. */
  classRows: ClassRow[];
  /** Classes with a CAM heatmap (img/heat/<file>_<class>.jpg), in the order of cams.arrow's tags. */
  heat: number[];
  /** Dataset class indices of the tags and of the classes present in the final mask. */
  tags: number[];
  classes: number[];
  file: string;
  hasGt: boolean;
}

export interface ReportData {
  title: string;
  classes: readonly string[];
  background: number | null;
  /** Every image's entry, in the order the stage added them, with each one's rank. */
  images: ReportEntries;
  ranks: readonly number[];
  summary: AuditSummary;
  overview: {
    meanSuspicion: number | null;
    meanIgnore: number | null;
    gt: null | { images: number; stages: NonNullable<AuditSummary['gt']>['stages']; spearman: number | null; labelQuality: null | { images: number; spearman: number | null; confidence_spearman: number | null } };
    /** Images with an out-of-fold label quality; with a corrected mask; which ranking is used and why. */
    labelQualityImages: number;
    corrected: number;
    ranking: string;
  };
  imageColumns: ColumnSpec[];
  classColumns: ColumnSpec[];
}

const IMAGE_FIELDS = ['id', 'split', 'rank', 'suspicion', 'ignore', 'confidence', 'agreement', 'gt_miou', 'gt_coverage', 'tags', 'classes', 'reasons', 'flags', 'file', 'gt', 'crows', 'heat', 'label_quality', 'label_confidence', 'corrected'] as const;
/** Columns of an image's compact class rows (`crows`): cache/audit.arrow's, shortened. */
const CLASS_ROW_FIELDS = ['class', 'tagged', 'area', 'confidence', 'ignore', 'components', 'largest', 'iou_cam_rw', 'iou_rw_rca', 'iou_rca_final', 'iou_cam_final', 'boundary', 'empty', 'suspicion', 'reasons', 'gt_iou'] as const;
const classRowArray = (r: ClassRow) => [
  r.class, r.tagged, r4(r.area), r4(r.confidence), r4(r.ignore_fraction), r.components, r4(r.largest_share), r4(r.iou_cam_random_walk), r4(r.iou_random_walk_rca),
  r4(r.iou_rca_final), r4(r.iou_cam_final), r4(r.boundary_alignment), r.empty_tag, r4(r.suspicion), r.reasons, r4(r.gt_iou),
];

const luminance = (c: [number, number, number]) => 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
const r4 = (v: number | null) => (v === null ? null : Math.round(v * 1e4) / 1e4);
/** JSON inside a script: '<' escaped so no id or class name can close the script element. */
const scriptJson = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');

/**
 * data.js's image entries (IMAGE_FIELDS order) as JSON text, one line each in a temp file as each
 * image comes in (the ImageRow and class-row objects can go, and memory does not grow with the
 * dataset). An entry is kept in two pieces around its rank, which is known only once every image
 * is in: `head<TAB>tail` (JSON text never holds a raw tab).
 */
export class ReportEntries {
  readonly splits = new Set<string>();
  anyGt = false;
  private count = 0;

  private constructor(readonly file: string, private out: BufferedTextFile | null) {}

  static async create(file: string): Promise<ReportEntries> {
    return new ReportEntries(file, await BufferedTextFile.open(file));
  }

  async add(i: ReportImage): Promise<void> {
    const r = i.row;
    const head = scriptJson([r.id, r.split]).slice(0, -1);
    const tail = scriptJson([
      r4(r.suspicion), r4(r.ignore_fraction), r4(r.mean_confidence), r4(r.agree_rca_final), r4(r.gt_miou), r4(r.gt_coverage), i.tags, i.classes,
      r.reasons, r.refine_flags, i.file, i.hasGt, i.classRows.map(classRowArray), i.heat, r4(r.label_quality), r4(r.label_confidence), r.corrected,
    ]).slice(1);
    await this.out!.write(`${head}\t${tail}\n`);
    this.count++;
    this.splits.add(r.split);
    this.anyGt ||= i.hasGt;
  }

  get length(): number {
    return this.count;
  }

  /** The entries' JSON in the order added, the k-th with ranks[k]. */
  async *json(ranks: readonly number[]): AsyncGenerator<string> {
    if (this.out) {
      await this.out.close();
      this.out = null;
    }
    let k = 0;
    for await (const line of readline.createInterface({ input: createReadStream(this.file, 'utf8'), crlfDelay: Infinity })) {
      const tab = line.indexOf('\t');
      yield `${line.slice(0, tab)},${ranks[k++]},${line.slice(tab + 1)}`;
    }
    if (k !== this.count) throw new Error(`report entries: ${this.file} holds ${k} of ${this.count} entries`);
  }

  async remove(): Promise<void> {
    await this.out?.abort();
    this.out = null;
    await removeTree(this.file);
  }
}

/** The object data.js assigns to window.AUDIT, but for its `images` (written entry by entry). */
export function reportPayload(d: Omit<ReportData, 'images' | 'ranks'> & { images: Pick<ReportEntries, 'splits' | 'anyGt'> }): Record<string, unknown> {
  const palette = classPalette(d.background);
  return {
    title: d.title,
    imageDir: IMAGE_DIR,
    stages: REPORT_STAGES.filter((s) => s.key !== 'gt' || d.images.anyGt),
    // ink: black or white text, whichever reads on the class colour (VOC has dark navy, black).
    classes: d.classes.map((name, c) => ({ name, colour: paletteHex(palette, c), ink: luminance(paletteColour(palette, c)) < 110 ? '#fff' : '#000' })),
    background: d.background,
    splits: [...d.images.splits].sort(),
    imageFields: IMAGE_FIELDS,
    classRowFields: CLASS_ROW_FIELDS,
    summary: d.summary,
    overview: d.overview,
    imageColumns: d.imageColumns.map((c) => ({ name: c.name, doc: c.doc ?? '' })),
    classColumns: d.classColumns.map((c) => ({ name: c.name, doc: c.doc ?? '' })),
  };
}

/** Writes index.html and data.js into `dir` (a staging folder; images and CSVs are written by the stage). */
export async function writeReport(dir: string, d: ReportData): Promise<void> {
  const [html, css, js] = await Promise.all(['index.html', 'style.css', 'app.js'].map((f) => fs.readFile(path.join(TEMPLATE_DIR, f), 'utf8')));
  // Function replacers: the JS contains `$` patterns that a replacement string would expand.
  const page = html
    .replace('__TITLE__', () => escapeHtml(d.title))
    .replace('__STYLE__', () => css)
    .replace('__APP__', () => js.replace(/<\/script/gi, '<\\/script'));
  await writeFileAtomic(path.join(dir, 'index.html'), page);
  const out = await BufferedTextFile.open(path.join(dir, 'data.js'));
  try {
    // {"images":[...], then the payload's other keys: the entries stream, the rest is small
    await out.write('window.AUDIT = {"images":[');
    let first = true;
    for await (const e of d.images.json(d.ranks)) {
      await out.write(first ? e : `,${e}`);
      first = false;
    }
    await out.write(`],${scriptJson(reportPayload(d)).slice(1)};\n`);
    await out.close();
  } catch (err) {
    await out.abort();
    throw err;
  }
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);
}
